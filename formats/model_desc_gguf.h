/* model_desc_gguf: the model description (model_desc.h) of a DeepSeek GGUF
 * file, read from its `deepseek2.*` metadata keys, its tokenizer ids and its
 * tensor list. */
#ifndef MP_MODEL_DESC_GGUF_H
#define MP_MODEL_DESC_GGUF_H

#include "gguf.h"
#include "model_desc.h"

/* Fills *d from an open GGUF (architecture "deepseek2"). `path` names the
 * file in errors (NULL: the GGUF's own path). Values the GGUF does not record
 * are inferred or take the reference defaults and are flagged in
 * d->defaulted (MP_DEFAULTED_*). Checks only what the mapping itself needs
 * (required keys present, derived head dims positive); the caller runs
 * mp_model_desc_validate for the full consistency check. */
int mp_model_desc_from_gguf(const mp_gguf *g, const char *path, mp_model_desc *d, mp_error *err);

#endif
