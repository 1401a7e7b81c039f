/* The tokenizer of a `moepack synth` checkpoint: a byte-level BPE in the
 * Hugging Face `tokenizers` format with exactly vocab_size entries.
 *
 * - Pre-tokenizer: the model family's own (DeepSeek-V3's three Split regexes,
 *   or DeepSeek LLM/V2's five plus single digits), then ByteLevel.
 * - Merges: learned from mp_synth_corpus split by that same pre-tokenizer,
 *   starting from the 256 byte symbols (most frequent pair first, pairs seen
 *   at least twice); when the corpus runs out of pairs, deterministic
 *   synthetic merges of existing tokens fill the vocabulary.
 * - Added tokens at their official ids when the vocabulary is the official
 *   size: V3/R1 BOS 0, EOS 1, pad 2, the 798 placeholders from 128000, then
 *   <think> </think>, FIM, chat and tool tokens up to 128814; V2 BOS 100000,
 *   EOS 100001. A smaller vocabulary keeps the order but packs the named
 *   tokens at its top (no placeholders). BPE tokens take every other id in
 *   increasing order (the official V3 tokenizer ends at 128814; the ids up to
 *   vocab_size that it leaves unused hold BPE tokens here, so that the
 *   tokenizer has exactly vocab_size entries).
 * - tokenizer_config.json: the official keys, BOS/EOS, add_bos_token true,
 *   and the official chat template (V3, R1 or V2). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "chat.h"
#include "mp_file.h"
#include "mp_rand.h"
#include "synth_internal.h"

#define BAR MP_DS_BAR
#define SP MP_DS_SP

/* ---- pre-tokenizer regexes (facts of the format, as in the official files) ---- */

static const char *const v3_splits[] = {
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

static const char *const v2_splits[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f"
    "\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d"
    "\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
    "\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a"
    "\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
    "\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
};

/* The chat templates are the official ones, which tokenizer/chat.c carries (mp_chat_official_template)
 * so that convert can tell a checkpoint's template from them. */

static const char BOS[] = "<" BAR "begin" SP "of" SP "sentence" BAR ">";
static const char EOS[] = "<" BAR "end" SP "of" SP "sentence" BAR ">";

/* V3's named added tokens, ids 128798 .. 128814 in this order. */
static const struct {
    const char *content;
    bool special;
} v3_named[] = {
    {"<think>", false}, /* R1's reasoning markers are not "special": they survive decoding */
    {"</think>", false},
    {"<" BAR "fim" SP "hole" BAR ">", true},
    {"<" BAR "fim" SP "begin" BAR ">", true},
    {"<" BAR "fim" SP "end" BAR ">", true},
    {"<" BAR "User" BAR ">", true},
    {"<" BAR "Assistant" BAR ">", true},
    {"<|EOT|>", true},
    {"<" BAR "tool" SP "calls" SP "begin" BAR ">", true},
    {"<" BAR "tool" SP "calls" SP "end" BAR ">", true},
    {"<" BAR "tool" SP "call" SP "begin" BAR ">", true},
    {"<" BAR "tool" SP "call" SP "end" BAR ">", true},
    {"<" BAR "tool" SP "outputs" SP "begin" BAR ">", true},
    {"<" BAR "tool" SP "outputs" SP "end" BAR ">", true},
    {"<" BAR "tool" SP "output" SP "begin" BAR ">", true},
    {"<" BAR "tool" SP "output" SP "end" BAR ">", true},
    {"<" BAR "tool" SP "sep" BAR ">", true},
};
enum {
    V3_NAMED = sizeof v3_named / sizeof v3_named[0],
    V3_PLACEHOLDER_FIRST = 128000,
    V3_PLACEHOLDERS = 798,
    V3_NAMED_FIRST = 128798,
    V3_OFFICIAL_END = 128815, /* one past <｜tool▁sep｜> */
};

/* ---- a string -> index map (open addressing; keys owned elsewhere) ---- */

typedef struct strmap {
    uint32_t *slots; /* index + 1; 0 = empty */
    size_t mask;
    const char *const *keys; /* keys[index] */
    const uint32_t *lens;
} strmap;

static bool strmap_init(strmap *m, size_t max_items)
{
    size_t cap = 64;
    while (cap < max_items * 2)
        cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    return m->slots != NULL;
}

/* Returns the slot of key (holding its index + 1, or 0 if absent). */
static uint32_t *strmap_find(const strmap *m, const char *key, size_t len)
{
    size_t i = (size_t)XXH3_64bits(key, len) & m->mask;
    for (;;) {
        uint32_t s = m->slots[i];
        if (s == 0 || (m->lens[s - 1] == len && !memcmp(m->keys[s - 1], key, len)))
            return &m->slots[i];
        i = (i + 1) & m->mask;
    }
}

/* ---- the BPE under construction ---- */

typedef struct bpe {
    char **tok; /* byte-level (mapped) text of each token, in creation order */
    uint32_t *len;
    uint32_t n, target;
    strmap map;
    uint32_t (*merge)[2];
    uint32_t nmerges, merge_cap; /* a merge may rejoin into an existing token, so merges can outnumber tokens */
} bpe;

/* GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves,
 * the others to U+0100 and up, so every byte is one visible character. The
 * 256 symbols are numbered in that table's order. */
static void byte_symbols(uint32_t cp_of_symbol[256], uint8_t byte_of_symbol[256], uint32_t symbol_of_byte[256])
{
    uint32_t n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (printable) {
            byte_of_symbol[n] = (uint8_t)b;
            cp_of_symbol[n] = (uint32_t)b;
            n++;
        }
    }
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!printable) {
            byte_of_symbol[n] = (uint8_t)b;
            cp_of_symbol[n] = 256 + extra++;
            n++;
        }
    }
    for (uint32_t s = 0; s < 256; s++)
        symbol_of_byte[byte_of_symbol[s]] = s;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* Adds a token (text not yet present); returns its index. */
static bool bpe_add(bpe *b, const char *text, size_t len, uint32_t *index)
{
    char *t = malloc(len + 1);
    if (!t)
        return false;
    memcpy(t, text, len);
    t[len] = '\0';
    uint32_t *slot = strmap_find(&b->map, t, len);
    b->tok[b->n] = t;
    b->len[b->n] = (uint32_t)len;
    *slot = b->n + 1;
    *index = b->n++;
    return true;
}

typedef struct word {
    uint32_t *sym;
    uint32_t len;
    uint32_t count;
} word;

/* Splits text by each regex in turn, keeping matches and the gaps between
 * them as separate pieces (the `Isolated` behaviour of a Split
 * pre-tokenizer), and counts the final pieces as words. */
typedef struct piece_list {
    size_t *start, *len;
    size_t n, cap;
} piece_list;

static bool pieces_push(piece_list *p, size_t start, size_t len)
{
    if (len == 0)
        return true;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        size_t *s = realloc(p->start, cap * sizeof *s);
        if (!s)
            return false;
        p->start = s;
        size_t *l = realloc(p->len, cap * sizeof *l);
        if (!l)
            return false;
        p->len = l;
        p->cap = cap;
    }
    p->start[p->n] = start;
    p->len[p->n] = len;
    p->n++;
    return true;
}

static int split_isolated(const char *text, const char *pattern, const piece_list *in, piece_list *out, mp_error *err)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode,
                                   &erroff, NULL);
    if (!re)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "synth: pre-tokenizer regex does not compile (error %d at %zu)",
                       errcode, (size_t)erroff);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = md ? MP_OK : mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    for (size_t k = 0; rc == MP_OK && k < in->n; k++) {
        const char *s = text + in->start[k];
        size_t n = in->len[k], pos = 0, emitted = 0;
        while (rc == MP_OK && pos <= n) {
            int m = pcre2_match(re, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
            if (m < 0)
                break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: step over one character */
                pos = ms + 1;
                while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
                    pos++;
                continue;
            }
            if (!pieces_push(out, in->start[k] + emitted, ms - emitted) ||
                !pieces_push(out, in->start[k] + ms, me - ms))
                rc = mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
            emitted = pos = me;
        }
        if (rc == MP_OK && !pieces_push(out, in->start[k] + emitted, n - emitted))
            rc = mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

/* The corpus as words of byte symbols, with their counts. */
static int corpus_words(const mp_synth_model *m, const uint32_t symbol_of_byte[256], word **out_words,
                        size_t *out_n, mp_error *err)
{
    const char *text = mp_synth_corpus;
    const char *const *splits = m->family == MP_SYNTH_FAMILY_V3 ? v3_splits : v2_splits;
    size_t nsplits = m->family == MP_SYNTH_FAMILY_V3 ? sizeof v3_splits / sizeof *v3_splits
                                                     : sizeof v2_splits / sizeof *v2_splits;
    piece_list a = {0}, b = {0};
    int rc = pieces_push(&a, 0, strlen(text)) ? MP_OK : mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    for (size_t i = 0; rc == MP_OK && i <= nsplits; i++) {
        /* DeepSeek LLM's tokenizer ends with a Digits(individual_digits) step. */
        const char *pattern = i < nsplits ? splits[i] : m->family == MP_SYNTH_FAMILY_V2 ? "\\p{N}" : NULL;
        if (!pattern)
            break;
        b.n = 0;
        rc = split_isolated(text, pattern, &a, &b, err);
        piece_list t = a;
        a = b;
        b = t;
    }
    /* Count distinct pieces. */
    word *words = NULL;
    size_t nwords = 0;
    const char **keys = NULL;
    uint32_t *lens = NULL;
    strmap map = {0};
    if (rc == MP_OK) {
        words = calloc(a.n ? a.n : 1, sizeof *words);
        keys = calloc(a.n ? a.n : 1, sizeof *keys);
        lens = calloc(a.n ? a.n : 1, sizeof *lens);
        if (!words || !keys || !lens || !strmap_init(&map, a.n))
            rc = mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
        map.keys = keys;
        map.lens = lens;
    }
    for (size_t k = 0; rc == MP_OK && k < a.n; k++) {
        const char *s = text + a.start[k];
        uint32_t *slot = strmap_find(&map, s, a.len[k]);
        if (*slot) {
            words[*slot - 1].count++;
            continue;
        }
        keys[nwords] = s;
        lens[nwords] = (uint32_t)a.len[k];
        word *w = &words[nwords];
        w->sym = malloc(a.len[k] * sizeof *w->sym);
        if (!w->sym) {
            rc = mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
            break;
        }
        for (size_t i = 0; i < a.len[k]; i++)
            w->sym[i] = symbol_of_byte[(unsigned char)s[i]];
        w->len = (uint32_t)a.len[k];
        w->count = 1;
        *slot = (uint32_t)++nwords;
    }
    free(map.slots);
    free(keys);
    free(lens);
    free(a.start);
    free(a.len);
    free(b.start);
    free(b.len);
    if (rc) {
        for (size_t i = 0; i < nwords; i++)
            free(words[i].sym);
        free(words);
        return rc;
    }
    *out_words = words;
    *out_n = nwords;
    return MP_OK;
}

/* Records merge (a, b), creating the joined token unless it already exists.
 * Returns the joined token's index through *joined. */
static bool bpe_merge(bpe *b, uint32_t x, uint32_t y, uint32_t *joined)
{
    char buf[512];
    size_t len = (size_t)b->len[x] + b->len[y];
    if (len >= sizeof buf || b->nmerges == b->merge_cap)
        return false;
    memcpy(buf, b->tok[x], b->len[x]);
    memcpy(buf + b->len[x], b->tok[y], b->len[y]);
    uint32_t *slot = strmap_find(&b->map, buf, len);
    if (*slot)
        *joined = *slot - 1;
    else if (!bpe_add(b, buf, len, joined))
        return false;
    b->merge[b->nmerges][0] = x;
    b->merge[b->nmerges][1] = y;
    b->nmerges++;
    return true;
}

/* Learns merges from the corpus until its pairs run out (count < 2) or the
 * vocabulary is full. Pair counts are recomputed each round: the corpus is a
 * few thousand symbols, so this stays in the milliseconds. */
static int learn_from_corpus(bpe *b, word *words, size_t nwords, mp_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < nwords; i++)
        total += words[i].len;
    size_t cap = 64;
    while (cap < total * 2)
        cap <<= 1;
    uint64_t *keys = malloc(cap * sizeof *keys);
    uint64_t *counts = calloc(cap, sizeof *counts);
    size_t *used = malloc(cap * sizeof *used);
    if (!keys || !counts || !used) {
        free(keys);
        free(counts);
        free(used);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    }
    int rc = MP_OK;
    while (b->n < b->target) {
        size_t nused = 0;
        for (size_t i = 0; i < nwords; i++)
            for (uint32_t j = 0; j + 1 < words[i].len; j++) {
                uint64_t key = (uint64_t)words[i].sym[j] << 32 | words[i].sym[j + 1];
                size_t h = (size_t)mp_splitmix64(key) & (cap - 1);
                while (counts[h] && keys[h] != key)
                    h = (h + 1) & (cap - 1);
                if (!counts[h]) {
                    keys[h] = key;
                    used[nused++] = h;
                }
                counts[h] += words[i].count;
            }
        uint64_t best_key = 0, best = 0;
        for (size_t u = 0; u < nused; u++) {
            size_t h = used[u];
            if (counts[h] > best || (counts[h] == best && keys[h] < best_key)) {
                best = counts[h];
                best_key = keys[h];
            }
            counts[h] = 0;
        }
        if (best < 2)
            break;
        uint32_t x = (uint32_t)(best_key >> 32), y = (uint32_t)best_key, z;
        if (!bpe_merge(b, x, y, &z)) {
            rc = mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
            break;
        }
        for (size_t i = 0; i < nwords; i++) {
            word *w = &words[i];
            uint32_t o = 0;
            for (uint32_t j = 0; j < w->len; j++) {
                if (j + 1 < w->len && w->sym[j] == x && w->sym[j + 1] == y) {
                    w->sym[o++] = z;
                    j++;
                } else {
                    w->sym[o++] = w->sym[j];
                }
            }
            w->len = o;
        }
    }
    free(keys);
    free(counts);
    free(used);
    return rc;
}

/* Fills the rest of the vocabulary with merges of existing tokens, drawn
 * from a fixed pseudo-random sequence, biased to short tokens. */
static int synthetic_merges(bpe *b, mp_error *err)
{
    uint64_t counter = 0, misses = 0;
    while (b->n < b->target) {
        uint64_t h = mp_splitmix64(0x5EED0F70CE115ull + counter++);
        uint32_t pool_a = b->n < 8192 ? b->n : 8192;
        uint32_t pool_b = b->n < 1024 ? b->n : 1024;
        uint32_t x = (uint32_t)((h & 0xffffffffu) % pool_a), y = (uint32_t)((h >> 32) % pool_b);
        size_t len = (size_t)b->len[x] + b->len[y];
        if (len > 32) {
            misses++;
        } else {
            char buf[64];
            memcpy(buf, b->tok[x], b->len[x]);
            memcpy(buf + b->len[x], b->tok[y], b->len[y]);
            buf[len] = '\0';
            /* ASCII added tokens must not also be BPE tokens. */
            if (*strmap_find(&b->map, buf, len) || !strcmp(buf, "<think>") || !strcmp(buf, "</think>") ||
                !strcmp(buf, "<|EOT|>")) {
                misses++;
            } else {
                uint32_t z;
                if (!bpe_merge(b, x, y, &z))
                    return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
            }
        }
        if (misses > 100000000ull)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "synth: cannot find new merges for the vocabulary");
    }
    return MP_OK;
}

/* ---- ids ---- */

/* Every added token is also listed in the BPE model's vocab at its id: the
 * tokenizers library gives an added token that the vocab lacks the next id
 * after the vocab, which would misplace any added token that does not follow
 * a gap-free vocab. */
typedef struct added_token {
    char content[64];
    uint32_t id;
    bool special;
} added_token;

static size_t plan_added(const mp_synth_model *m, added_token *out)
{
    size_t n = 0;
    if (m->family == MP_SYNTH_FAMILY_V2) {
        out[n++] = (added_token){"", m->bos_id, true};
        strcpy(out[n - 1].content, BOS);
        out[n++] = (added_token){"", m->eos_id, true};
        strcpy(out[n - 1].content, EOS);
        return n;
    }
    static const char *const first[] = {BOS, EOS, "<" BAR SP "pad" SP BAR ">"};
    for (uint32_t i = 0; i < 3; i++) {
        out[n] = (added_token){"", i, true};
        strcpy(out[n].content, first[i]);
        n++;
    }
    bool official = m->vocab >= V3_OFFICIAL_END;
    if (official)
        for (uint32_t i = 0; i < V3_PLACEHOLDERS; i++) {
            out[n] = (added_token){"", V3_PLACEHOLDER_FIRST + i, true};
            snprintf(out[n].content, sizeof out[n].content, "<" BAR "place" SP "holder" SP "no" SP "%u" BAR ">", i);
            n++;
        }
    uint32_t base = official ? V3_NAMED_FIRST : m->vocab - V3_NAMED;
    for (uint32_t i = 0; i < V3_NAMED; i++) {
        out[n] = (added_token){"", base + i, v3_named[i].special};
        strcpy(out[n].content, v3_named[i].content);
        n++;
    }
    return n;
}

/* ---- JSON ---- */

static json_t *added_json(const added_token *a)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(a->id));
    json_object_set_new(o, "content", json_string(a->content));
    json_object_set_new(o, "single_word", json_false());
    json_object_set_new(o, "lstrip", json_false());
    json_object_set_new(o, "rstrip", json_false());
    json_object_set_new(o, "normalized", json_boolean(!a->special));
    json_object_set_new(o, "special", json_boolean(a->special));
    return o;
}

static json_t *split_json(const char *regex)
{
    json_t *o = json_object(), *pat = json_object();
    json_object_set_new(pat, "Regex", json_string(regex));
    json_object_set_new(o, "type", json_string("Split"));
    json_object_set_new(o, "pattern", pat);
    json_object_set_new(o, "behavior", json_string("Isolated"));
    json_object_set_new(o, "invert", json_false());
    return o;
}

static json_t *byte_level_json(bool prefix, bool regex)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("ByteLevel"));
    json_object_set_new(o, "add_prefix_space", json_boolean(prefix));
    json_object_set_new(o, "trim_offsets", json_true());
    json_object_set_new(o, "use_regex", json_boolean(regex));
    return o;
}

static json_t *pre_tokenizer_json(mp_synth_family family)
{
    json_t *seq = json_array();
    if (family == MP_SYNTH_FAMILY_V3) {
        for (size_t i = 0; i < sizeof v3_splits / sizeof *v3_splits; i++)
            json_array_append_new(seq, split_json(v3_splits[i]));
    } else {
        for (size_t i = 0; i < sizeof v2_splits / sizeof *v2_splits; i++)
            json_array_append_new(seq, split_json(v2_splits[i]));
        json_t *digits = json_object();
        json_object_set_new(digits, "type", json_string("Digits"));
        json_object_set_new(digits, "individual_digits", json_true());
        json_array_append_new(seq, digits);
    }
    json_array_append_new(seq, byte_level_json(false, false));
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("Sequence"));
    json_object_set_new(o, "pretokenizers", seq);
    return o;
}

/* One piece of a TemplateProcessing template, {kind: {"id": id, "type_id": 0}}:
 * kind "SpecialToken" (id: the token) or "Sequence" (id: "A" or "B"). */
static json_t *template_piece(const char *kind, const char *id)
{
    json_t *inner = json_object(), *o = json_object();
    json_object_set_new(inner, "id", json_string(id));
    json_object_set_new(inner, "type_id", json_integer(0));
    json_object_set_new(o, kind, inner);
    return o;
}

/* Prepends BOS to every sequence (and to the second one of a pair). */
static json_t *post_processor_json(uint32_t bos_id)
{
    json_t *single = json_array(), *pair = json_array();
    json_array_append_new(single, template_piece("SpecialToken", BOS));
    json_array_append_new(single, template_piece("Sequence", "A"));
    json_array_append_new(pair, template_piece("SpecialToken", BOS));
    json_array_append_new(pair, template_piece("Sequence", "A"));
    json_array_append_new(pair, template_piece("SpecialToken", BOS));
    json_array_append_new(pair, template_piece("Sequence", "B"));
    json_t *ids = json_array(), *toks = json_array(), *entry = json_object(), *specials = json_object();
    json_array_append_new(ids, json_integer(bos_id));
    json_array_append_new(toks, json_string(BOS));
    json_object_set_new(entry, "id", json_string(BOS));
    json_object_set_new(entry, "ids", ids);
    json_object_set_new(entry, "tokens", toks);
    json_object_set_new(specials, BOS, entry);
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("TemplateProcessing"));
    json_object_set_new(o, "single", single);
    json_object_set_new(o, "pair", pair);
    json_object_set_new(o, "special_tokens", specials);
    return o;
}

static json_t *added_token_config(const char *content)
{
    json_t *o = json_object();
    json_object_set_new(o, "__type", json_string("AddedToken"));
    json_object_set_new(o, "content", json_string(content));
    json_object_set_new(o, "lstrip", json_false());
    json_object_set_new(o, "normalized", json_true());
    json_object_set_new(o, "rstrip", json_false());
    json_object_set_new(o, "single_word", json_false());
    return o;
}

static json_t *tokenizer_config_json(const mp_synth_model *m)
{
    const char *tpl = mp_chat_official_template(m->family == MP_SYNTH_FAMILY_V2       ? MP_CHAT_DEEPSEEK_V2
                                                : m->preset == MP_SYNTH_DEEPSEEK_R1 ? MP_CHAT_DEEPSEEK_R1
                                                                                      : MP_CHAT_DEEPSEEK_V3);
    json_t *o = json_object();
    json_object_set_new(o, "add_bos_token", json_true());
    json_object_set_new(o, "add_eos_token", json_false());
    json_object_set_new(o, "bos_token", added_token_config(BOS));
    json_object_set_new(o, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(o, "eos_token", added_token_config(EOS));
    json_object_set_new(o, "legacy", json_true());
    json_object_set_new(o, "model_max_length", json_integer(16384));
    json_object_set_new(o, "pad_token", added_token_config(EOS));
    json_object_set_new(o, "sp_model_kwargs", json_object());
    json_object_set_new(o, "unk_token", json_null());
    json_object_set_new(o, "tokenizer_class", json_string("LlamaTokenizerFast"));
    json_object_set_new(o, "chat_template", json_string(tpl));
    return o;
}

static int write_json(json_t *root, const char *dir, const char *name, mp_error *err)
{
    char *path = mp_path_join(dir, name);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!path || !text) {
        free(path);
        free(text);
        return mp_fail(err, MP_ERR_INPUT, dir, NULL, "%s: out of memory", name);
    }
    const mp_file_part parts[] = {{text, strlen(text)}, {"\n", 1}};
    int rc = mp_write_file_parts(path, parts, 2, err);
    free(text);
    free(path);
    return rc;
}

int mp_synth_write_tokenizer(const mp_synth_model *m, const char *dir, mp_error *err)
{
    added_token *added = calloc(3 + V3_PLACEHOLDERS + V3_NAMED, sizeof *added);
    if (!added)
        return mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    size_t nadded = plan_added(m, added);
    uint32_t regular = m->vocab - (uint32_t)nadded;

    uint32_t cp_of_symbol[256], symbol_of_byte[256];
    uint8_t byte_of_symbol[256];
    byte_symbols(cp_of_symbol, byte_of_symbol, symbol_of_byte);

    bpe b = {0};
    b.target = regular;
    b.tok = calloc(regular, sizeof *b.tok);
    b.len = calloc(regular, sizeof *b.len);
    /* Each corpus merge removes at least two symbols from the corpus, so
     * corpus merges that create no token number at most len/2. */
    b.merge_cap = regular + (uint32_t)(strlen(mp_synth_corpus) / 2);
    b.merge = calloc(b.merge_cap, sizeof *b.merge);
    int rc = MP_OK;
    if (!b.tok || !b.len || !b.merge || !strmap_init(&b.map, regular))
        rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    b.map.keys = (const char *const *)b.tok;
    b.map.lens = b.len;
    for (uint32_t s = 0; rc == MP_OK && s < 256; s++) {
        char text[4];
        uint32_t idx;
        if (!bpe_add(&b, text, utf8_put(cp_of_symbol[s], text), &idx))
            rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    }
    word *words = NULL;
    size_t nwords = 0;
    if (rc == MP_OK)
        rc = corpus_words(m, symbol_of_byte, &words, &nwords, err);
    if (rc == MP_OK)
        rc = learn_from_corpus(&b, words, nwords, err);
    if (rc == MP_OK)
        rc = synthetic_merges(&b, err);
    for (size_t i = 0; i < nwords; i++)
        free(words[i].sym);
    free(words);

    /* Ids: added tokens at theirs, BPE tokens in creation order on the rest. */
    uint32_t *id_of = rc == MP_OK ? malloc((size_t)regular * sizeof *id_of) : NULL;
    uint8_t *taken = rc == MP_OK ? calloc(m->vocab, 1) : NULL;
    if (rc == MP_OK && (!id_of || !taken))
        rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    if (rc == MP_OK) {
        for (size_t i = 0; i < nadded; i++)
            taken[added[i].id] = 1;
        uint32_t next = 0;
        for (uint32_t t = 0; t < regular; t++) {
            while (taken[next])
                next++;
            id_of[t] = next++;
        }
    }

    if (rc == MP_OK) {
        json_t *root = json_object();
        json_t *added_arr = json_array();
        for (size_t i = 0; i < nadded; i++)
            json_array_append_new(added_arr, added_json(&added[i]));
        json_t *vocab = json_object();
        /* The vocab map lists ids in increasing order, as tokenizers writes it. */
        size_t ai = 0;
        uint32_t t = 0;
        for (uint32_t id = 0; id < m->vocab; id++) {
            if (ai < nadded && added[ai].id == id) {
                json_object_set_new(vocab, added[ai].content, json_integer(id));
                ai++;
            } else if (t < regular && id_of[t] == id) {
                json_object_set_new(vocab, b.tok[t], json_integer(id));
                t++;
            }
        }
        json_t *merges = json_array();
        for (uint32_t k = 0; k < b.nmerges; k++) {
            char buf[1100];
            snprintf(buf, sizeof buf, "%s %s", b.tok[b.merge[k][0]], b.tok[b.merge[k][1]]);
            json_array_append_new(merges, json_string(buf));
        }
        json_t *model = json_object();
        json_object_set_new(model, "type", json_string("BPE"));
        json_object_set_new(model, "dropout", json_null());
        json_object_set_new(model, "unk_token", json_null());
        json_object_set_new(model, "continuing_subword_prefix", json_null());
        json_object_set_new(model, "end_of_word_suffix", json_null());
        json_object_set_new(model, "fuse_unk", json_false());
        json_object_set_new(model, "byte_fallback", json_false());
        json_object_set_new(model, "ignore_merges", json_false());
        json_object_set_new(model, "vocab", vocab);
        json_object_set_new(model, "merges", merges);

        json_object_set_new(root, "version", json_string("1.0"));
        json_object_set_new(root, "truncation", json_null());
        json_object_set_new(root, "padding", json_null());
        json_object_set_new(root, "added_tokens", added_arr);
        json_object_set_new(root, "normalizer", json_null());
        json_object_set_new(root, "pre_tokenizer", pre_tokenizer_json(m->family));
        json_object_set_new(root, "post_processor", post_processor_json(m->bos_id));
        json_object_set_new(root, "decoder", byte_level_json(true, true));
        json_object_set_new(root, "model", model);
        if (json_object_size(vocab) != m->vocab)
            rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "synth: tokenizer has %zu entries, not %u (internal error)",
                         json_object_size(vocab), m->vocab);
        if (rc == MP_OK)
            rc = write_json(root, dir, "tokenizer.json", err);
        else
            json_decref(root);
    }
    if (rc == MP_OK)
        rc = write_json(tokenizer_config_json(m), dir, "tokenizer_config.json", err);

    for (uint32_t t = 0; t < b.n; t++)
        free(b.tok[t]);
    free(b.tok);
    free(b.len);
    free(b.merge);
    free(b.map.slots);
    free(id_of);
    free(taken);
    free(added);
    return rc;
}
