/* Vocabulary look-ups: open-addressing hash tables over token bytes and over merge pairs, and the
 * tokenizer's property accessors. The tables store ids (+1, so 0 marks an empty slot) and compare
 * keys against the token arrays, so they cost 4 bytes a slot. */
#include <string.h>
#include <xxhash.h>

#include "tok_internal.h"

uint64_t mp_tok_hash_bytes(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

uint64_t mp_tok_hash_u64(uint64_t x)
{
    /* splitmix64 finaliser: spreads (left, right) pairs, whose bits are mostly small ids */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

int64_t mp_tok_merge_find(const mp_tokenizer *t, int32_t left, int32_t right, int32_t *result)
{
    if (!t->merge_slots)
        return -1;
    uint64_t key = pair_key(left, right);
    for (uint64_t h = mp_tok_hash_u64(key);; h++) {
        uint32_t v = t->merge_slots[h & t->merge_mask];
        if (v == 0)
            return -1;
        uint32_t rank = v - 1;
        if (t->merge_lr[2 * rank] == left && t->merge_lr[2 * rank + 1] == right) {
            *result = t->merge_result[rank];
            return rank;
        }
    }
}

static int32_t bytes_find(const mp_tokenizer *t, const uint32_t *slots, uint32_t mask, bool raw, const char *s,
                          size_t n)
{
    if (!slots)
        return -1;
    for (uint64_t h = mp_tok_hash_bytes(s, n);; h++) {
        uint32_t v = slots[h & mask];
        if (v == 0)
            return -1;
        size_t len;
        const char *k = raw ? mp_tok_raw(t, (int32_t)(v - 1), &len) : mp_tok_text(t, (int32_t)(v - 1), &len);
        if (len == n && memcmp(k, s, n) == 0)
            return (int32_t)(v - 1);
    }
}

int32_t mp_tok_bpe_find(const mp_tokenizer *t, const char *s, size_t n)
{
    return bytes_find(t, t->bpe_slots, t->bpe_mask, true, s, n);
}

int32_t mp_tok_added_find(const mp_tokenizer *t, const char *s, size_t n)
{
    return bytes_find(t, t->added_slots, t->added_mask, false, s, n);
}

/* ---- properties ----------------------------------------------------------------------------- */

uint32_t mp_tokenizer_n_tokens(const mp_tokenizer *tok)
{
    return tok->n_tokens;
}

int32_t mp_tokenizer_bos(const mp_tokenizer *tok)
{
    return tok->bos_id;
}

int32_t mp_tokenizer_eos(const mp_tokenizer *tok)
{
    return tok->eos_id;
}

bool mp_tokenizer_add_bos(const mp_tokenizer *tok)
{
    return tok->add_bos;
}

bool mp_tokenizer_add_eos(const mp_tokenizer *tok)
{
    return tok->add_eos;
}

int mp_tokenizer_token_type(const mp_tokenizer *tok, int32_t id)
{
    if (id < 0 || (uint32_t)id >= tok->n_tokens)
        return 0;
    return tok->types[id];
}

const char *mp_tokenizer_pre_name(const mp_tokenizer *tok)
{
    return tok->pre_name;
}

const char *mp_tokenizer_chat_template(const mp_tokenizer *tok, size_t *len)
{
    if (len)
        *len = tok->chat_template_len;
    return tok->chat_template;
}

int32_t mp_tokenizer_find(const mp_tokenizer *tok, const char *text, size_t len)
{
    int32_t id = mp_tok_added_find(tok, text, len);
    return id >= 0 ? id : mp_tok_bpe_find(tok, text, len);
}

const char *mp_tokenizer_token_bytes(const mp_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= tok->n_tokens) {
        *len = 0;
        return NULL;
    }
    return mp_tok_raw(tok, id, len);
}
