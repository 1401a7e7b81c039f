/* harness_tok: see harness_tok.h. */
#include "harness_tok.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "harness_util.h"

bool mp_fuzz_utf8_valid(const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            len = 2, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            len = 3, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            len = 4, cp = b & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

int mp_fuzz_encode_checked(const mp_tokenizer *tok, const char *text, size_t len, unsigned flags, bool roundtrip,
                           mp_tokens *ids_out)
{
    mp_tokens ids = {0};
    mp_error err = {0};
    int rc = mp_tokenizer_encode(tok, text, len, flags, &ids, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        mp_tokens_free(&ids);
        return rc;
    }
    uint32_t n_tokens = mp_tokenizer_n_tokens(tok);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] < 0 || (uint32_t)ids.ids[i] >= n_tokens)
            mp_fuzz_fail("encode gave id %d of %u tokens", ids.ids[i], n_tokens);
    if ((flags & MP_TOK_ADD_BOS) && (ids.n == 0 || ids.ids[0] != mp_tokenizer_bos(tok)))
        mp_fuzz_fail("ADD_BOS did not start with BOS");

    char *dec = NULL;
    size_t dec_len = 0;
    if (mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &dec, &dec_len, &err) != MP_OK)
        mp_fuzz_fail("decode of encoded ids failed: %s", err.msg);
    if (roundtrip) {
        size_t skip = 0;
        if (flags & MP_TOK_ADD_BOS)
            mp_tokenizer_token_bytes(tok, ids.ids[0], &skip);
        if (dec_len - skip != len || memcmp(dec + skip, text, len) != 0)
            mp_fuzz_fail("decode(encode(text)) differs from the %zu-byte text (got %zu bytes)", len, dec_len - skip);
    }

    /* the streaming detokenizer: valid UTF-8 always, the same text when the whole is valid */
    mp_detok d;
    mp_detok_init(&d, tok, 0);
    size_t cap = dec_len * 3 + 16, got = 0;
    char *stream = malloc(cap);
    if (!stream)
        abort();
    for (size_t i = 0; i <= ids.n; i++) {
        const char *piece;
        size_t plen;
        int r = i < ids.n ? mp_detok_push(&d, ids.ids[i], &piece, &plen, &err) : mp_detok_flush(&d, &piece, &plen, &err);
        if (r)
            mp_fuzz_fail("detokenizer failed at token %zu: %s", i, err.msg);
        if (got + plen > cap)
            mp_fuzz_fail("detokenizer released %zu bytes for %zu decoded", got + plen, dec_len);
        memcpy(stream + got, piece, plen);
        got += plen;
    }
    mp_detok_free(&d);
    if (!mp_fuzz_utf8_valid(stream, got))
        mp_fuzz_fail("detokenizer released invalid UTF-8");
    if (mp_fuzz_utf8_valid(dec, dec_len) && (got != dec_len || memcmp(stream, dec, got) != 0))
        mp_fuzz_fail("detokenizer output differs from decode of valid UTF-8");
    free(stream);
    free(dec);
    if (ids_out)
        *ids_out = ids;
    else
        mp_tokens_free(&ids);
    return MP_OK;
}

static const char sample[] = "Hello, world! It's 2024-06-01 and   spaces\t\ttabs\r\nCRLF 12345678 "
                             "naïve café Ωμέγα Привет 你好世界 안녕하세요 🙂👍🏽 e\xcc\x81 \xe2\x80\x8b "
                             "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>"
                             "def f(x):\n    return x**2  # comment\n";

static bool same_tokens(const mp_tokens *a, const mp_tokens *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->ids, b->ids, a->n * sizeof *a->ids) == 0);
}

void mp_fuzz_check_tokenizer(const mp_tokenizer *tok)
{
    static const unsigned flag_sets[] = {0, MP_TOK_PARSE_SPECIAL, MP_TOK_ADD_BOS | MP_TOK_INVALID_UTF8_AS_BYTES};
    mp_tokens ids[3];
    int rcs[3];
    for (int i = 0; i < 3; i++) {
        memset(&ids[i], 0, sizeof ids[i]);
        rcs[i] = mp_fuzz_encode_checked(tok, sample, sizeof sample - 1, flag_sets[i], false, &ids[i]);
    }
    (void)mp_chat_format_for_tokenizer(tok);
    size_t tl;
    (void)mp_tokenizer_chat_template(tok, &tl);
    (void)mp_tokenizer_pre_name(tok);
    (void)mp_tokenizer_find(tok, "<｜User｜>", strlen("<｜User｜>"));

    uint8_t *blob = NULL, *blob2 = NULL;
    size_t len = 0, len2 = 0;
    mp_error err = {0};
    if (mp_tokenizer_serialize(tok, &blob, &len, &err) != MP_OK)
        mp_fuzz_fail("serialize failed: %s", err.msg);
    mp_tokenizer *back = NULL;
    if (mp_tokenizer_deserialize(blob, len, "fuzz blob", &back, &err) != MP_OK)
        mp_fuzz_fail("deserialize of a serialized tokenizer failed: %s", err.msg);
    if (mp_tokenizer_serialize(back, &blob2, &len2, &err) != MP_OK)
        mp_fuzz_fail("serialize after deserialize failed: %s", err.msg);
    if (len != len2 || memcmp(blob, blob2, len) != 0)
        mp_fuzz_fail("serialize -> deserialize -> serialize changed the blob (%zu -> %zu bytes)", len, len2);
    for (int i = 0; i < 3; i++) {
        mp_tokens again = {0};
        int rc = mp_tokenizer_encode(back, sample, sizeof sample - 1, flag_sets[i], &again, &err);
        if (rc != rcs[i] || (rc == MP_OK && !same_tokens(&ids[i], &again)))
            mp_fuzz_fail("the deserialized tokenizer encodes the sample differently (flags %u)", flag_sets[i]);
        mp_tokens_free(&again);
        mp_tokens_free(&ids[i]);
    }
    mp_tokenizer_free(back);
    free(blob);
    free(blob2);
}

void mp_fuzz_check_tokenizer_load(int rc, const mp_error *err, mp_tokenizer *tok)
{
    if (rc) {
        mp_fuzz_check_refused(rc, err, tok, "a tokenizer");
        return;
    }
    mp_fuzz_check_tokenizer(tok);
    mp_tokenizer_free(tok);
}
