/* convert_tokenizer: the tokenizer of a source checkpoint (tokenizer.json +
 * tokenizer_config.json next to safetensors, or a GGUF's tokenizer.ggml.*
 * keys), serialized for the container, and its chat format. */
#ifndef MP_CONVERT_TOKENIZER_H
#define MP_CONVERT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "gguf.h"
#include "mp_error.h"
#include "source.h"
#include "tokenizer.h"

/* Loads the tokenizer from GGUF metadata (also vocab-only GGUF files). */
int mp_tokenizer_load_gguf(const mp_gguf *g, mp_tokenizer **out, mp_error *err);

/* The source's tokenizer, serialized (malloc'd), the chat format its
 * template implies, and how the template compares with that format's
 * official text. */
int mp_convert_tokenizer_blob(const mp_source *src, uint8_t **blob, size_t *len, mp_chat_format *chat,
                              mp_chat_template_match *match, mp_error *err);

#endif
