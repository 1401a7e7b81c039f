/* fuzz_tok_encode: encoding hostile text with a real tokenizer (the fixture's
 * tiny-v3/tokenizer.json: DeepSeek-V3's pre-tokenizer regexes, byte-level
 * BPE, special tokens), and decoding hostile id streams.
 *
 * Input: byte 0 chooses what to do, the rest is the payload.
 *   bits 0-2  encode flags (MP_TOK_ADD_BOS, _PARSE_SPECIAL, _INVALID_UTF8_AS_BYTES)
 *   bits 3-4  mode: 0 encode the payload; 1 encode its MP_FUZZ_SEP-separated
 *             parts with mp_tokenizer_encode_parts (bits 5-7: parse_special
 *             of parts 0-2, the rest off); 2 render and encode a chat whose
 *             messages are the parts (byte 1: two role bits per message,
 *             byte 2: format and generation prompt); 3 decode the payload as
 *             little-endian int32 ids, at once and streaming
 *   Invariants: decode(encode(text)) == text whenever encode succeeds (the
 *   vocabulary holds every byte); encode_parts with one parse_special value
 *   for all parts equals encode of the concatenation, except where an added
 *   token of the latter straddles a part boundary; a chat's CONTROL
 *   tokens come only from the template (message text never yields one);
 *   decode succeeds exactly when every id is in range. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "harness_tok.h"
#include "harness_util.h"

static mp_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[4096];
    snprintf(path, sizeof path, "%s/tiny-v3", mp_fuzz_fixtures());
    mp_error err = {0};
    if (mp_tokenizer_load_hf(path, &tok, &err) != MP_OK) {
        fprintf(stderr, "cannot load the fixture tokenizer: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

static bool same(const mp_tokens *a, const mp_tokens *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->ids, b->ids, a->n * sizeof *a->ids) == 0);
}

/* True when an added token of `ids` (the concatenation's encoding) covers a
 * part boundary: an added token is matched within one part only
 * (tokenizer.h), so there the two encodings differ by design. */
static bool added_token_straddles(const mp_tokens *ids, const mp_fuzz_part *parts, size_t np, unsigned flags)
{
    size_t pos = 0, first = (flags & MP_TOK_ADD_BOS) ? 1 : 0;
    for (size_t i = first; i < ids->n; i++) {
        size_t len = 0;
        mp_tokenizer_token_bytes(tok, ids->ids[i], &len);
        if (mp_tokenizer_token_type(tok, ids->ids[i]) != MP_TOKEN_NORMAL) {
            size_t b = 0;
            for (size_t k = 0; k + 1 < np; k++) {
                b += parts[k].len;
                if (pos < b && b < pos + len)
                    return true;
            }
        }
        pos += len;
    }
    return false;
}

static void encode_parts(unsigned flags, unsigned ps_bits, const uint8_t *p, size_t n)
{
    mp_fuzz_part parts[4];
    size_t np = mp_fuzz_split(p, n, parts, 4);
    mp_tok_part tp[4];
    bool all_on = true, all_off = true;
    size_t total = 0;
    for (size_t i = 0; i < np; i++) {
        bool ps = i < 3 && (ps_bits >> i & 1);
        tp[i] = (mp_tok_part){(const char *)parts[i].data, parts[i].len, ps};
        all_on &= ps;
        all_off &= !ps;
        total += parts[i].len;
    }
    unsigned pflags = flags & ~(unsigned)MP_TOK_PARSE_SPECIAL;
    mp_tokens ids = {0};
    mp_error err = {0};
    int rc = mp_tokenizer_encode_parts(tok, tp, np, pflags, &ids, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        mp_tokens_free(&ids);
        return;
    }
    char *cat = malloc(total ? total : 1);
    if (!cat)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < np; i++) {
        memcpy(cat + o, parts[i].data, parts[i].len);
        o += parts[i].len;
    }
    if (all_on || all_off) {
        mp_tokens whole = {0};
        rc = mp_fuzz_encode_checked(tok, cat, total, pflags | (all_on ? MP_TOK_PARSE_SPECIAL : 0), true, &whole);
        if (rc != MP_OK || (!same(&ids, &whole) && !added_token_straddles(&whole, parts, np, flags)))
            mp_fuzz_fail("encode_parts differs from encode of the concatenation (%zu vs %zu ids)", ids.n, whole.n);
        mp_tokens_free(&whole);
    } else {
        char *dec;
        size_t dl, skip = 0;
        if (mp_tokenizer_decode(tok, ids.ids, ids.n, 0, &dec, &dl, &err) != MP_OK)
            mp_fuzz_fail("decode of encode_parts ids failed: %s", err.msg);
        if (flags & MP_TOK_ADD_BOS)
            mp_tokenizer_token_bytes(tok, ids.ids[0], &skip);
        if (dl - skip != total || memcmp(dec + skip, cat, total) != 0)
            mp_fuzz_fail("decode(encode_parts(parts)) differs from the parts");
        free(dec);
    }
    free(cat);
    mp_tokens_free(&ids);
}

static size_t count_control(const mp_tokens *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        n += mp_tokenizer_token_type(tok, t->ids[i]) == MP_TOKEN_CONTROL;
    return n;
}

static void chat(uint8_t roles, uint8_t fmt_byte, const uint8_t *p, size_t n)
{
    mp_fuzz_part parts[4];
    size_t np = mp_fuzz_split(p, n, parts, 4);
    mp_chat_msg msgs[4], empty[4];
    for (size_t i = 0; i < np; i++) {
        mp_chat_role role = (mp_chat_role)((roles >> (2 * i) & 3) % 3);
        msgs[i] = (mp_chat_msg){role, (const char *)parts[i].data, parts[i].len};
        empty[i] = (mp_chat_msg){role, "", 0};
    }
    mp_chat_format fmt = (mp_chat_format)(fmt_byte % 5 + 1);
    bool gen = fmt_byte & 0x80;
    mp_tokens ids = {0}, ref = {0};
    mp_error err = {0};
    int rc = mp_chat_encode(tok, fmt, msgs, np, gen, &ids, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
    } else {
        if (mp_chat_encode(tok, fmt, empty, np, gen, &ref, &err) != MP_OK)
            mp_fuzz_fail("chat with empty messages failed: %s", err.msg);
        if (count_control(&ids) != count_control(&ref))
            mp_fuzz_fail("message text produced CONTROL tokens (%zu vs %zu from the template alone)",
                         count_control(&ids), count_control(&ref));
    }
    mp_tokens_free(&ids);
    mp_tokens_free(&ref);
}

static void decode_ids(unsigned flags, const uint8_t *p, size_t n)
{
    size_t count = n / 4;
    int32_t *ids = calloc(count ? count : 1, sizeof *ids);
    if (!ids)
        abort();
    bool in_range = true;
    for (size_t i = 0; i < count; i++) {
        memcpy(&ids[i], p + 4 * i, 4);
        /* mostly valid ids, so that decoding gets past the first one */
        if (!(flags & 4))
            ids[i] = (int32_t)((uint32_t)ids[i] % (mp_tokenizer_n_tokens(tok) + 2)) - 1;
        in_range &= ids[i] >= 0 && (uint32_t)ids[i] < mp_tokenizer_n_tokens(tok);
    }
    char *dec = NULL;
    size_t dl = 0;
    mp_error err = {0};
    int rc = mp_tokenizer_decode(tok, ids, count, flags & 1 ? MP_TOK_DECODE_SKIP_SPECIAL : 0, &dec, &dl, &err);
    if ((rc == MP_OK) != in_range)
        mp_fuzz_fail("decode returned %d for ids %s in range", rc, in_range ? "all" : "not all");
    if (rc)
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
    mp_detok d;
    mp_detok_init(&d, tok, flags & 1 ? MP_TOK_DECODE_SKIP_SPECIAL : 0);
    for (size_t i = 0; i < count; i++) {
        const char *piece;
        size_t plen;
        rc = mp_detok_push(&d, ids[i], &piece, &plen, &err);
        if (rc) {
            mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
            continue;
        }
        if (!mp_fuzz_utf8_valid(piece, plen))
            mp_fuzz_fail("detokenizer released invalid UTF-8");
    }
    const char *piece;
    size_t plen;
    if (mp_detok_flush(&d, &piece, &plen, &err) != MP_OK || !mp_fuzz_utf8_valid(piece, plen))
        mp_fuzz_fail("detokenizer flush failed or released invalid UTF-8");
    mp_detok_free(&d);
    free(dec);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned ctl = data[0];
    unsigned flags = ctl & 7, mode = ctl >> 3 & 3;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (mode) {
    case 0:
        (void)mp_fuzz_encode_checked(tok, (const char *)p, n, flags, true, NULL);
        break;
    case 1:
        encode_parts(flags, ctl >> 5, p, n);
        break;
    case 2:
        if (n >= 2)
            chat(p[0], p[1], p + 2, n - 2);
        break;
    default:
        decode_ids(flags, p, n);
        break;
    }
    return 0;
}
