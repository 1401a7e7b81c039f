/* Encoding: added-token splitting, then pre-tokenization and BPE of the text between added
 * tokens, as HF `tokenizers` does (its AddedVocabulary splits first, the pre-tokenizer and model
 * only ever see the text in between). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void mp_tokens_free(mp_tokens *t)
{
    free(t->ids);
    memset(t, 0, sizeof *t);
}

int mp_tokens_push(mp_tokens *t, int32_t id, mp_error *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        if (cap > SIZE_MAX / sizeof(int32_t))
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory for token ids");
        int32_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory for %zu token ids", cap);
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return MP_OK;
}

typedef struct encoder {
    const mp_tokenizer *t;
    mp_tokens *out;
    mp_pieces pieces;
    mp_bpe_scratch bpe;
    char *pend; /* plain text waiting for the next added token (or the end) */
    size_t pend_n, pend_cap;
} encoder;

static int pend_append(encoder *e, const char *s, size_t n, mp_error *err)
{
    if (n == 0)
        return MP_OK;
    if (e->pend_cap - e->pend_n < n) {
        size_t cap = e->pend_cap ? e->pend_cap : 4096;
        while (cap - e->pend_n < n) {
            if (cap > SIZE_MAX / 2)
                return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "text too long");
            cap *= 2;
        }
        char *p = realloc(e->pend, cap);
        if (!p)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory for %zu bytes of text", cap);
        e->pend = p;
        e->pend_cap = cap;
    }
    memcpy(e->pend + e->pend_n, s, n);
    e->pend_n += n;
    return MP_OK;
}

/* Pre-tokenizes and BPE-encodes valid UTF-8 text. */
static int encode_valid(encoder *e, const char *s, size_t n, mp_error *err)
{
    int rc = mp_pretok_split(e->t->pre, s, n, &e->pieces, err);
    for (size_t i = 0; !rc && i < e->pieces.n; i++)
        rc = mp_bpe_encode_piece(e->t, (const uint8_t *)s + e->pieces.v[i].off, e->pieces.v[i].len, &e->bpe, e->out,
                                 err);
    return rc;
}

/* Encodes the pending text. Invalid UTF-8 only gets here with MP_TOK_INVALID_UTF8_AS_BYTES: each
 * invalid byte is then a piece of its own, the valid runs around it are encoded normally. */
static int pend_flush(encoder *e, mp_error *err)
{
    const char *s = e->pend;
    size_t n = e->pend_n, pos = 0;
    e->pend_n = 0;
    while (pos < n) {
        size_t valid = mp_utf8_valid_prefix((const uint8_t *)s + pos, n - pos);
        if (valid > 0) {
            int rc = encode_valid(e, s + pos, valid, err);
            if (rc)
                return rc;
            pos += valid;
        }
        if (pos < n) {
            int rc = mp_bpe_encode_piece(e->t, (const uint8_t *)s + pos, 1, &e->bpe, e->out, err);
            if (rc)
                return rc;
            pos++;
        }
    }
    return MP_OK;
}

static int encode_part(encoder *e, const char *s, size_t n, bool parse_special, mp_error *err)
{
    const mp_tokenizer *t = e->t;
    const uint8_t *u = (const uint8_t *)s;
    size_t start = 0;
    if (t->has_added) {
        for (size_t i = 0; i < n;) {
            if (t->trie.root_child[u[i]]) {
                size_t ml = 0;
                int32_t id = mp_tok_trie_match(t, u + i, n - i, parse_special, &ml);
                if (id >= 0) {
                    int rc = pend_append(e, s + start, i - start, err);
                    if (!rc)
                        rc = pend_flush(e, err);
                    if (!rc)
                        rc = mp_tokens_push(e->out, id, err);
                    if (rc)
                        return rc;
                    i += ml;
                    start = i;
                    continue;
                }
            }
            i++;
        }
    }
    return pend_append(e, s + start, n - start, err);
}

int mp_tokenizer_encode_parts(const mp_tokenizer *tok, const mp_tok_part *parts, size_t n_parts, unsigned flags,
                              mp_tokens *out, mp_error *err)
{
    if (!(flags & MP_TOK_INVALID_UTF8_AS_BYTES)) {
        for (size_t p = 0; p < n_parts; p++) {
            size_t valid = mp_utf8_valid_prefix((const uint8_t *)parts[p].text, parts[p].len);
            if (valid != parts[p].len) {
                if (n_parts == 1)
                    return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "text is not valid UTF-8 at byte %zu", valid);
                return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "text part %zu is not valid UTF-8 at byte %zu", p, valid);
            }
        }
    }
    if (flags & MP_TOK_ADD_BOS) {
        if (tok->bos_id < 0)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "the tokenizer has no BOS token");
        int rc = mp_tokens_push(out, tok->bos_id, err);
        if (rc)
            return rc;
    }
    encoder e = {.t = tok, .out = out};
    int rc = MP_OK;
    for (size_t p = 0; !rc && p < n_parts; p++)
        rc = encode_part(&e, parts[p].text, parts[p].len, parts[p].parse_special, err);
    if (!rc)
        rc = pend_flush(&e, err);
    free(e.pend);
    mp_pieces_free(&e.pieces);
    mp_bpe_scratch_free(&e.bpe);
    return rc;
}

int mp_tokenizer_encode(const mp_tokenizer *tok, const char *text, size_t len, unsigned flags, mp_tokens *out,
                        mp_error *err)
{
    mp_tok_part part = {.text = text, .len = len, .parse_special = (flags & MP_TOK_PARSE_SPECIAL) != 0};
    return mp_tokenizer_encode_parts(tok, &part, 1, flags & ~(unsigned)MP_TOK_PARSE_SPECIAL, out, err);
}
