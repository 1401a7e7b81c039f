/* Decoding: ids to bytes, and the streaming detokenizer that releases only whole characters. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* The reasoning tags are markup of the answer that its reader (run, chat and serve split reasoning
 * from the answer by them) must see: the official DeepSeek tokenizers have them non-special, and a
 * tokenizer that marks them CONTROL (the fixture's, a hand-made GGUF) must decode to the same text. */
static bool is_reasoning_tag(const char *s, size_t n)
{
    return (n == 7 && !memcmp(s, "<think>", 7)) || (n == 8 && !memcmp(s, "</think>", 8));
}

static const char *decode_one(const mp_tokenizer *t, int32_t id, unsigned flags, size_t *len, mp_error *err)
{
    if (id < 0 || (uint32_t)id >= t->n_tokens) {
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "token id %d is out of range (%u tokens)", id, t->n_tokens);
        return NULL;
    }
    const char *raw = mp_tok_raw(t, id, len);
    if ((flags & MP_TOK_DECODE_SKIP_SPECIAL) && t->types[id] == MP_TOKEN_CONTROL && !is_reasoning_tag(raw, *len)) {
        *len = 0;
        return "";
    }
    return raw;
}

int mp_tokenizer_decode(const mp_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags, char **out,
                        size_t *out_len, mp_error *err)
{
    *out = NULL;
    *out_len = 0;
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++) {
        if (!decode_one(tok, ids[i], flags, &len, err))
            return MP_ERR_INPUT;
        total += len; /* at most MP_TOK_MAX_TOKEN_LEN each: n * 64 KiB cannot wrap a size_t for any n
                       * that fits in memory */
    }
    char *s = malloc(total + 1);
    if (!s)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory decoding %zu tokens", n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b = decode_one(tok, ids[i], flags, &len, err);
        memcpy(s + o, b, len);
        o += len;
    }
    s[o] = 0;
    *out = s;
    *out_len = o;
    return MP_OK;
}

/* ---- streaming ------------------------------------------------------------------------------ */

void mp_detok_init(mp_detok *d, const mp_tokenizer *tok, unsigned flags)
{
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->flags = flags;
}

void mp_detok_free(mp_detok *d)
{
    free(d->buf);
    memset(d, 0, sizeof *d);
}

static int detok_reserve(mp_detok *d, size_t need, mp_error *err)
{
    if (d->cap >= need)
        return MP_OK;
    size_t cap = d->cap ? d->cap : 256;
    while (cap < need)
        cap *= 2;
    char *b = realloc(d->buf, cap);
    if (!b)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    d->buf = b;
    d->cap = cap;
    return MP_OK;
}

static const char replacement[3] = {(char)0xef, (char)0xbf, (char)0xbd}; /* U+FFFD */

/* How many bytes a character starting with `lead` has (0: lead can start none), and the range its
 * second byte must fall in (the first-byte-dependent limits exclude overlongs, surrogates and
 * code points above U+10FFFF). */
static size_t utf8_expect(uint8_t lead, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf)
        return 2;
    if (lead >= 0xe0 && lead <= 0xef) {
        if (lead == 0xe0)
            *lo = 0xa0;
        if (lead == 0xed)
            *hi = 0x9f;
        return 3;
    }
    if (lead >= 0xf0 && lead <= 0xf4) {
        if (lead == 0xf0)
            *lo = 0x90;
        if (lead == 0xf4)
            *hi = 0x8f;
        return 4;
    }
    return 0;
}

int mp_detok_push(mp_detok *d, int32_t id, const char **text, size_t *len, mp_error *err)
{
    *text = "";
    *len = 0;
    size_t blen;
    const char *bytes = decode_one(d->tok, id, d->flags, &blen, err);
    if (!bytes)
        return MP_ERR_INPUT;
    size_t np = d->n_pending, total = np + blen;
    /* every input byte yields at most 3 output bytes (an invalid byte becomes U+FFFD) */
    if (detok_reserve(d, 3 * total + 1, err))
        return MP_ERR_INPUT;
    uint8_t held[4];
    memcpy(held, d->pending, np);
#define IN(k) ((k) < np ? held[(k)] : (uint8_t)bytes[(k)-np])
    size_t o = 0, i = 0;
    d->n_pending = 0;
    while (i < total) {
        uint8_t c = IN(i);
        if (c < 0x80) {
            d->buf[o++] = (char)c;
            i++;
            continue;
        }
        uint8_t lo, hi;
        size_t need = utf8_expect(c, &lo, &hi);
        if (need == 0) {
            memcpy(d->buf + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        size_t k = 1;
        while (k < need && i + k < total) {
            uint8_t cc = IN(i + k);
            if (k == 1 ? (cc < lo || cc > hi) : ((cc & 0xc0u) != 0x80u))
                break;
            k++;
        }
        if (k == need) {
            for (size_t j = 0; j < need; j++)
                d->buf[o++] = (char)IN(i + j);
            i += need;
        } else if (i + k == total) {
            /* a valid start of a character that the next token may complete */
            for (size_t j = 0; j < k; j++)
                d->pending[j] = IN(i + j);
            d->n_pending = k;
            i = total;
        } else {
            memcpy(d->buf + o, replacement, 3); /* the maximal invalid subpart becomes one U+FFFD */
            o += 3;
            i += k;
        }
    }
#undef IN
    d->buf[o] = 0;
    *text = d->buf;
    *len = o;
    return MP_OK;
}

int mp_detok_flush(mp_detok *d, const char **text, size_t *len, mp_error *err)
{
    *text = "";
    *len = 0;
    if (d->n_pending == 0)
        return MP_OK;
    if (detok_reserve(d, 4, err))
        return MP_ERR_INPUT;
    memcpy(d->buf, replacement, 3);
    d->buf[3] = 0;
    d->n_pending = 0;
    *text = d->buf;
    *len = 3;
    return MP_OK;
}
