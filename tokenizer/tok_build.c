/* mp_tokenizer_build: turns a format-independent spec (what GGUF, tokenizer.json and our blob all
 * reduce to) into the look-up structures encode/decode use, validating everything on the way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define SRC(spec) ((spec)->source ? (spec)->source : "tokenizer")

void mp_tokenizer_free(mp_tokenizer *t)
{
    if (!t)
        return;
    free(t->types);
    free(t->tflags);
    free(t->text_off);
    free(t->text);
    free(t->raw_off);
    free(t->raw);
    free(t->merge_lr);
    free(t->merge_result);
    free(t->merge_slots);
    free(t->bpe_slots);
    free(t->added_slots);
    mp_tok_trie_free(&t->trie);
    mp_pretok_free(t->pre);
    free(t->pre_name);
    free(t->chat_template);
    free(t);
}

/* A power-of-two slot count at least twice `n` (load factor <= 1/2 keeps probes short). */
static uint32_t *slots_alloc(uint64_t n, uint32_t *mask)
{
    uint64_t size = 16;
    while (size < 2 * n)
        size <<= 1;
    *mask = (uint32_t)(size - 1);
    return calloc(size, sizeof(uint32_t));
}

/* Inserts id under the bytes s[0..n); returns the id already there with equal bytes, or -1. */
static int32_t slots_insert(uint32_t *slots, uint32_t mask, const char *s, size_t n, int32_t id, const uint32_t *off,
                            const char *base)
{
    for (uint64_t h = mp_tok_hash_bytes(s, n);; h++) {
        uint32_t *slot = &slots[h & mask];
        if (*slot == 0) {
            *slot = (uint32_t)id + 1;
            return -1;
        }
        uint32_t o = *slot - 1;
        size_t len = off[o + 1] - off[o];
        if (len == n && memcmp(base + off[o], s, n) == 0)
            return (int32_t)o;
    }
}

static int32_t slots_find(const uint32_t *slots, uint32_t mask, const char *s, size_t n, const uint32_t *off,
                          const char *base)
{
    for (uint64_t h = mp_tok_hash_bytes(s, n);; h++) {
        uint32_t v = slots[h & mask];
        if (v == 0)
            return -1;
        uint32_t o = v - 1;
        size_t len = off[o + 1] - off[o];
        if (len == n && memcmp(base + off[o], s, n) == 0)
            return (int32_t)o;
    }
}

/* Shortens a token for an error message: at most 40 bytes, cut on a character boundary. */
static void quote_token(const char *s, size_t n, char out[48])
{
    size_t k = n < 40 ? n : 40;
    while (k > 0 && k < n && ((unsigned char)s[k] & 0xc0u) == 0x80u)
        k--;
    size_t j = 0;
    for (size_t i = 0; i < k; i++)
        out[j++] = (s[i] == '\n' || s[i] == '\r' || s[i] == 0) ? '?' : s[i];
    if (k < n) {
        out[j++] = '.';
        out[j++] = '.';
    }
    out[j] = 0;
}

/* The decoded bytes of a token (see docs/TOKENIZER.md): NORMAL tokens map back through the
 * byte-level alphabet (falling back to their UTF-8 when a character is outside it, as HF's
 * ByteLevel decoder does); BYTE tokens "<0xAB>" are that byte; UNUSED are empty; the rest are
 * their text. Writes into out (room for n bytes: decoding never grows a token). */
static size_t token_raw(int type, const char *s, size_t n, char *out, bool *bpe)
{
    *bpe = false;
    if (type == MP_TOKEN_UNUSED)
        return 0;
    if (type == MP_TOKEN_BYTE && n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
        unsigned v;
        char hex[3] = {s[3], s[4], 0};
        char *end;
        v = (unsigned)strtoul(hex, &end, 16);
        if (*end == 0 && hex[0] != '+' && hex[0] != '-' && hex[0] != ' ') {
            out[0] = (char)v;
            return 1;
        }
    }
    if (type == MP_TOKEN_NORMAL && n > 0) {
        size_t j = 0, i = 0;
        while (i < n) {
            uint32_t cp;
            size_t l = mp_utf8_decode((const uint8_t *)s + i, n - i, &cp);
            int b = l ? mp_bytelevel_byte(cp) : -1;
            if (b < 0)
                break;
            out[j++] = (char)b;
            i += l;
        }
        if (i == n) {
            *bpe = true;
            return j;
        }
    }
    memcpy(out, s, n);
    return n;
}

static int build_tokens(mp_tokenizer *t, const mp_tokenizer_spec *spec, mp_error *err)
{
    const char *src = SRC(spec);
    uint32_t n = spec->n_tokens;
    uint64_t total = 0, added = 0;
    for (uint32_t i = 0; i < n; i++) {
        int type = spec->types ? spec->types[i] : MP_TOKEN_NORMAL;
        if (type < MP_TOKEN_NORMAL || type > MP_TOKEN_BYTE)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "token %u has unknown type %d", i, type);
        size_t len = spec->tokens[i].len;
        if (type == MP_TOKEN_CONTROL || type == MP_TOKEN_USER_DEFINED || type == MP_TOKEN_UNKNOWN) {
            added += len;
            if (added > MP_TOK_MAX_ADDED_TEXT)
                return mp_fail(err, MP_ERR_INPUT, src, NULL, "special/added token texts exceed %u bytes in all",
                               MP_TOK_MAX_ADDED_TEXT);
        }
        if (len > MP_TOK_MAX_TOKEN_LEN)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "token %u is %zu bytes long (at most %u)", i, len,
                           MP_TOK_MAX_TOKEN_LEN);
        if (len > 0 && !spec->tokens[i].ptr)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "token %u has no text", i);
        if (mp_utf8_valid_prefix((const uint8_t *)spec->tokens[i].ptr, len) != len)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "token %u is not valid UTF-8", i);
        total += len;
        if (total > MP_TOK_MAX_TEXT_TOTAL)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "token texts exceed %u bytes in all", MP_TOK_MAX_TEXT_TOTAL);
    }
    t->types = malloc(n);
    t->tflags = calloc(n, 1);
    t->text_off = malloc(((size_t)n + 1) * sizeof(uint32_t));
    t->raw_off = malloc(((size_t)n + 1) * sizeof(uint32_t));
    t->text = malloc(total + 1);
    t->raw = malloc(total + 1);
    if (!t->types || !t->tflags || !t->text_off || !t->raw_off || !t->text || !t->raw)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory for %u tokens", n);
    uint32_t to = 0, ro = 0;
    for (uint32_t i = 0; i < n; i++) {
        int type = spec->types ? spec->types[i] : MP_TOKEN_NORMAL;
        const char *s = spec->tokens[i].ptr;
        size_t len = spec->tokens[i].len;
        t->types[i] = (uint8_t)type;
        t->text_off[i] = to;
        if (len)
            memcpy(t->text + to, s, len);
        to += (uint32_t)len;
        t->raw_off[i] = ro;
        bool bpe;
        ro += (uint32_t)token_raw(type, s, len, t->raw + ro, &bpe);
        if (bpe)
            t->tflags[i] |= MP_TOKF_BPE;
    }
    t->text_off[n] = to;
    t->raw_off[n] = ro;
    t->n_tokens = n;

    /* BPE tokens by their bytes; distinct texts in the alphabet decode to distinct bytes, so a
     * collision here means two tokens with the same text */
    t->bpe_slots = slots_alloc(n, &t->bpe_mask);
    if (!t->bpe_slots)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        if (!(t->tflags[i] & MP_TOKF_BPE))
            continue;
        size_t len;
        const char *r = mp_tok_raw(t, (int32_t)i, &len);
        int32_t dup = slots_insert(t->bpe_slots, t->bpe_mask, r, len, (int32_t)i, t->raw_off, t->raw);
        if (dup >= 0) {
            char q[48];
            size_t tl;
            const char *tx = mp_tok_text(t, (int32_t)i, &tl);
            quote_token(tx, tl, q);
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "duplicate token '%s' (ids %d and %u)", q, dup, i);
        }
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_token[b] = mp_tok_bpe_find(t, &c, 1);
    }

    /* added tokens: matched in input text by the trie, looked up by text by the table */
    t->added_slots = slots_alloc(n, &t->added_mask);
    if (!t->added_slots || mp_tok_trie_init(&t->trie))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        int type = t->types[i];
        if (type != MP_TOKEN_CONTROL && type != MP_TOKEN_USER_DEFINED && type != MP_TOKEN_UNKNOWN)
            continue;
        size_t len;
        const char *tx = mp_tok_text(t, (int32_t)i, &len);
        if (len == 0)
            continue; /* an empty added token would match everywhere: it is only an id */
        int32_t dup = slots_insert(t->added_slots, t->added_mask, tx, len, (int32_t)i, t->text_off, t->text);
        if (dup >= 0) {
            char q[48];
            quote_token(tx, len, q);
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "duplicate token '%s' (ids %d and %u)", q, dup, i);
        }
        if (mp_tok_trie_insert(&t->trie, tx, len, (int32_t)i))
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
        t->has_added = true;
    }
    return MP_OK;
}

/* Splits a "left right" merge line at its first space after the first byte (a token never starts
 * with a space in the byte-level alphabet, but llama.cpp allows it, so do we). */
static bool merge_split(mp_tok_str line, mp_tok_str *l, mp_tok_str *r)
{
    for (size_t i = 1; i < line.len; i++) {
        if (line.ptr[i] == ' ') {
            l->ptr = line.ptr;
            l->len = i;
            r->ptr = line.ptr + i + 1;
            r->len = line.len - i - 1;
            return r->len > 0;
        }
    }
    return false;
}

static int build_merges(mp_tokenizer *t, const mp_tokenizer_spec *spec, mp_error *err)
{
    const char *src = SRC(spec);
    uint32_t n = spec->n_merges;
    if (n == 0)
        return MP_OK;
    if (n > MP_TOK_MAX_MERGES)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "%u merges (at most %u)", n, MP_TOK_MAX_MERGES);
    if ((spec->merges != NULL) == (spec->merge_pairs != NULL))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "merges must be given either as strings or as pairs");

    /* merges name tokens by their spec text: index the NORMAL tokens by it */
    uint32_t mask;
    uint32_t *by_text = slots_alloc(t->n_tokens, &mask);
    char *cat = malloc(2 * MP_TOK_MAX_TOKEN_LEN + 1);
    t->merge_lr = malloc((size_t)n * 2 * sizeof(int32_t));
    t->merge_result = malloc((size_t)n * sizeof(int32_t));
    t->merge_slots = slots_alloc(n, &t->merge_mask);
    int rc = MP_OK;
    if (!by_text || !cat || !t->merge_lr || !t->merge_result || !t->merge_slots) {
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory for %u merges", n);
        goto done;
    }
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        if (t->types[i] != MP_TOKEN_NORMAL)
            continue;
        size_t len;
        const char *tx = mp_tok_text(t, (int32_t)i, &len);
        int32_t dup = slots_insert(by_text, mask, tx, len, (int32_t)i, t->text_off, t->text);
        if (dup >= 0) {
            char q[48];
            quote_token(tx, len, q);
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "duplicate token '%s' (ids %d and %u)", q, dup, i);
            goto done;
        }
    }
    for (uint32_t m = 0; m < n; m++) {
        mp_tok_str l, r;
        if (spec->merges) {
            if (!spec->merges[m].ptr || !merge_split(spec->merges[m], &l, &r)) {
                char q[48];
                mp_tok_str line = spec->merges[m];
                quote_token(line.ptr ? line.ptr : "", line.ptr ? line.len : 0, q);
                rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "merge %u ('%s') is not two tokens separated by a space", m,
                             q);
                goto done;
            }
        } else {
            l = spec->merge_pairs[2 * m];
            r = spec->merge_pairs[2 * m + 1];
        }
        if (l.len > MP_TOK_MAX_TOKEN_LEN || r.len > MP_TOK_MAX_TOKEN_LEN || (!l.ptr && l.len) || (!r.ptr && r.len)) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "merge %u names an over-long token", m);
            goto done;
        }
        int32_t li = slots_find(by_text, mask, l.ptr, l.len, t->text_off, t->text);
        int32_t ri = slots_find(by_text, mask, r.ptr, r.len, t->text_off, t->text);
        if (l.len)
            memcpy(cat, l.ptr, l.len);
        if (r.len)
            memcpy(cat + l.len, r.ptr, r.len);
        int32_t res = (li >= 0 && ri >= 0) ? slots_find(by_text, mask, cat, l.len + r.len, t->text_off, t->text) : -1;
        if (li < 0 || ri < 0 || res < 0) {
            char q[48];
            const mp_tok_str *bad = li < 0 ? &l : &r;
            if (li >= 0 && ri >= 0)
                quote_token(cat, l.len + r.len, q);
            else
                quote_token(bad->ptr ? bad->ptr : "", bad->ptr ? bad->len : 0, q);
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "merge %u: '%s' is not a token of the vocabulary", m, q);
            goto done;
        }
        int32_t old;
        if (mp_tok_merge_find(t, li, ri, &old) >= 0) {
            char q[48];
            quote_token(cat, l.len + r.len, q);
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "merge %u ('%s') repeats an earlier merge", m, q);
            goto done;
        }
        t->merge_lr[2 * m] = li;
        t->merge_lr[2 * m + 1] = ri;
        t->merge_result[m] = res;
        t->n_merges = m + 1;
        uint64_t key = ((uint64_t)(uint32_t)li << 32) | (uint32_t)ri;
        for (uint64_t h = mp_tok_hash_u64(key);; h++) {
            uint32_t *slot = &t->merge_slots[h & t->merge_mask];
            if (*slot == 0) {
                *slot = m + 1;
                break;
            }
        }
    }
done:
    free(by_text);
    free(cat);
    return rc;
}

static int check_id(const mp_tokenizer_spec *spec, int64_t id, const char *what, int32_t *out, mp_error *err)
{
    if (id < 0) {
        *out = -1;
        return MP_OK;
    }
    if (id >= spec->n_tokens)
        return mp_fail(err, MP_ERR_INPUT, SRC(spec), NULL, "%s id %lld is out of range (%u tokens)", what,
                       (long long)id, spec->n_tokens);
    *out = (int32_t)id;
    return MP_OK;
}

static int build_pretok(mp_tokenizer *t, const mp_tokenizer_spec *spec, mp_error *err)
{
    const char *src = SRC(spec);
    const char *name;
    if (spec->n_pre_regexes > 0) {
        if (spec->n_pre_regexes > 256 || !spec->pre_regexes)
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "bad pre-tokenizer regex list");
        const char **re = malloc(spec->n_pre_regexes * sizeof *re);
        size_t *lens = malloc(spec->n_pre_regexes * sizeof *lens);
        if (!re || !lens) {
            free(re);
            free(lens);
            return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
        }
        for (uint32_t i = 0; i < spec->n_pre_regexes; i++) {
            re[i] = spec->pre_regexes[i].ptr ? spec->pre_regexes[i].ptr : "";
            lens[i] = spec->pre_regexes[i].len;
        }
        int rc = mp_pretok_compile(re, lens, spec->n_pre_regexes, src, &t->pre, err);
        free(re);
        free(lens);
        if (rc)
            return rc;
        name = mp_pretok_builtin_match(spec->pre_regexes, spec->n_pre_regexes);
        if (!name)
            name = (spec->pre && spec->pre[0]) ? spec->pre : "custom";
    } else if (spec->pre && spec->pre[0]) {
        int rc = mp_pretok_compile_builtin(spec->pre, src, &t->pre, err);
        if (rc)
            return rc;
        name = spec->pre;
    } else {
        name = "none";
    }
    t->pre_name = strdup(name);
    if (!t->pre_name)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
    return MP_OK;
}

int mp_tokenizer_build(const mp_tokenizer_spec *spec, mp_tokenizer **out, mp_error *err)
{
    *out = NULL;
    const char *src = SRC(spec);
    if (spec->n_tokens == 0 || !spec->tokens)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "the vocabulary is empty");
    if (spec->n_tokens > MP_TOK_MAX_TOKENS)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "%u tokens (at most %u)", spec->n_tokens, MP_TOK_MAX_TOKENS);
    mp_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
    int rc = build_tokens(t, spec, err);
    if (!rc)
        rc = build_merges(t, spec, err);
    if (!rc)
        rc = check_id(spec, spec->bos_id, "BOS", &t->bos_id, err);
    if (!rc)
        rc = check_id(spec, spec->eos_id, "EOS", &t->eos_id, err);
    if (!rc)
        rc = check_id(spec, spec->unk_id, "unknown-token", &t->unk_id, err);
    if (!rc && spec->add_bos && t->bos_id < 0)
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "add_bos_token is set but there is no BOS token");
    if (!rc)
        rc = build_pretok(t, spec, err);
    if (!rc && spec->chat_template.ptr) {
        if (spec->chat_template.len > MP_TOK_MAX_CHAT_TEMPLATE) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "chat template is %zu bytes (at most %u)",
                         spec->chat_template.len, MP_TOK_MAX_CHAT_TEMPLATE);
        } else if (memchr(spec->chat_template.ptr, 0, spec->chat_template.len)) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "chat template contains a NUL byte");
        } else if (!(t->chat_template = malloc(spec->chat_template.len + 1))) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
        } else {
            memcpy(t->chat_template, spec->chat_template.ptr, spec->chat_template.len);
            t->chat_template[spec->chat_template.len] = 0;
            t->chat_template_len = spec->chat_template.len;
        }
    }
    if (rc) {
        mp_tokenizer_free(t);
        return rc;
    }
    t->add_bos = spec->add_bos;
    t->add_eos = spec->add_eos && t->eos_id >= 0;
    t->ignore_merges = spec->ignore_merges;
    *out = t;
    return MP_OK;
}
