/* Loader for Hugging Face tokenizer.json (+ tokenizer_config.json, chat_template.jinja).
 *
 * Supported: model BPE (merges as "a b" strings or [a, b] pairs) behind a byte-level
 * pre-tokenizer: ByteLevel alone (the GPT-2 regex), or a Sequence of Split{Regex|String,
 * Isolated}, Digits and ByteLevel steps. The Split regexes are run as they are (with PCRE2); the
 * name of a built-in set is recorded when they equal one. Anything else (normalizers, other split
 * behaviours, byte_fallback, subword prefixes) is refused with a message saying what, rather than
 * tokenizing differently from the reference. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mp_file.h"
#include "tok_internal.h"

#define HF_MAX_JSON (128ull << 20) /* DeepSeek-V3's tokenizer.json is 7.8 MB */
#define HF_MAX_PRE_STEPS 64

typedef struct hf_loader {
    const char *path; /* the tokenizer.json path, for messages */
    json_t *root;
    json_t *config;      /* tokenizer_config.json, or NULL */
    char *template_file; /* chat_template.jinja contents, or NULL */
    size_t template_file_len;
    mp_tok_str *tokens;
    int32_t *types;
    uint32_t n_tokens;
    mp_tok_str *merges; /* strings or pairs, see merge_pairs */
    uint32_t n_merges;
    bool merge_pairs;
    mp_tok_str pre[HF_MAX_PRE_STEPS];
    char *pre_owned[HF_MAX_PRE_STEPS]; /* escaped String patterns we allocated */
    uint32_t n_pre;
    bool byte_level;
} hf_loader;

static void hf_free(hf_loader *h)
{
    json_decref(h->root);
    json_decref(h->config);
    free(h->template_file);
    free(h->tokens);
    free(h->types);
    free(h->merges);
    for (uint32_t i = 0; i < h->n_pre; i++)
        free(h->pre_owned[i]);
}

static int load_json(const char *path, json_t **out, mp_error *err)
{
    char *buf;
    size_t len;
    int rc = mp_read_small_file(path, HF_MAX_JSON, &buf, &len, err);
    if (rc)
        return rc;
    json_error_t je;
    *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!*out)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "bad JSON at line %d column %d: %s", je.line, je.column, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "not a JSON object");
    }
    return MP_OK;
}

static mp_tok_str jstr(const json_t *s)
{
    return (mp_tok_str){json_string_value(s), json_string_length(s)};
}

/* An id from JSON: an integer in [0, MP_TOK_MAX_TOKENS). */
static int json_id(const hf_loader *h, const json_t *v, const char *what, const char *name, uint32_t *out,
                   mp_error *err)
{
    if (!json_is_integer(v))
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "%s '%s' has no integer id", what, name);
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= (json_int_t)MP_TOK_MAX_TOKENS)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "%s '%s' has id %lld, out of range [0, %u)", what, name,
                       (long long)id, MP_TOK_MAX_TOKENS);
    *out = (uint32_t)id;
    return MP_OK;
}

static int hf_vocab(hf_loader *h, const json_t *model, mp_error *err)
{
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(h->root, "added_tokens");
    if (!json_is_object(vocab))
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "model.vocab is missing or not an object");
    if (added && !json_is_array(added) && !json_is_null(added))
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "added_tokens is not an array");
    /* the vocabulary size is the largest id + 1; ids that nothing names stay UNUSED holes */
    uint64_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach ((json_t *)vocab, key, val) {
        uint32_t id = 0;
        if (json_id(h, val, "vocab entry", key, &id, err))
            return MP_ERR_INPUT;
        if (id + 1ull > n)
            n = id + 1ull;
    }
    size_t ai;
    json_array_foreach (added, ai, val) {
        const json_t *content = json_object_get(val, "content");
        if (!json_is_object(val) || !json_is_string(content))
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "added_tokens[%zu] has no content string", ai);
        uint32_t id = 0;
        if (json_id(h, json_object_get(val, "id"), "added token", json_string_value(content), &id, err))
            return MP_ERR_INPUT;
        if (id + 1ull > n)
            n = id + 1ull;
    }
    if (n == 0)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "the vocabulary is empty");
    h->n_tokens = (uint32_t)n;
    h->tokens = calloc(n, sizeof *h->tokens);
    h->types = malloc(n * sizeof *h->types);
    if (!h->tokens || !h->types)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "out of memory for %llu tokens", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        h->types[i] = MP_TOKEN_UNUSED;
        h->tokens[i].ptr = "";
    }
    json_object_foreach ((json_t *)vocab, key, val) {
        uint32_t id = (uint32_t)json_integer_value(val);
        if (h->types[id] != MP_TOKEN_UNUSED)
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "vocab id %u is given to both '%s' and another token", id,
                           key);
        h->types[id] = MP_TOKEN_NORMAL;
        h->tokens[id] = (mp_tok_str){key, strlen(key)};
    }
    json_array_foreach (added, ai, val) {
        uint32_t id = (uint32_t)json_integer_value(json_object_get(val, "id"));
        mp_tok_str c = jstr(json_object_get(val, "content"));
        bool special = json_is_true(json_object_get(val, "special"));
        if (h->types[id] == MP_TOKEN_NORMAL &&
            (h->tokens[id].len != c.len || memcmp(h->tokens[id].ptr, c.ptr, c.len) != 0))
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL,
                           "added token '%s' has id %u, which the vocab gives to '%s'", c.ptr, id, h->tokens[id].ptr);
        if (h->types[id] == MP_TOKEN_CONTROL || h->types[id] == MP_TOKEN_USER_DEFINED)
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "two added tokens have id %u", id);
        /* HF matches added tokens in the raw text; lstrip/rstrip/single_word would change that */
        const char *flags[] = {"lstrip", "rstrip", "single_word"};
        for (int f = 0; f < 3; f++)
            if (json_is_true(json_object_get(val, flags[f])))
                return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "added token '%s': %s is not supported", c.ptr,
                               flags[f]);
        h->tokens[id] = c;
        h->types[id] = special ? MP_TOKEN_CONTROL : MP_TOKEN_USER_DEFINED;
    }
    return MP_OK;
}

static int hf_merges(hf_loader *h, const json_t *model, mp_error *err)
{
    const json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges))
        return MP_OK;
    if (!json_is_array(merges))
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "model.merges is not an array");
    size_t n = json_array_size(merges);
    if (n == 0)
        return MP_OK;
    if (n > MP_TOK_MAX_MERGES)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "%zu merges (at most %u)", n, MP_TOK_MAX_MERGES);
    h->merge_pairs = json_is_array(json_array_get(merges, 0));
    h->merges = calloc(h->merge_pairs ? 2 * n : n, sizeof *h->merges);
    if (!h->merges)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "out of memory for %zu merges", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        if (h->merge_pairs) {
            const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(a) || !json_is_string(b))
                return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "merges[%zu] is not a pair of strings", i);
            h->merges[2 * i] = jstr(a);
            h->merges[2 * i + 1] = jstr(b);
        } else {
            if (!json_is_string(m))
                return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "merges[%zu] is not a string", i);
            h->merges[i] = jstr(m);
        }
    }
    h->n_merges = (uint32_t)n;
    return MP_OK;
}

static int pre_add(hf_loader *h, mp_tok_str re, char *owned, mp_error *err)
{
    if (h->n_pre == HF_MAX_PRE_STEPS) {
        free(owned);
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "more than %d pre-tokenizer steps", HF_MAX_PRE_STEPS);
    }
    h->pre_owned[h->n_pre] = owned;
    h->pre[h->n_pre++] = re;
    return MP_OK;
}

/* A Split pattern {"String": s} as a regex matching s literally. */
static char *regex_escape(const char *s, size_t n)
{
    char *out = malloc(2 * n + 1);
    if (!out)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (c < 0x80 && !alnum)
            out[j++] = '\\';
        out[j++] = (char)c;
    }
    out[j] = 0;
    return out;
}

static int hf_pre_step(hf_loader *h, const json_t *step, mp_error *err)
{
    const char *type = json_string_value(json_object_get(step, "type"));
    if (!type)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "a pre-tokenizer step has no type");
    if (!strcmp(type, "Split")) {
        const json_t *pat = json_object_get(step, "pattern");
        const char *behavior = json_string_value(json_object_get(step, "behavior"));
        if (!behavior || strcmp(behavior, "Isolated") != 0 || json_is_true(json_object_get(step, "invert")))
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL,
                           "pre-tokenizer Split with behavior '%s'%s is not supported (only Isolated)",
                           behavior ? behavior : "?", json_is_true(json_object_get(step, "invert")) ? " inverted" : "");
        const json_t *re = json_object_get(pat, "Regex");
        const json_t *lit = json_object_get(pat, "String");
        if (json_is_string(re))
            return pre_add(h, jstr(re), NULL, err);
        if (json_is_string(lit)) {
            char *esc = regex_escape(json_string_value(lit), json_string_length(lit));
            if (!esc)
                return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "out of memory");
            return pre_add(h, (mp_tok_str){esc, strlen(esc)}, esc, err);
        }
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "pre-tokenizer Split has no Regex or String pattern");
    }
    if (!strcmp(type, "Digits")) {
        static const char individual[] = "\\p{N}", runs[] = "\\p{N}+";
        bool one = json_is_true(json_object_get(step, "individual_digits"));
        return pre_add(h, one ? (mp_tok_str){individual, 5} : (mp_tok_str){runs, 6}, NULL, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        if (json_is_true(json_object_get(step, "add_prefix_space")))
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL,
                           "pre-tokenizer ByteLevel with add_prefix_space is not supported");
        h->byte_level = true;
        const json_t *use_regex = json_object_get(step, "use_regex");
        if (!use_regex || json_is_true(use_regex)) { /* HF's default is true */
            const char *const *re;
            uint32_t n;
            mp_pretok_builtin("gpt2", &re, &n);
            return pre_add(h, (mp_tok_str){re[0], strlen(re[0])}, NULL, err);
        }
        return MP_OK;
    }
    return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "pre-tokenizer type '%s' is not supported", type);
}

static int hf_pre(hf_loader *h, mp_error *err)
{
    const json_t *norm = json_object_get(h->root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *t = json_string_value(json_object_get(norm, "type"));
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "normalizer '%s' is not supported", t ? t : "?");
    }
    const json_t *pre = json_object_get(h->root, "pre_tokenizer");
    if (pre && !json_is_null(pre)) {
        if (!json_is_object(pre))
            return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "pre_tokenizer is not an object");
        const char *type = json_string_value(json_object_get(pre, "type"));
        if (type && !strcmp(type, "Sequence")) {
            const json_t *steps = json_object_get(pre, "pretokenizers");
            if (!json_is_array(steps))
                return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "pre_tokenizer Sequence has no pretokenizers array");
            size_t i;
            const json_t *step;
            json_array_foreach (steps, i, step) {
                int rc = hf_pre_step(h, step, err);
                if (rc)
                    return rc;
            }
        } else {
            int rc = hf_pre_step(h, pre, err);
            if (rc)
                return rc;
        }
    }
    if (!h->byte_level)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL,
                       "not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer): not supported");
    return MP_OK;
}

/* A token given as "text" or {"content": "text"} in tokenizer_config.json. */
static const char *config_token(const json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

/* The id of a token by its text: an added token first, then a vocabulary entry. */
static int64_t hf_find(const hf_loader *h, const char *text)
{
    size_t n = strlen(text);
    int64_t normal = -1;
    for (uint32_t i = 0; i < h->n_tokens; i++) {
        if (h->tokens[i].len != n || memcmp(h->tokens[i].ptr, text, n) != 0)
            continue;
        if (h->types[i] != MP_TOKEN_NORMAL)
            return i;
        if (normal < 0)
            normal = i;
    }
    return normal;
}

static int hf_special_id(hf_loader *h, const json_t *v, const char *what, int64_t *out, mp_error *err)
{
    const char *text = config_token(v);
    if (!text)
        return MP_OK;
    int64_t id = hf_find(h, text);
    if (id < 0)
        return mp_fail(err, MP_ERR_INPUT, h->path, NULL, "%s '%s' is not in the vocabulary", what, text);
    *out = id;
    return MP_OK;
}

static int hf_config(hf_loader *h, mp_tokenizer_spec *spec, mp_error *err)
{
    /* defaults from the post-processor: a TemplateProcessing whose single-sequence template starts
     * with a special token adds it as BOS */
    const json_t *post = json_object_get(h->root, "post_processor");
    const char *ptype = json_string_value(json_object_get(post, "type"));
    if (ptype && !strcmp(ptype, "TemplateProcessing")) {
        const json_t *first = json_array_get(json_object_get(post, "single"), 0);
        const json_t *st = json_object_get(first, "SpecialToken");
        const char *name = json_string_value(json_object_get(st, "id"));
        if (name) {
            int64_t id = hf_find(h, name);
            if (id >= 0) {
                spec->bos_id = id;
                spec->add_bos = true;
            }
        }
    }
    const json_t *c = h->config;
    if (!c)
        return MP_OK;
    if (hf_special_id(h, json_object_get(c, "bos_token"), "bos_token", &spec->bos_id, err) ||
        hf_special_id(h, json_object_get(c, "eos_token"), "eos_token", &spec->eos_id, err))
        return MP_ERR_INPUT;
    const json_t *ab = json_object_get(c, "add_bos_token");
    if (json_is_boolean(ab))
        spec->add_bos = json_is_true(ab);
    spec->add_eos = json_is_true(json_object_get(c, "add_eos_token"));
    const json_t *tmpl = json_object_get(c, "chat_template");
    if (json_is_string(tmpl)) {
        spec->chat_template = jstr(tmpl);
    } else if (json_is_array(tmpl)) { /* [{"name": ..., "template": ...}]: take "default", else the first */
        size_t i;
        const json_t *e;
        json_array_foreach (tmpl, i, e) {
            const json_t *t = json_object_get(e, "template");
            const char *name = json_string_value(json_object_get(e, "name"));
            if (json_is_string(t) && (!spec->chat_template.ptr || (name && !strcmp(name, "default"))))
                spec->chat_template = jstr(t);
        }
    }
    return MP_OK;
}

int mp_tokenizer_load_hf(const char *path, mp_tokenizer **out, mp_error *err)
{
    *out = NULL;
    char *file = mp_is_directory(path) ? mp_path_join(path, "tokenizer.json") : strdup(path);
    char *dir = file ? mp_path_dirname(file) : NULL;
    hf_loader h = {0};
    int rc = MP_OK;
    if (!file || !dir) {
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
        goto done;
    }
    h.path = file;
    rc = load_json(file, &h.root, err);
    if (rc)
        goto done;
    char *cfg = mp_path_join(dir, "tokenizer_config.json");
    if (cfg && mp_file_exists(cfg))
        rc = load_json(cfg, &h.config, err);
    free(cfg);
    if (rc)
        goto done;

    const json_t *model = json_object_get(h.root, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model)) {
        rc = mp_fail(err, MP_ERR_INPUT, file, NULL,
                     "not a tokenizer.json (it has no \"model\" object); a tokenizer is read from a model "
                     "directory, a tokenizer.json, a GGUF file or a .moepack container");
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE") != 0) {
        rc = mp_fail(err, MP_ERR_INPUT, file, NULL, "model type '%s' is not supported (only BPE)", mtype);
        goto done;
    }
    if (json_is_true(json_object_get(model, "byte_fallback"))) {
        rc = mp_fail(err, MP_ERR_INPUT, file, NULL, "BPE byte_fallback is not supported");
        goto done;
    }
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(model, affix[i]));
        if (v && v[0]) {
            rc = mp_fail(err, MP_ERR_INPUT, file, NULL, "BPE %s is not supported", affix[i]);
            goto done;
        }
    }
    if ((rc = hf_vocab(&h, model, err)) || (rc = hf_merges(&h, model, err)) || (rc = hf_pre(&h, err)))
        goto done;

    mp_tokenizer_spec spec = {
        .source = file,
        .n_tokens = h.n_tokens,
        .tokens = h.tokens,
        .types = h.types,
        .n_merges = h.n_merges,
        .merges = h.merge_pairs ? NULL : h.merges,
        .merge_pairs = h.merge_pairs ? h.merges : NULL,
        .n_pre_regexes = h.n_pre,
        .pre_regexes = h.pre,
        .bos_id = -1,
        .eos_id = -1,
        .unk_id = -1,
        .ignore_merges = json_is_true(json_object_get(model, "ignore_merges")),
    };
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk && (spec.unk_id = hf_find(&h, unk)) < 0) {
        rc = mp_fail(err, MP_ERR_INPUT, file, NULL, "unk_token '%s' is not in the vocabulary", unk);
        goto done;
    }
    if ((rc = hf_config(&h, &spec, err)))
        goto done;
    if (!spec.chat_template.ptr) {
        char *jinja = mp_path_join(dir, "chat_template.jinja");
        if (jinja && mp_file_exists(jinja)) {
            rc = mp_read_small_file(jinja, MP_TOK_MAX_CHAT_TEMPLATE, &h.template_file, &h.template_file_len, err);
            spec.chat_template = (mp_tok_str){h.template_file, h.template_file_len};
        }
        free(jinja);
        if (rc)
            goto done;
    }
    rc = mp_tokenizer_build(&spec, out, err);
done:
    hf_free(&h);
    free(file);
    free(dir);
    return rc;
}
