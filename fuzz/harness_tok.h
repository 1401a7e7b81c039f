/* harness_tok: invariants of a built tokenizer, shared by the harnesses
 * that build one from hostile input (tokenizer.json, blob, GGUF vocabulary,
 * container). Each violation aborts. */
#ifndef MP_HARNESS_TOK_H
#define MP_HARNESS_TOK_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenizer.h"

/* Independent UTF-8 check (shortest forms, no surrogates, <= U+10FFFF). */
bool mp_fuzz_utf8_valid(const char *s, size_t n);

/* Encodes text with `flags`; on success checks every id, that decoding
 * succeeds, that the streaming detokenizer gives valid UTF-8 equal to the
 * decoded bytes whenever those are valid UTF-8, and (when `roundtrip`) that
 * decoding gives the text back. Returns the encode status; *ids (may be
 * NULL) receives the ids, freed by the caller with mp_tokens_free. */
int mp_fuzz_encode_checked(const mp_tokenizer *tok, const char *text, size_t len, unsigned flags, bool roundtrip,
                           mp_tokens *ids);

/* Encodes a fixed multilingual sample with several flag sets, and checks
 * that serialize -> deserialize gives a tokenizer that serializes to the
 * same bytes and encodes the sample to the same ids. */
void mp_fuzz_check_tokenizer(const mp_tokenizer *tok);

/* The outcome of building a tokenizer from hostile input: a refusal
 * (rc != MP_OK) must keep the error contract and hand out no tokenizer
 * (mp_fuzz_check_refused); a tokenizer that was built must pass
 * mp_fuzz_check_tokenizer, and is then freed. */
void mp_fuzz_check_tokenizer_load(int rc, const mp_error *err, mp_tokenizer *tok);

#endif
