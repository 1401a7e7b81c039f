/* Behaviour pinned down by inputs the fuzzers (fuzz/, docs/FUZZING.md) found.
 * The inputs themselves are replayed through the harnesses by the
 * fuzz_replay_* tests (tests/data/regress/NAME/); this file states what each
 * one must give. */
#include <string.h>

#include "container.h"
#include "mp_test.h"
#include "tokenizer.h"

/* tests/data/regress/tok_encode/added-token-across-parts: "</" ends one part
 * and "think>" starts the next, both parts parsing special tokens. An added
 * token is matched inside one part only (tokenizer.h), so the parts encode
 * to plain text where the concatenation gives the </think> token. */
static void added_token_across_parts(const mp_tokenizer *tok)
{
    mp_error err = {0};
    int32_t think_end = mp_tokenizer_find(tok, "</think>", 8);
    REQUIRE(think_end >= 0);
    mp_tok_part parts[2] = {{"a </", 4, true}, {"think>b", 7, true}};
    mp_tokens split = {0}, whole = {0};
    REQUIRE(mp_tokenizer_encode_parts(tok, parts, 2, 0, &split, &err) == MP_OK);
    REQUIRE(mp_tokenizer_encode(tok, "a </think>b", 11, MP_TOK_PARSE_SPECIAL, &whole, &err) == MP_OK);
    bool in_split = false, in_whole = false;
    for (size_t i = 0; i < split.n; i++)
        in_split |= split.ids[i] == think_end;
    for (size_t i = 0; i < whole.n; i++)
        in_whole |= whole.ids[i] == think_end;
    CHECK(in_whole);
    CHECK(!in_split);
    char *text;
    size_t len;
    REQUIRE(mp_tokenizer_decode(tok, split.ids, split.n, 0, &text, &len, &err) == MP_OK);
    CHECK(len == 11 && memcmp(text, "a </think>b", 11) == 0);
    free(text);
    mp_tokens_free(&split);
    mp_tokens_free(&whole);
}

/* tests/data/regress/container/duplicate-names.bin: fuzz/corpus/container/
 * synth_small.bin with directory entry 1 pointing at entry 0's name
 * ("token_embd") and the directory and header checksums recomputed. FORMAT.md
 * says names are unique; the reader accepted it, so a lookup by name found
 * only one of the two tensors. */
static void container_duplicate_names(void)
{
    const char *src = getenv("MOEPACK_SOURCE_DIR");
    REQUIRE(src);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/regress/container/duplicate-names.bin", src);
    mp_container *c = NULL;
    mp_error err = {0};
    CHECK(mp_container_open(path, &c, &err) == MP_ERR_INPUT && c == NULL);
    CHECKF(strstr(err.msg, "token_embd: two directory entries have this name") != NULL, "%s", err.msg);
    /* the seed it was made from opens */
    snprintf(path, sizeof path, "%s/fuzz/corpus/container/synth_small.bin", src);
    CHECKF(mp_container_open(path, &c, &err) == MP_OK, "%s", err.msg);
    mp_container_close(c);
}

int main(void)
{
    container_duplicate_names();
    const char *fix = mp_test_fixtures();
    mp_tokenizer *tok;
    mp_error err = {0};
    REQUIRE(mp_tokenizer_load_hf(mp_test_path(fix, "tiny-v3"), &tok, &err) == MP_OK);
    added_token_across_parts(tok);
    mp_tokenizer_free(tok);
    return mp_test_finish();
}
