/* tokenizer/: encoding matches Hugging Face `tokenizers` on the fixture's reference cases, and the
 * loaders, serialization, special tokens, streaming decoder and error paths behave. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "mp_file.h"
#include "mp_test.h"
#include "test_rand.h"
#include "tokenizer.h"

static const char *fixtures;
static json_t *cases; /* [{"text", "ids"}] from tokenizers itself */

static bool ids_equal(const mp_tokens *got, const json_t *want)
{
    if (got->n != json_array_size(want))
        return false;
    for (size_t i = 0; i < got->n; i++)
        if (got->ids[i] != json_integer_value(json_array_get(want, i)))
            return false;
    return true;
}

static void print_ids(const char *what, const mp_tokens *t)
{
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < t->n; i++)
        fprintf(stderr, " %d", t->ids[i]);
    fprintf(stderr, "\n");
}

/* An independent strict UTF-8 check (shortest form, no surrogates, <= U+10FFFF). */
static bool utf8_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i], need, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07;
        else
            return false;
        for (unsigned k = 1; k <= need; k++) {
            if (i + k >= n || (u[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (u[i + k] & 0x3f);
        }
        static const unsigned min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static mp_tokenizer *load_fixture(void)
{
    mp_error err = {0};
    mp_tokenizer *tok = NULL;
    int rc = mp_tokenizer_load_hf(mp_test_path(fixtures, "tiny-v3/tokenizer.json"), &tok, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    REQUIRE(tok != NULL);
    return tok;
}

/* Every reference case encodes to exactly the ids HF produced (add_special_tokens=False, which
 * still matches added tokens in the text: our PARSE_SPECIAL), and decodes back to its text. */
static void check_cases(const mp_tokenizer *tok, const char *label)
{
    size_t i;
    json_t *c;
    int bad = 0;
    json_array_foreach (cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        mp_tokens ids = {0};
        mp_error err = {0};
        int rc = mp_tokenizer_encode(tok, text, len, MP_TOK_PARSE_SPECIAL, &ids, &err);
        bool same = rc == MP_OK && ids_equal(&ids, json_object_get(c, "ids"));
        CHECKF(same, "%s: case %zu (%.40s...) encodes differently: %s", label, i, text, err.msg);
        if (!same) {
            print_ids("got", &ids);
            bad++;
        }
        char *back = NULL;
        size_t blen = 0;
        CHECK(mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) == MP_OK);
        CHECKF(back && blen == len && memcmp(back, text, len) == 0, "%s: case %zu does not decode back", label, i);
        free(back);
        mp_tokens_free(&ids);
    }
    CHECKF(json_array_size(cases) >= 30, "only %zu cases", json_array_size(cases));
    if (bad)
        fprintf(stderr, "%s: %d cases differ\n", label, bad);
}

static void test_properties(const mp_tokenizer *tok)
{
    CHECK(mp_tokenizer_n_tokens(tok) == 1280);
    CHECK(mp_tokenizer_bos(tok) == 0);
    CHECK(mp_tokenizer_eos(tok) == 1);
    CHECK(mp_tokenizer_add_bos(tok));
    CHECK(!mp_tokenizer_add_eos(tok));
    CHECK(strcmp(mp_tokenizer_pre_name(tok), "deepseek-v3") == 0);
    size_t tl;
    const char *tmpl = mp_tokenizer_chat_template(tok, &tl);
    CHECK(tmpl && tl > 100 && strstr(tmpl, "add_generation_prompt"));
    CHECK(mp_tokenizer_token_type(tok, 0) == MP_TOKEN_CONTROL);
    CHECK(mp_tokenizer_token_type(tok, 1276) == MP_TOKEN_CONTROL);
    CHECK(mp_tokenizer_token_type(tok, 3) == MP_TOKEN_NORMAL);
    CHECK(mp_tokenizer_token_type(tok, 1280) == 0);
    CHECK(mp_tokenizer_token_type(tok, -1) == 0);
    size_t len;
    const char *b = mp_tokenizer_token_bytes(tok, 223, &len); /* "Ġ" is the space byte */
    CHECK(b && len == 1 && b[0] == ' ');
    b = mp_tokenizer_token_bytes(tok, 1276, &len);
    CHECK(b && len == strlen("<\357\275\234User\357\275\234>") &&
          memcmp(b, "<\357\275\234User\357\275\234>", len) == 0);
    CHECK(mp_tokenizer_token_bytes(tok, 99999, &len) == NULL);
    CHECK(mp_tokenizer_find(tok, "<think>", 7) == 1278);
    CHECK(mp_tokenizer_find(tok, " ", 1) == 223);
    CHECK(mp_tokenizer_find(tok, "no such token", 13) == -1);

    mp_tokens ids = {0};
    mp_error err = {0};
    CHECK(mp_tokenizer_encode(tok, "hi", 2, MP_TOK_ADD_BOS, &ids, &err) == MP_OK);
    CHECK(ids.n >= 2 && ids.ids[0] == 0);
    mp_tokens_free(&ids);
}

/* Special tokens: parsed only when asked; plain text otherwise (decoding to the same text). */
static void test_special(const mp_tokenizer *tok)
{
    const char *text = "<\357\275\234User\357\275\234>hi<\357\275\234Assistant\357\275\234>";
    size_t len = strlen(text);
    mp_tokens on = {0}, off = {0};
    mp_error err = {0};
    CHECK(mp_tokenizer_encode(tok, text, len, MP_TOK_PARSE_SPECIAL, &on, &err) == MP_OK);
    CHECK(on.n == 4 && on.ids[0] == 1276 && on.ids[3] == 1277);
    CHECK(mp_tokenizer_encode(tok, text, len, 0, &off, &err) == MP_OK);
    CHECK(off.n > 4);
    bool any_control = false;
    for (size_t i = 0; i < off.n; i++)
        any_control |= mp_tokenizer_token_type(tok, off.ids[i]) == MP_TOKEN_CONTROL;
    CHECK(!any_control);
    char *back;
    size_t blen;
    CHECK(mp_tokenizer_decode(tok, off.ids, off.n, 0, &back, &blen, &err) == MP_OK);
    CHECK(blen == len && memcmp(back, text, len) == 0);
    free(back);
    /* skipping special tokens when decoding */
    CHECK(mp_tokenizer_decode(tok, on.ids, on.n, MP_TOK_DECODE_SKIP_SPECIAL, &back, &blen, &err) == MP_OK);
    CHECK(blen == 2 && memcmp(back, "hi", 2) == 0);
    free(back);
    /* ... except the reasoning tags, CONTROL in the fixture (non-special in DeepSeek's own
     * tokenizers): the reasoning/answer split of run, chat and serve needs them in the text */
    const char *r1 = "<\357\275\234Assistant\357\275\234><think>\nhm</think>ok<\357\275\234end\342\226\201of"
                     "\342\226\201sentence\357\275\234>";
    mp_tokens think = {0};
    CHECK(mp_tokenizer_encode(tok, r1, strlen(r1), MP_TOK_PARSE_SPECIAL, &think, &err) == MP_OK);
    CHECK(mp_tokenizer_find(tok, "<think>", 7) == 1278 && mp_tokenizer_token_type(tok, 1278) == MP_TOKEN_CONTROL);
    CHECK(mp_tokenizer_find(tok, "</think>", 8) == 1279 && mp_tokenizer_token_type(tok, 1279) == MP_TOKEN_CONTROL);
    CHECK(mp_tokenizer_decode(tok, think.ids, think.n, MP_TOK_DECODE_SKIP_SPECIAL, &back, &blen, &err) == MP_OK);
    CHECKF(blen == strlen("<think>\nhm</think>ok") && memcmp(back, "<think>\nhm</think>ok", blen) == 0,
           "decoded with SKIP_SPECIAL: '%s'", back);
    free(back);
    mp_tokens_free(&think);
    mp_tokens_free(&on);
    mp_tokens_free(&off);

    /* parts: special tokens only where allowed; plain text continues across part boundaries */
    mp_tok_part parts[] = {
        {"<\357\275\234User\357\275\234>", strlen("<\357\275\234User\357\275\234>"), true},
        {"Hel", 3, false},
        {"lo world<\357\275\234User\357\275\234>", strlen("lo world<\357\275\234User\357\275\234>"), false},
    };
    mp_tokens a = {0}, b = {0}, c = {0};
    CHECK(mp_tokenizer_encode_parts(tok, parts, 3, 0, &a, &err) == MP_OK);
    CHECK(mp_tokenizer_encode(tok, "Hello world<\357\275\234User\357\275\234>",
                              strlen("Hello world<\357\275\234User\357\275\234>"), 0, &b, &err) == MP_OK);
    CHECK(a.n == b.n + 1 && a.ids[0] == 1276 && memcmp(a.ids + 1, b.ids, b.n * sizeof(int32_t)) == 0);
    /* "Hello world" is 7 tokens in the reference cases: a split at "Hel|lo" must not change that */
    CHECK(mp_tokenizer_encode(tok, "Hello world", 11, 0, &c, &err) == MP_OK);
    CHECK(c.n == 7 && b.n > 7 && memcmp(b.ids, c.ids, 7 * sizeof(int32_t)) == 0);
    mp_tokens_free(&a);
    mp_tokens_free(&b);
    mp_tokens_free(&c);
}

/* A small hand-made vocabulary: the 256 byte tokens, a few merges and added tokens. */
static mp_tokenizer *build_small(bool with_added, mp_error *err)
{
    static char texts[256][5];
    mp_tok_str tokens[262];
    int32_t types[262];
    for (int b = 0; b < 256; b++) {
        /* GPT-2 alphabet, written independently of the library's table */
        unsigned cp;
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174))
            cp = (unsigned)b;
        else {
            unsigned k = 0;
            for (int x = 0; x < b; x++)
                if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174)))
                    k++;
            cp = 256 + k;
        }
        size_t l = cp < 0x80 ? 1 : 2;
        if (l == 1)
            texts[b][0] = (char)cp;
        else {
            texts[b][0] = (char)(0xc0 | (cp >> 6));
            texts[b][1] = (char)(0x80 | (cp & 0x3f));
        }
        tokens[b] = (mp_tok_str){texts[b], l};
        types[b] = MP_TOKEN_NORMAL;
    }
    tokens[256] = (mp_tok_str){"ab", 2};
    tokens[257] = (mp_tok_str){"abc", 3};
    tokens[258] = (mp_tok_str){"<s>", 3};
    tokens[259] = (mp_tok_str){"<s>x", 4};
    tokens[260] = (mp_tok_str){"@@", 2};
    tokens[261] = (mp_tok_str){"<0x41>", 6};
    types[256] = types[257] = MP_TOKEN_NORMAL;
    types[258] = types[259] = MP_TOKEN_CONTROL;
    types[260] = MP_TOKEN_USER_DEFINED;
    types[261] = MP_TOKEN_BYTE;
    mp_tok_str merges[] = {{"a b", 3}, {"ab c", 4}};
    mp_tokenizer_spec spec = {
        .source = "small",
        .n_tokens = with_added ? 262 : 258,
        .tokens = tokens,
        .types = types,
        .n_merges = 2,
        .merges = merges,
        .pre = "gpt2",
        .bos_id = with_added ? 258 : -1,
        .eos_id = -1,
        .unk_id = -1,
    };
    mp_tokenizer *tok = NULL;
    mp_tokenizer_build(&spec, &tok, err);
    return tok;
}

static void test_small_vocab(void)
{
    mp_error err = {0};
    mp_tokenizer *tok = build_small(true, &err);
    REQUIRE(tok != NULL);
    mp_tokens t = {0};
    /* longest added token first; CONTROL only with PARSE_SPECIAL; USER_DEFINED always */
    CHECK(mp_tokenizer_encode(tok, "<s>xabc@@", 9, MP_TOK_PARSE_SPECIAL, &t, &err) == MP_OK);
    CHECK(t.n == 3 && t.ids[0] == 259 && t.ids[1] == 257 && t.ids[2] == 260);
    t.n = 0;
    CHECK(mp_tokenizer_encode(tok, "<s>yab", 6, MP_TOK_PARSE_SPECIAL, &t, &err) == MP_OK);
    CHECK(t.n == 3 && t.ids[0] == 258 && t.ids[1] == 'y' && t.ids[2] == 256);
    t.n = 0;
    CHECK(mp_tokenizer_encode(tok, "<s>x@@", 6, 0, &t, &err) == MP_OK);
    CHECK(t.n == 5 && t.ids[0] == '<' && t.ids[3] == 'x' && t.ids[4] == 260);
    /* the BYTE token "<0x41>" decodes to "A" */
    size_t len;
    const char *b = mp_tokenizer_token_bytes(tok, 261, &len);
    CHECK(len == 1 && b[0] == 'A');
    /* the pieces of "abcab abc" under the GPT-2 regex are "abcab", " abc" */
    t.n = 0;
    CHECK(mp_tokenizer_encode(tok, "abcab abc", 9, 0, &t, &err) == MP_OK);
    CHECK(t.n == 4 && t.ids[0] == 257 && t.ids[1] == 256 && t.ids[2] == ' ' && t.ids[3] == 257);
    mp_tokens_free(&t);
    mp_tokenizer_free(tok);

    /* no BOS: asking for one is an error */
    tok = build_small(false, &err);
    REQUIRE(tok != NULL);
    CHECK(mp_tokenizer_encode(tok, "a", 1, MP_TOK_ADD_BOS, &t, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "no BOS") != NULL);
    mp_tokens_free(&t);
    mp_tokenizer_free(tok);
}

/* The streaming decoder releases whole characters only, and always valid UTF-8. */
static void test_detok(const mp_tokenizer *tok)
{
    const char *texts[] = {"\xf0\x9f\x98\x80\xf0\x9f\x98\x83\xf0\x9f\x98\x84", /* 3 emoji, split by the BPE */
                           "\xe6\xb7\xb7\xe5\x90\x88\xe4\xb8\x93\xe5\xae\xb6 and caf\xc3\xa9",
                           "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xd0\x9f\xd1\x80\xd0\xb8"};
    for (int k = 0; k < 3; k++) {
        mp_tokens ids = {0};
        mp_error err = {0};
        CHECK(mp_tokenizer_encode(tok, texts[k], strlen(texts[k]), 0, &ids, &err) == MP_OK);
        mp_detok d;
        mp_detok_init(&d, tok, 0);
        char out[256];
        size_t o = 0;
        int held = 0;
        for (size_t i = 0; i < ids.n; i++) {
            const char *s;
            size_t l;
            CHECK(mp_detok_push(&d, ids.ids[i], &s, &l, &err) == MP_OK);
            CHECKF(utf8_ok(s, l), "text %d token %zu released a partial character", k, i);
            if (l == 0)
                held++;
            REQUIRE(o + l < sizeof out);
            memcpy(out + o, s, l);
            o += l;
        }
        const char *s;
        size_t l;
        CHECK(mp_detok_flush(&d, &s, &l, &err) == MP_OK && l == 0);
        CHECKF(o == strlen(texts[k]) && memcmp(out, texts[k], o) == 0, "text %d streams back differently", k);
        if (k == 0)
            CHECK(held > 0); /* the emoji's first token is part of a character */
        mp_detok_free(&d);
        mp_tokens_free(&ids);
    }
    /* bytes that can never be a character: U+FFFD, and an unfinished one at the end too */
    int32_t ff = mp_tokenizer_find(tok, "\xff", 1), e2 = mp_tokenizer_find(tok, "\xe2", 1),
            a = mp_tokenizer_find(tok, "a", 1), x82 = mp_tokenizer_find(tok, "\x82", 1);
    REQUIRE(ff >= 0 && e2 >= 0 && a >= 0 && x82 >= 0);
    mp_detok d;
    mp_detok_init(&d, tok, 0);
    mp_error err = {0};
    const char *s;
    size_t l;
    CHECK(mp_detok_push(&d, ff, &s, &l, &err) == MP_OK && l == 3 && memcmp(s, "\357\277\275", 3) == 0);
    CHECK(mp_detok_push(&d, e2, &s, &l, &err) == MP_OK && l == 0);
    CHECK(mp_detok_push(&d, x82, &s, &l, &err) == MP_OK && l == 0);
    CHECK(mp_detok_push(&d, a, &s, &l, &err) == MP_OK && l == 4 && memcmp(s, "\357\277\275a", 4) == 0);
    CHECK(mp_detok_push(&d, e2, &s, &l, &err) == MP_OK && l == 0);
    CHECK(mp_detok_flush(&d, &s, &l, &err) == MP_OK && l == 3 && memcmp(s, "\357\277\275", 3) == 0);
    CHECK(mp_detok_push(&d, 5000, &s, &l, &err) == MP_ERR_INPUT);
    /* special tokens: text, or nothing with SKIP_SPECIAL */
    CHECK(mp_detok_push(&d, 1276, &s, &l, &err) == MP_OK && l == strlen("<\357\275\234User\357\275\234>"));
    mp_detok_free(&d);
    mp_detok_init(&d, tok, MP_TOK_DECODE_SKIP_SPECIAL);
    CHECK(mp_detok_push(&d, 1276, &s, &l, &err) == MP_OK && l == 0);
    /* the reasoning tags (CONTROL here) stay text: serve's reasoning split reads this stream */
    CHECK(mp_detok_push(&d, 1278, &s, &l, &err) == MP_OK && l == 7 && memcmp(s, "<think>", 7) == 0);
    CHECK(mp_detok_push(&d, 1279, &s, &l, &err) == MP_OK && l == 8 && memcmp(s, "</think>", 8) == 0);
    CHECK(mp_detok_push(&d, 1, &s, &l, &err) == MP_OK && l == 0); /* EOS stays skipped */
    mp_detok_free(&d);
}

static void test_invalid_utf8(const mp_tokenizer *tok)
{
    struct {
        const char *s;
        size_t len, bad_at;
    } bad[] = {
        {"abc\xff", 4, 3},          {"\xc0\x80", 2, 0}, /* overlong NUL */
        {"ok \xed\xa0\x80", 6, 3},                      /* a surrogate */
        {"x\xe2\x82", 3, 1},                            /* truncated */
        {"\xf4\x90\x80\x80", 4, 0},                     /* above U+10FFFF */
        {"a\x80z", 3, 1},                               /* stray continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp_tokens ids = {0};
        mp_error err = {0};
        CHECK(mp_tokenizer_encode(tok, bad[i].s, bad[i].len, 0, &ids, &err) == MP_ERR_INPUT);
        char want[64];
        snprintf(want, sizeof want, "not valid UTF-8 at byte %zu", bad[i].bad_at);
        CHECKF(strstr(err.msg, want) != NULL, "case %zu: '%s'", i, err.msg);
        /* encoded as bytes, they come back exactly */
        ids.n = 0;
        CHECK(mp_tokenizer_encode(tok, bad[i].s, bad[i].len, MP_TOK_INVALID_UTF8_AS_BYTES, &ids, &err) == MP_OK);
        char *back;
        size_t blen;
        CHECK(mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) == MP_OK);
        CHECKF(blen == bad[i].len && memcmp(back, bad[i].s, blen) == 0, "case %zu does not round-trip", i);
        free(back);
        mp_tokens_free(&ids);
    }
    /* an embedded NUL is valid text */
    mp_tokens ids = {0};
    mp_error err = {0};
    CHECK(mp_tokenizer_encode(tok, "a\0b", 3, 0, &ids, &err) == MP_OK && ids.n == 3);
    mp_tokens_free(&ids);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 1 MB inputs (natural mixed text, and the degenerate shapes: one giant word, one run of spaces,
 * digits, text full of special-token prefixes) encode in bounded time and round-trip. */
static void test_long_input(const mp_tokenizer *tok)
{
    const size_t target = 1 << 20;
    char *big = malloc(target + 4096);
    REQUIRE(big);
    for (int shape = 0; shape < 5; shape++) {
        size_t n = 0, k = 0;
        while (n < target) {
            if (shape == 0) {
                size_t which = k++ % json_array_size(cases);
                const char *t = json_string_value(json_object_get(json_array_get(cases, which), "text"));
                size_t l = strlen(t);
                memcpy(big + n, t, l);
                n += l;
            } else if (shape == 4) {
                memcpy(big + n, "<\357\275\234Use", 7); /* a special token's prefix, never completed */
                n += 7;
            } else {
                big[n] = shape == 1 ? 'a' : shape == 2 ? ' ' : (char)('0' + n % 10);
                n++;
            }
        }
        mp_tokens ids = {0};
        mp_error err = {0};
        double t0 = now_s();
        int rc = mp_tokenizer_encode(tok, big, n, MP_TOK_PARSE_SPECIAL, &ids, &err);
        double dt = now_s() - t0;
        CHECKF(rc == MP_OK, "%s", err.msg);
        printf("encode shape %d: %zu bytes -> %zu tokens in %.3f s\n", shape, n, ids.n, dt);
        /* well under a second in an optimised build; sanitizers slow this several-fold */
        CHECKF(dt < 10.0, "shape %d took %.2f s", shape, dt);
        char *back;
        size_t blen;
        CHECK(mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) == MP_OK);
        CHECKF(blen == n && memcmp(back, big, n) == 0, "shape %d does not round-trip", shape);
        free(back);
        mp_tokens_free(&ids);
    }
    free(big);
}

static mp_rng rng_state = {0x9e3779b97f4a7c15ull};
static uint64_t rng(void)
{
    return mp_rng_u64(&rng_state);
}

static void test_serialize(const mp_tokenizer *tok)
{
    mp_error err = {0};
    uint8_t *blob;
    size_t len;
    REQUIRE(mp_tokenizer_serialize(tok, &blob, &len, &err) == MP_OK);
    mp_tokenizer *back = NULL;
    CHECKF(mp_tokenizer_deserialize(blob, len, "blob", &back, &err) == MP_OK, "%s", err.msg);
    REQUIRE(back);
    check_cases(back, "deserialized");
    CHECK(mp_tokenizer_bos(back) == 0 && mp_tokenizer_eos(back) == 1 && mp_tokenizer_add_bos(back));
    CHECK(strcmp(mp_tokenizer_pre_name(back), "deepseek-v3") == 0);
    size_t l1, l2;
    const char *t1 = mp_tokenizer_chat_template(tok, &l1), *t2 = mp_tokenizer_chat_template(back, &l2);
    CHECK(t1 && t2 && l1 == l2 && memcmp(t1, t2, l1) == 0);
    uint8_t *blob2;
    size_t len2;
    CHECK(mp_tokenizer_serialize(back, &blob2, &len2, &err) == MP_OK);
    CHECK(len2 == len && memcmp(blob, blob2, len) == 0);
    free(blob2);
    mp_tokenizer_free(back);

    /* every truncation fails cleanly */
    int ok = 0;
    for (size_t n = 0; n < len; n++) {
        back = NULL;
        if (mp_tokenizer_deserialize(blob, n, "blob", &back, &err) == MP_OK)
            ok++;
        mp_tokenizer_free(back);
    }
    CHECKF(ok == 0, "%d truncated blobs were accepted", ok);

    /* random corruption: caught by the checksum ... */
    uint8_t *bad = malloc(len);
    REQUIRE(bad);
    int accepted = 0;
    for (int iter = 0; iter < 300; iter++) {
        memcpy(bad, blob, len);
        int flips = 1 + (int)(rng() % 4);
        for (int f = 0; f < flips; f++)
            bad[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
        back = NULL;
        if (mp_tokenizer_deserialize(bad, len, "blob", &back, &err) == MP_OK)
            accepted++;
        mp_tokenizer_free(back);
    }
    CHECK(accepted == 0);
    /* ... and with the checksum recomputed, the parser itself must fail cleanly or produce a
     * working tokenizer. Flips are aimed at the header and tables half of the time. */
    for (int iter = 0; iter < 400; iter++) {
        memcpy(bad, blob, len);
        int flips = 1 + (int)(rng() % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = (iter & 1) ? rng() % 64 : rng() % (len - 8);
            bad[at] ^= (uint8_t)(1u << (rng() % 8));
        }
        if (iter % 7 == 0) /* a big value in a count or id field */
            memset(bad + 12 + 4 * (rng() % 10), 0xff, 4);
        uint64_t h = XXH3_64bits(bad, len - 8);
        for (int i = 0; i < 8; i++)
            bad[len - 8 + i] = (uint8_t)(h >> (8 * i));
        back = NULL;
        if (mp_tokenizer_deserialize(bad, len, "blob", &back, &err) == MP_OK) {
            mp_tokens ids = {0};
            const char *text = "Hello world <\357\275\234User\357\275\234> 12345 \xe4\xb8\xad\xe6\x96\x87";
            if (mp_tokenizer_encode(back, text, strlen(text), MP_TOK_PARSE_SPECIAL, &ids, &err) == MP_OK) {
                char *s;
                size_t sl;
                if (mp_tokenizer_decode(back, ids.ids, ids.n, 0, &s, &sl, &err) == MP_OK)
                    free(s);
            }
            mp_tokens_free(&ids);
            mp_tokenizer_free(back);
        } else {
            CHECK(err.code == MP_ERR_INPUT && strncmp(err.msg, "blob", 4) == 0);
        }
    }
    free(bad);
    free(blob);
    CHECK(mp_tokenizer_deserialize((const uint8_t *)"", 0, NULL, &back, &err) == MP_ERR_INPUT);
}

/* ---- malformed tokenizer.json --------------------------------------------------------------- */

static const char *tmp;

static int load_json_text(const char *text, mp_error *err)
{
    const char *path = mp_test_path(tmp, "tokenizer.json");
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
    mp_tokenizer *tok = NULL;
    int rc = mp_tokenizer_load_hf(path, &tok, err);
    mp_tokenizer_free(tok);
    return rc;
}

/* The fixture's tokenizer.json with one edit, loaded from the scratch folder. */
static int load_edited(void (*edit)(json_t *), mp_error *err)
{
    json_error_t je;
    json_t *root = json_load_file(mp_test_path(fixtures, "tiny-v3/tokenizer.json"), 0, &je);
    REQUIRE(root);
    edit(root);
    char *text = json_dumps(root, 0);
    REQUIRE(text);
    int rc = load_json_text(text, err);
    free(text);
    json_decref(root);
    return rc;
}

static json_t *model_of(json_t *r)
{
    return json_object_get(r, "model");
}
static void edit_none(json_t *r)
{
    (void)r;
}
static void edit_merge_unknown(json_t *r)
{
    json_array_append_new(json_object_get(model_of(r), "merges"), json_pack("[ss]", "zz", "q"));
}
static void edit_merge_result_unknown(json_t *r)
{
    json_array_append_new(json_object_get(model_of(r), "merges"), json_pack("[ss]", "q", "z"));
}
static void edit_dup_id(json_t *r)
{
    json_object_set_new(json_object_get(model_of(r), "vocab"), "zzzzz", json_integer(5));
}
static void edit_negative_id(json_t *r)
{
    json_object_set_new(json_object_get(model_of(r), "vocab"), "zzzzz", json_integer(-1));
}
static void edit_huge_id(json_t *r)
{
    json_object_set_new(json_object_get(model_of(r), "vocab"), "zzzzz", json_integer(1000000000000ll));
}
static void edit_string_id(json_t *r)
{
    json_object_set_new(json_object_get(model_of(r), "vocab"), "zzzzz", json_string("7"));
}
static void edit_added_conflict(json_t *r)
{
    json_object_set_new(json_array_get(json_object_get(r, "added_tokens"), 0), "id", json_integer(40));
}
static void edit_normalizer(json_t *r)
{
    json_object_set_new(r, "normalizer", json_pack("{ss}", "type", "NFC"));
}
static void edit_bad_regex(json_t *r)
{
    json_t *steps = json_object_get(json_object_get(r, "pre_tokenizer"), "pretokenizers");
    json_object_set_new(json_object_get(json_array_get(steps, 0), "pattern"), "Regex", json_string("[a-"));
}
static void edit_merge_not_string(json_t *r)
{
    json_array_set_new(json_object_get(model_of(r), "merges"), 3, json_integer(12));
}
static void edit_model_type(json_t *r)
{
    json_object_set_new(model_of(r), "type", json_string("WordPiece"));
}
static void edit_no_bytelevel(json_t *r)
{
    json_t *steps = json_object_get(json_object_get(r, "pre_tokenizer"), "pretokenizers");
    json_array_remove(steps, json_array_size(steps) - 1);
}
static void edit_merges_as_strings(json_t *r)
{
    json_t *m = json_object_get(model_of(r), "merges");
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *p = json_array_get(m, i);
        char buf[256];
        snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(p, 0)),
                 json_string_value(json_array_get(p, 1)));
        json_array_set_new(m, i, json_string(buf));
    }
}
static void edit_merge_bad_string(json_t *r)
{
    edit_merges_as_strings(r);
    json_array_set_new(json_object_get(model_of(r), "merges"), 5, json_string("nospace"));
}

static void test_bad_json(void)
{
    mp_error err = {0};
    CHECK(load_edited(edit_none, &err) == MP_OK);
    CHECK(load_json_text("{\"model\": ", &err) == MP_ERR_INPUT && strstr(err.msg, "bad JSON"));
    CHECK(strstr(err.msg, "tokenizer.json: ") != NULL);
    CHECK(load_json_text("[1, 2]", &err) == MP_ERR_INPUT);
    CHECK(load_json_text("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", &err) ==
          MP_ERR_INPUT);
    CHECK(strstr(err.msg, "duplicate") != NULL);
    CHECK(load_json_text("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, "
                         "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                         &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "empty") != NULL);
    CHECK(load_edited(edit_merge_unknown, &err) == MP_ERR_INPUT && strstr(err.msg, "'zz' is not a token"));
    CHECK(load_edited(edit_merge_result_unknown, &err) == MP_ERR_INPUT && strstr(err.msg, "'qz' is not a token"));
    CHECK(load_edited(edit_dup_id, &err) == MP_ERR_INPUT && strstr(err.msg, "vocab id 5 is given to both"));
    CHECK(load_edited(edit_negative_id, &err) == MP_ERR_INPUT && strstr(err.msg, "out of range"));
    CHECK(load_edited(edit_huge_id, &err) == MP_ERR_INPUT && strstr(err.msg, "out of range"));
    CHECK(load_edited(edit_string_id, &err) == MP_ERR_INPUT && strstr(err.msg, "no integer id"));
    CHECK(load_edited(edit_added_conflict, &err) == MP_ERR_INPUT && strstr(err.msg, "which the vocab gives to"));
    CHECK(load_edited(edit_normalizer, &err) == MP_ERR_INPUT && strstr(err.msg, "normalizer 'NFC' is not supported"));
    CHECK(load_edited(edit_bad_regex, &err) == MP_ERR_INPUT && strstr(err.msg, "pre-tokenizer regex 0"));
    CHECK(load_edited(edit_merge_not_string, &err) == MP_ERR_INPUT && strstr(err.msg, "merges[3]"));
    CHECK(load_edited(edit_model_type, &err) == MP_ERR_INPUT && strstr(err.msg, "WordPiece"));
    CHECK(load_edited(edit_no_bytelevel, &err) == MP_ERR_INPUT && strstr(err.msg, "byte-level"));
    CHECK(load_edited(edit_merge_bad_string, &err) == MP_ERR_INPUT && strstr(err.msg, "merge 5"));
    CHECK(mp_tokenizer_load_hf(mp_test_path(tmp, "missing.json"), &(mp_tokenizer *){NULL}, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "missing.json") != NULL);

    /* merges written as "a b" strings (older files) give the same tokenizer as [a, b] pairs */
    CHECK(load_edited(edit_merges_as_strings, &err) == MP_OK);
    mp_tokenizer *tok = NULL;
    CHECKF(mp_tokenizer_load_hf(tmp, &tok, &err) == MP_OK, "%s", err.msg); /* a directory works too */
    if (tok) {
        check_cases(tok, "string merges");
        CHECK(mp_tokenizer_bos(tok) == 0); /* from the post-processor: no tokenizer_config.json here */
        CHECK(mp_tokenizer_eos(tok) == -1 && mp_tokenizer_chat_template(tok, NULL) == NULL);
    }
    mp_tokenizer_free(tok);
}

static void test_spec_errors(void)
{
    mp_error err = {0};
    mp_tokenizer *tok = NULL;
    mp_tok_str toks[] = {{"a", 1}, {"b", 1}, {"a", 1}, {"ab", 2}};
    int32_t types[] = {1, 1, 1, 1};
    mp_tokenizer_spec spec = {
        .source = "v.gguf", .n_tokens = 4, .tokens = toks, .types = types, .bos_id = -1, .eos_id = -1, .unk_id = -1};
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "v.gguf: duplicate token 'a'"));
    toks[2] = (mp_tok_str){"c", 1};
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_OK);
    mp_tokenizer_free(tok);
    types[1] = 9;
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "unknown type 9"));
    types[1] = 1;
    spec.bos_id = 4;
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "BOS id 4 is out of range"));
    spec.bos_id = -1;
    spec.pre = "no-such-pre";
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "no-such-pre"));
    spec.pre = NULL;
    mp_tok_str merges[] = {{"a b", 3}, {"a c", 3}};
    spec.merges = merges;
    spec.n_merges = 2;
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "'ac' is not a token"));
    merges[1] = merges[0];
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "repeats"));
    spec.n_merges = 1;
    spec.add_bos = true;
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "no BOS"));
    spec.add_bos = false;
    toks[1] = (mp_tok_str){"\xff", 1};
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "not valid UTF-8"));
    spec.n_tokens = 0;
    CHECK(mp_tokenizer_build(&spec, &tok, &err) == MP_ERR_INPUT && strstr(err.msg, "empty"));
    CHECK(tok == NULL);
}

/* Random byte strings (rich in special-token fragments and high bytes): encoding never fails
 * with AS_BYTES and always decodes back exactly; random id streams always detokenize to valid
 * UTF-8. */
static void test_fuzz_text(const mp_tokenizer *tok)
{
    static const char *frags[] = {"<",  "\357\275\234", "User", ">",    "<think>",     " ",
                                  "\n", "\r\n",         "12",   "\xff", "\xe2\x82",    "\xc3\xa9",
                                  "a",  "\xf0\x9f\x98", "\x80", "\t",   "\xe4\xb8\xad"};
    char buf[512];
    int bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0, parts = rng() % 24;
        for (size_t k = 0; k < parts; k++) {
            const char *f = frags[rng() % (sizeof frags / sizeof frags[0])];
            size_t l = strlen(f);
            memcpy(buf + n, f, l);
            n += l;
        }
        mp_tokens ids = {0};
        mp_error err = {0};
        unsigned flags = MP_TOK_INVALID_UTF8_AS_BYTES | ((iter & 1) ? MP_TOK_PARSE_SPECIAL : 0);
        if (mp_tokenizer_encode(tok, buf, n, flags, &ids, &err) != MP_OK) {
            bad++;
        } else {
            char *back;
            size_t blen;
            if (mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) != MP_OK || blen != n ||
                memcmp(back, buf, n) != 0)
                bad++;
            else
                free(back);
        }
        mp_tokens_free(&ids);
        /* without AS_BYTES: an error exactly when the text is not valid UTF-8 */
        int rc = mp_tokenizer_encode(tok, buf, n, 0, &ids, &err);
        if ((rc == MP_OK) != utf8_ok(buf, n))
            bad++;
        mp_tokens_free(&ids);
    }
    CHECKF(bad == 0, "%d random texts misbehaved", bad);

    int invalid = 0;
    for (int iter = 0; iter < 2000; iter++) {
        mp_detok d;
        mp_detok_init(&d, tok, iter & 1 ? MP_TOK_DECODE_SKIP_SPECIAL : 0);
        mp_error err = {0};
        int steps = 1 + (int)(rng() % 12);
        for (int k = 0; k < steps; k++) {
            const char *s;
            size_t l;
            int32_t id = (int32_t)(rng() % mp_tokenizer_n_tokens(tok));
            if (mp_detok_push(&d, id, &s, &l, &err) != MP_OK || !utf8_ok(s, l))
                invalid++;
        }
        const char *s;
        size_t l;
        if (mp_detok_flush(&d, &s, &l, &err) != MP_OK || !utf8_ok(s, l))
            invalid++;
        mp_detok_free(&d);
    }
    CHECKF(invalid == 0, "%d detokenizer outputs were not valid UTF-8", invalid);
}

/* A loaded tokenizer must work: encode and decode something without failing. */
static void exercise(const mp_tokenizer *tok)
{
    mp_tokens ids = {0};
    mp_error err = {0};
    const char *text = "Hello world 123 <\357\275\234User\357\275\234> \xe4\xb8\xad";
    if (mp_tokenizer_encode(tok, text, strlen(text), MP_TOK_PARSE_SPECIAL, &ids, &err) == MP_OK) {
        char *back;
        size_t blen;
        CHECK(mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) == MP_OK);
        free(back);
    }
    mp_tokens_free(&ids);
}

static int save_and_load(json_t *root, mp_tokenizer **tok, mp_error *err)
{
    const char *path = mp_test_path(tmp, "tokenizer.json");
    REQUIRE(json_dump_file(root, path, 0) == 0);
    return mp_tokenizer_load_hf(path, tok, err);
}

static json_t *random_value(void)
{
    switch (rng() % 6) {
    case 0:
        return json_integer((json_int_t)(rng() % 1400) - 50);
    case 1:
        return json_string("\xc4\xa0t");
    case 2:
        return json_string("");
    case 3:
        return json_null();
    case 4:
        return json_pack("[ss]", "a", "b");
    default:
        return json_integer((json_int_t)(rng() >> 1));
    }
}

/* Random corruption of a tokenizer.json, of its bytes and of its structure (ids, merges, added
 * tokens, regexes): loading fails cleanly with the file named, or gives a working tokenizer. */
static void test_fuzz_json(void)
{
    char *orig;
    size_t len;
    mp_error err = {0};
    REQUIRE(mp_read_small_file(mp_test_path(fixtures, "tiny-v3/tokenizer.json"), 1 << 24, &orig, &len, &err) == 0);
    int loaded = 0, failed = 0;
    for (int iter = 0; iter < 200; iter++) {
        json_error_t je;
        json_t *root = json_loadb(orig, len, 0, &je);
        REQUIRE(root);
        json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
        json_t *merges = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
        json_t *steps = json_object_get(json_object_get(root, "pre_tokenizer"), "pretokenizers");
        int muts = 1 + (int)(rng() % 3);
        for (int m = 0; m < muts; m++) {
            switch (rng() % 7) {
            case 0: { /* a vocab id changed */
                void *it = json_object_iter(vocab);
                for (uint64_t k = rng() % json_object_size(vocab); k > 0 && it; k--)
                    it = json_object_iter_next(vocab, it);
                if (it)
                    json_object_iter_set_new(vocab, it, random_value());
                break;
            }
            case 1: /* a merge changed */
                json_array_set_new(merges, rng() % json_array_size(merges), random_value());
                break;
            case 2: { /* a merge side renamed */
                json_t *pair = json_array_get(merges, rng() % json_array_size(merges));
                json_array_set_new(pair, rng() % 2, json_string(rng() % 2 ? "\xc4\xa0" : "zz"));
                break;
            }
            case 3: /* an added token changed */
                json_object_set_new(json_array_get(added, rng() % json_array_size(added)), rng() % 2 ? "id" : "content",
                                    random_value());
                break;
            case 4: /* a regex changed */
                json_object_set_new(json_object_get(json_array_get(steps, rng() % 3), "pattern"), "Regex",
                                    json_string(rng() % 2 ? "(a|b" : "\\p{L}*"));
                break;
            case 5: /* a vocab entry removed */
                json_object_del(vocab, "e");
                break;
            default: /* two merges swapped: still loads, different ranks */
                json_array_append(merges, json_array_get(merges, 0));
                json_array_remove(merges, 0);
                break;
            }
        }
        mp_tokenizer *tok = NULL;
        int rc = save_and_load(root, &tok, &err);
        json_decref(root);
        if (rc == MP_OK) {
            loaded++;
            exercise(tok);
        } else {
            failed++;
            CHECKF(rc == MP_ERR_INPUT && strstr(err.msg, "tokenizer.json") != NULL, "%s", err.msg);
        }
        mp_tokenizer_free(tok);
    }
    printf("structurally fuzzed tokenizer.json: %d loaded, %d refused\n", loaded, failed);
    CHECK(loaded > 0 && failed > 0);

    /* byte flips: mostly invalid JSON */
    char *text = malloc(len + 1);
    REQUIRE(text);
    for (int iter = 0; iter < 30; iter++) {
        memcpy(text, orig, len + 1);
        static const char junk[] = "\"{}[],:0123456789-e \\u\xff\x80";
        text[rng() % len] = junk[rng() % (sizeof junk - 1)];
        json_error_t je;
        json_t *root = json_loadb(text, len, 0, &je);
        if (!root)
            continue;
        mp_tokenizer *tok = NULL;
        if (save_and_load(root, &tok, &err) == MP_OK)
            exercise(tok);
        mp_tokenizer_free(tok);
        json_decref(root);
    }
    free(text);
    free(orig);
}

/* ---- the GGUF vocabulary path --------------------------------------------------------------- */

/* A minimal reader of the tokenizer.* keys of a GGUF v3 header, independent of the project's
 * GGUF module: enough to build the spec the way the GGUF glue will. */
typedef struct {
    const uint8_t *p, *end;
    bool bad;
} rd;

static uint64_t rd_u(rd *r, int n)
{
    uint64_t v = 0;
    if (r->end - r->p < n) {
        r->bad = true;
        return 0;
    }
    for (int i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return v;
}

static mp_tok_str rd_str(rd *r)
{
    uint64_t n = rd_u(r, 8);
    if ((uint64_t)(r->end - r->p) < n) {
        r->bad = true;
        return (mp_tok_str){"", 0};
    }
    mp_tok_str s = {(const char *)r->p, n};
    r->p += n;
    return s;
}

static void rd_skip(rd *r, uint32_t type)
{
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8)
        rd_str(r);
    else if (type == 9) {
        uint32_t et = (uint32_t)rd_u(r, 4);
        uint64_t n = rd_u(r, 8);
        for (uint64_t i = 0; i < n && !r->bad; i++)
            rd_skip(r, et);
    } else if (type < 13)
        rd_u(r, size[type]);
    else
        r->bad = true;
}

static void test_gguf_spec(void)
{
    mp_mapped_file f;
    mp_error err = {0};
    REQUIRE(mp_map_file(mp_test_path(fixtures, "tiny-v3-bf16.gguf"), &f, &err) == MP_OK);
    rd r = {f.data, f.data + f.size, false};
    REQUIRE(rd_u(&r, 4) == 0x46554747u); /* "GGUF" */
    rd_u(&r, 4);
    rd_u(&r, 8);
    uint64_t nkv = rd_u(&r, 8);
    mp_tok_str *tokens = NULL, *merges = NULL, pre = {0}, tmpl = {0};
    int32_t *types = NULL;
    uint64_t n_tokens = 0, n_merges = 0, n_types = 0;
    int64_t bos = -1, eos = -1;
    bool add_bos = false;
    for (uint64_t k = 0; k < nkv && !r.bad; k++) {
        mp_tok_str key = rd_str(&r);
        uint32_t type = (uint32_t)rd_u(&r, 4);
#define KEY(s) (key.len == strlen(s) && memcmp(key.ptr, s, key.len) == 0)
        if ((KEY("tokenizer.ggml.tokens") || KEY("tokenizer.ggml.merges")) && type == 9) {
            REQUIRE(rd_u(&r, 4) == 8);
            uint64_t n = rd_u(&r, 8);
            REQUIRE(n < 100000);
            mp_tok_str *v = calloc(n, sizeof *v);
            for (uint64_t i = 0; i < n; i++)
                v[i] = rd_str(&r);
            if (KEY("tokenizer.ggml.tokens"))
                tokens = v, n_tokens = n;
            else
                merges = v, n_merges = n;
        } else if (KEY("tokenizer.ggml.token_type") && type == 9) {
            REQUIRE(rd_u(&r, 4) == 5);
            n_types = rd_u(&r, 8);
            REQUIRE(n_types < 100000);
            types = calloc(n_types, sizeof *types);
            for (uint64_t i = 0; i < n_types; i++)
                types[i] = (int32_t)rd_u(&r, 4);
        } else if (KEY("tokenizer.ggml.pre") && type == 8) {
            pre = rd_str(&r);
        } else if (KEY("tokenizer.chat_template") && type == 8) {
            tmpl = rd_str(&r);
        } else if (KEY("tokenizer.ggml.bos_token_id") && type == 4) {
            bos = (int64_t)rd_u(&r, 4);
        } else if (KEY("tokenizer.ggml.eos_token_id") && type == 4) {
            eos = (int64_t)rd_u(&r, 4);
        } else if (KEY("tokenizer.ggml.add_bos_token") && type == 7) {
            add_bos = rd_u(&r, 1) != 0;
        } else {
            rd_skip(&r, type);
        }
#undef KEY
    }
    REQUIRE(!r.bad && tokens && merges && types && n_types == n_tokens && pre.len > 0);
    char pre_name[64];
    snprintf(pre_name, sizeof pre_name, "%.*s", (int)pre.len, pre.ptr);
    mp_tokenizer_spec spec = {
        .source = "tiny-v3-bf16.gguf",
        .n_tokens = (uint32_t)n_tokens,
        .tokens = tokens,
        .types = types,
        .n_merges = (uint32_t)n_merges,
        .merges = merges,
        .pre = pre_name,
        .bos_id = bos,
        .eos_id = eos,
        .unk_id = -1,
        .add_bos = add_bos,
        .chat_template = tmpl,
    };
    mp_tokenizer *tok = NULL;
    CHECKF(mp_tokenizer_build(&spec, &tok, &err) == MP_OK, "%s", err.msg);
    if (tok) {
        check_cases(tok, "gguf");
        CHECK(strcmp(mp_tokenizer_pre_name(tok), "deepseek-v3") == 0);
        CHECK(mp_tokenizer_bos(tok) == 0 && mp_tokenizer_add_bos(tok));
        /* its blob round-trips like any other */
        uint8_t *blob;
        size_t len;
        CHECK(mp_tokenizer_serialize(tok, &blob, &len, &err) == MP_OK);
        mp_tokenizer *back = NULL;
        CHECK(mp_tokenizer_deserialize(blob, len, "gguf blob", &back, &err) == MP_OK);
        if (back)
            check_cases(back, "gguf blob");
        mp_tokenizer_free(back);
        free(blob);
    }
    mp_tokenizer_free(tok);
    free(tokens);
    free(merges);
    free(types);
    mp_unmap_file(&f);
}

int main(void)
{
    fixtures = mp_test_fixtures();
    tmp = mp_test_tmpdir("test_tokenizer");
    json_error_t je;
    cases = json_load_file(mp_test_path(fixtures, "tiny-v3.tokenizer-cases.json"), 0, &je);
    REQUIRE(json_is_array(cases));
    mp_tokenizer *tok = load_fixture();
    check_cases(tok, "tokenizer.json");
    test_properties(tok);
    test_special(tok);
    test_small_vocab();
    test_detok(tok);
    test_invalid_utf8(tok);
    test_serialize(tok);
    test_bad_json();
    test_spec_errors();
    test_fuzz_text(tok);
    test_fuzz_json();
    test_gguf_spec();
    test_long_input(tok);
    mp_tokenizer_free(tok);
    json_decref(cases);
    return mp_test_finish();
}
