/* tok_pretok: regex pre-tokenization, as Hugging Face `tokenizers` runs a Sequence of
 * Split{Regex, behavior: Isolated} steps: each regex refines the pieces of the previous one; in a
 * piece, every match and every non-empty gap between matches becomes a piece of its own. Regexes
 * are compiled with PCRE2 (UTF + UCP, JIT when available) and matched inside one piece at a time,
 * so look-arounds and anchors see only that piece, as in HF. */
#ifndef MP_TOK_PRETOK_H
#define MP_TOK_PRETOK_H

#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"

typedef struct mp_pretok mp_pretok;

typedef struct mp_piece {
    size_t off, len;
} mp_piece;

typedef struct mp_pieces {
    mp_piece *v;
    size_t n, cap;
} mp_pieces;

/* Compiles n regexes (each regexes[i] of lens[i] bytes). `source` names the input in errors. */
int mp_pretok_compile(const char *const *regexes, const size_t *lens, uint32_t n, const char *source, mp_pretok **out,
                      mp_error *err);
/* Compiles a built-in set by its GGUF name ("deepseek-v3", "deepseek-llm", "deepseek-coder",
 * "gpt2"). */
int mp_pretok_compile_builtin(const char *name, const char *source, mp_pretok **out, mp_error *err);
void mp_pretok_free(mp_pretok *pt);

uint32_t mp_pretok_count(const mp_pretok *pt);
const char *mp_pretok_regex(const mp_pretok *pt, uint32_t i, size_t *len);

/* Splits text[0..len) (valid UTF-8: the caller checks) into pieces, replacing out's contents.
 * A NULL pt yields the whole text as one piece. */
int mp_pretok_split(const mp_pretok *pt, const char *text, size_t len, mp_pieces *out, mp_error *err);
void mp_pieces_free(mp_pieces *p);

#endif
