/* The tokenizer blob (docs/TOKENIZER.md, "Serialized form"): the build spec written out, little-
 * endian, with a checksum. Deserializing parses the blob into a spec and runs the same
 * mp_tokenizer_build as every other source, so it gets the same validation. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "mp_file.h"
#include "mp_num.h"
#include "tok_internal.h"

#define BLOB_MAGIC "MPTK"
#define BLOB_VERSION 1u
#define BLOB_HEADER 64u
#define BLOB_TRAILER 8u

enum {
    BLOB_ADD_BOS = 1u << 0,
    BLOB_ADD_EOS = 1u << 1,
    BLOB_IGNORE_MERGES = 1u << 2,
    BLOB_HAS_CHAT_TEMPLATE = 1u << 3,
    BLOB_KNOWN_FLAGS = 0xfu,
};

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

int mp_tokenizer_serialize(const mp_tokenizer *t, uint8_t **buf, size_t *len, mp_error *err)
{
    *buf = NULL;
    *len = 0;
    uint32_t n = t->n_tokens, nm = t->n_merges, np = mp_pretok_count(t->pre);
    uint64_t text_bytes = t->text_off[n];
    uint64_t re_bytes = 0;
    for (uint32_t i = 0; i < np; i++) {
        size_t l;
        mp_pretok_regex(t->pre, i, &l);
        re_bytes += l;
    }
    uint32_t name_len = (uint32_t)strlen(t->pre_name);
    uint64_t size = BLOB_HEADER + (uint64_t)n * 5 + text_bytes + (uint64_t)nm * 8 + (uint64_t)np * 4 + re_bytes +
                    name_len + t->chat_template_len + BLOB_TRAILER;
    if (re_bytes > UINT32_MAX || size > SIZE_MAX)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "tokenizer too large to serialize");
    uint8_t *b = calloc(1, (size_t)size);
    if (!b)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory serializing the tokenizer");
    uint32_t flags = (t->add_bos ? BLOB_ADD_BOS : 0) | (t->add_eos ? BLOB_ADD_EOS : 0) |
                     (t->ignore_merges ? BLOB_IGNORE_MERGES : 0) | (t->chat_template ? BLOB_HAS_CHAT_TEMPLATE : 0);
    memcpy(b, BLOB_MAGIC, 4);
    put_u32(b + 4, BLOB_VERSION);
    put_u32(b + 8, BLOB_HEADER);
    put_u32(b + 12, n);
    put_u32(b + 16, nm);
    put_u32(b + 20, np);
    put_u32(b + 24, flags);
    put_u32(b + 28, (uint32_t)t->bos_id);
    put_u32(b + 32, (uint32_t)t->eos_id);
    put_u32(b + 36, (uint32_t)t->unk_id);
    put_u32(b + 40, (uint32_t)text_bytes);
    put_u32(b + 44, name_len);
    put_u32(b + 48, (uint32_t)t->chat_template_len);
    put_u32(b + 52, (uint32_t)re_bytes);
    /* 56..63 reserved, zero */
    uint8_t *p = b + BLOB_HEADER;
    memcpy(p, t->types, n);
    p += n;
    for (uint32_t i = 0; i < n; i++, p += 4)
        put_u32(p, t->text_off[i + 1] - t->text_off[i]);
    memcpy(p, t->text, text_bytes);
    p += text_bytes;
    for (uint32_t m = 0; m < nm; m++, p += 8) {
        put_u32(p, (uint32_t)t->merge_lr[2 * m]);
        put_u32(p + 4, (uint32_t)t->merge_lr[2 * m + 1]);
    }
    for (uint32_t i = 0; i < np; i++, p += 4) {
        size_t l;
        mp_pretok_regex(t->pre, i, &l);
        put_u32(p, (uint32_t)l);
    }
    for (uint32_t i = 0; i < np; i++) {
        size_t l;
        const char *re = mp_pretok_regex(t->pre, i, &l);
        memcpy(p, re, l);
        p += l;
    }
    memcpy(p, t->pre_name, name_len);
    p += name_len;
    if (t->chat_template_len)
        memcpy(p, t->chat_template, t->chat_template_len);
    p += t->chat_template_len;
    put_u64(p, XXH3_64bits(b, (size_t)(p - b)));
    *buf = b;
    *len = (size_t)size;
    return MP_OK;
}

static int blob_id(const uint8_t *p, const char *src, const char *what, int64_t *out, mp_error *err)
{
    int32_t v = (int32_t)get_u32(p);
    if (v < -1)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: %s id %d is invalid", what, v);
    *out = v;
    return MP_OK;
}

int mp_tokenizer_deserialize(const uint8_t *buf, size_t len, const char *source, mp_tokenizer **out, mp_error *err)
{
    *out = NULL;
    const char *src = source ? source : "tokenizer blob";
    if (len < BLOB_HEADER + BLOB_TRAILER || memcmp(buf, BLOB_MAGIC, 4) != 0)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "not a tokenizer blob (bad magic or too short)");
    uint32_t version = get_u32(buf + 4);
    if (version != BLOB_VERSION)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob version %u is not supported (this build reads %u)",
                       version, BLOB_VERSION);
    uint32_t header = get_u32(buf + 8), n = get_u32(buf + 12), nm = get_u32(buf + 16), np = get_u32(buf + 20);
    uint32_t flags = get_u32(buf + 24), text_bytes = get_u32(buf + 40), name_len = get_u32(buf + 44);
    uint32_t tmpl_len = get_u32(buf + 48), re_bytes = get_u32(buf + 52);
    if (header != BLOB_HEADER || get_u64(buf + 56) != 0 || (flags & ~BLOB_KNOWN_FLAGS))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: bad header");
    if (n == 0 || n > MP_TOK_MAX_TOKENS || nm > MP_TOK_MAX_MERGES || np > 256 || text_bytes > MP_TOK_MAX_TEXT_TOTAL ||
        name_len > 256 || tmpl_len > MP_TOK_MAX_CHAT_TEMPLATE || re_bytes > (1u << 24))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: counts out of range");
    if (tmpl_len && !(flags & BLOB_HAS_CHAT_TEMPLATE))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: bad header");
    /* each term is below 2^32 and there are few: the sum cannot overflow 64 bits */
    uint64_t size = (uint64_t)BLOB_HEADER + (uint64_t)n * 5 + text_bytes + (uint64_t)nm * 8 + (uint64_t)np * 4 +
                    re_bytes + name_len + tmpl_len + BLOB_TRAILER;
    if (size != len)
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob is %zu bytes, its header describes %llu", len,
                       (unsigned long long)size);
    if (XXH3_64bits(buf, len - BLOB_TRAILER) != get_u64(buf + len - BLOB_TRAILER))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: checksum mismatch (corrupted)");

    mp_tokenizer_spec spec = {.source = src, .n_tokens = n, .n_merges = nm};
    if (blob_id(buf + 28, src, "BOS", &spec.bos_id, err) || blob_id(buf + 32, src, "EOS", &spec.eos_id, err) ||
        blob_id(buf + 36, src, "unknown-token", &spec.unk_id, err))
        return MP_ERR_INPUT;
    spec.add_bos = flags & BLOB_ADD_BOS;
    spec.add_eos = flags & BLOB_ADD_EOS;
    spec.ignore_merges = flags & BLOB_IGNORE_MERGES;

    const uint8_t *types8 = buf + BLOB_HEADER;
    const uint8_t *lens = types8 + n;
    const char *text = (const char *)(lens + (size_t)n * 4);
    const uint8_t *merges = (const uint8_t *)text + text_bytes;
    const uint8_t *re_lens = merges + (size_t)nm * 8;
    const char *re_text = (const char *)(re_lens + (size_t)np * 4);
    const char *name = re_text + re_bytes;
    const char *tmpl = name + name_len;

    mp_tok_str *tokens = malloc((size_t)n * sizeof *tokens);
    int32_t *types = malloc((size_t)n * sizeof *types);
    mp_tok_str *pairs = malloc(((size_t)nm * 2 + 1) * sizeof *pairs);
    mp_tok_str *regexes = malloc(((size_t)np + 1) * sizeof *regexes);
    char *pre_name = malloc((size_t)name_len + 1);
    int rc = MP_OK;
    if (!tokens || !types || !pairs || !regexes || !pre_name) {
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "out of memory");
        goto done;
    }
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = get_u32(lens + (size_t)i * 4);
        if (!mp_range_ok(off, l, text_bytes)) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: token %u overruns the token texts", i);
            goto done;
        }
        tokens[i] = (mp_tok_str){text + off, l};
        types[i] = types8[i];
        off += l;
    }
    if (off != text_bytes) {
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: token lengths do not add up");
        goto done;
    }
    /* merges are stored as token ids; the builder takes them as the tokens' texts */
    for (uint32_t m = 0; m < nm; m++) {
        uint32_t l = get_u32(merges + (size_t)m * 8), r = get_u32(merges + (size_t)m * 8 + 4);
        if (l >= n || r >= n) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: merge %u names token %u of %u", m,
                         l >= n ? l : r, n);
            goto done;
        }
        pairs[2 * m] = tokens[l];
        pairs[2 * m + 1] = tokens[r];
    }
    off = 0;
    for (uint32_t i = 0; i < np; i++) {
        uint32_t l = get_u32(re_lens + (size_t)i * 4);
        if (!mp_range_ok(off, l, re_bytes)) {
            rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: regex %u overruns the regex texts", i);
            goto done;
        }
        regexes[i] = (mp_tok_str){re_text + off, l};
        off += l;
    }
    if (off != re_bytes || memchr(name, 0, name_len)) {
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: bad pre-tokenizer section");
        goto done;
    }
    memcpy(pre_name, name, name_len);
    pre_name[name_len] = 0;
    spec.tokens = tokens;
    spec.types = types;
    spec.merge_pairs = nm ? pairs : NULL;
    spec.n_pre_regexes = np;
    spec.pre_regexes = regexes;
    /* with regexes present the name is only a label; without, "none" means no pre-tokenizer */
    spec.pre = (np > 0) ? pre_name : NULL;
    if (np == 0 && strcmp(pre_name, "none") != 0) {
        rc = mp_fail(err, MP_ERR_INPUT, src, NULL, "tokenizer blob: pre-tokenizer '%s' has no regexes", pre_name);
        goto done;
    }
    if (flags & BLOB_HAS_CHAT_TEMPLATE)
        spec.chat_template = (mp_tok_str){tmpl_len ? tmpl : "", tmpl_len};
    rc = mp_tokenizer_build(&spec, out, err);
done:
    free(tokens);
    free(types);
    free(pairs);
    free(regexes);
    free(pre_name);
    return rc;
}
