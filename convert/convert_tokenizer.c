#include "convert_tokenizer.h"

#include <stdlib.h>
#include <string.h>

int mp_tokenizer_load_gguf(const mp_gguf *g, mp_tokenizer **out, mp_error *err)
{
    *out = NULL;
    const char *path = mp_gguf_path(g);
    const char *model = NULL;
    int rc = mp_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (rc)
        return rc;
    if (strcmp(model, "gpt2") != 0)
        return mp_fail(err, MP_ERR_INPUT, path, "tokenizer.ggml.model",
                       "'%.40s' is not supported (DeepSeek models use byte-level BPE, 'gpt2')", model);
    const mp_gguf_kv *toks, *merges = NULL, *types = NULL;
    if ((rc = mp_gguf_get_array(g, "tokenizer.ggml.tokens", &toks, err)))
        return rc;
    if (toks->elem_type != MP_GGUF_STRING || toks->count == 0 || toks->count > (1u << 24))
        return mp_fail(err, MP_ERR_INPUT, path, "tokenizer.ggml.tokens", "must be a non-empty array of strings");
    /* Byte-level BPE without its merges still loads, and then splits every
     * word into single bytes: a different tokenization the model was never
     * trained on. llama.cpp refuses such a file too. (An empty array is taken
     * as written, as llama.cpp does.) */
    if (!mp_gguf_find_kv(g, "tokenizer.ggml.merges"))
        return mp_fail(err, MP_ERR_INPUT, path, "tokenizer.ggml.merges",
                       "is missing: a BPE ('gpt2') tokenizer needs its merges, or every word is split into bytes");
    if ((rc = mp_gguf_get_array(g, "tokenizer.ggml.merges", &merges, err)))
        return rc;
    if (merges && (merges->elem_type != MP_GGUF_STRING || merges->count > (1u << 24)))
        return mp_fail(err, MP_ERR_INPUT, path, "tokenizer.ggml.merges", "must be an array of strings");
    if (mp_gguf_find_kv(g, "tokenizer.ggml.token_type") &&
        (rc = mp_gguf_get_array(g, "tokenizer.ggml.token_type", &types, err)))
        return rc;
    if (types && types->count != toks->count)
        return mp_fail(err, MP_ERR_INPUT, path, "tokenizer.ggml.token_type", "has %llu entries for %llu tokens",
                       (unsigned long long)types->count, (unsigned long long)toks->count);

    uint32_t n = (uint32_t)toks->count, nm = merges ? (uint32_t)merges->count : 0;
    mp_tok_str *ts = calloc(n, sizeof *ts), *ms = calloc(nm ? nm : 1, sizeof *ms);
    int32_t *ty = types ? calloc(n, sizeof *ty) : NULL;
    if (!ts || !ms || (types && !ty)) {
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory loading the vocabulary");
        goto out;
    }
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint64_t len;
        rc = mp_gguf_arr_str(g, toks, i, &ts[i].ptr, &len, err);
        ts[i].len = (size_t)len;
        if (!rc && ty) {
            int64_t v;
            rc = mp_gguf_arr_i64(g, types, i, &v, err);
            ty[i] = (int32_t)(v < 0 || v > 100 ? 0 : v);
        }
    }
    for (uint32_t i = 0; i < nm && !rc; i++) {
        uint64_t len;
        rc = mp_gguf_arr_str(g, merges, i, &ms[i].ptr, &len, err);
        ms[i].len = (size_t)len;
    }
    if (rc)
        goto out;

    mp_tokenizer_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.source = path;
    spec.n_tokens = n;
    spec.tokens = ts;
    spec.types = ty;
    spec.n_merges = nm;
    spec.merges = ms;
    const char *pre = "default";
    if (mp_gguf_find_kv(g, "tokenizer.ggml.pre") && (rc = mp_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err)))
        goto out;
    spec.pre = pre;
    spec.bos_id = spec.eos_id = spec.unk_id = -1;
    uint32_t id;
    if (mp_gguf_find_kv(g, "tokenizer.ggml.bos_token_id")) {
        if ((rc = mp_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id, err)))
            goto out;
        spec.bos_id = id;
    }
    if (mp_gguf_find_kv(g, "tokenizer.ggml.eos_token_id")) {
        if ((rc = mp_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id, err)))
            goto out;
        spec.eos_id = id;
    }
    /* llama.cpp's default for this tokenizer type is to add BOS */
    spec.add_bos = true;
    if (mp_gguf_find_kv(g, "tokenizer.ggml.add_bos_token") &&
        (rc = mp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &spec.add_bos, err)))
        goto out;
    if (mp_gguf_find_kv(g, "tokenizer.ggml.add_eos_token") &&
        (rc = mp_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &spec.add_eos, err)))
        goto out;
    const char *tmpl = NULL;
    if (mp_gguf_find_kv(g, "tokenizer.chat_template") && (rc = mp_gguf_get_str(g, "tokenizer.chat_template", &tmpl, err)))
        goto out;
    if (tmpl) {
        spec.chat_template.ptr = tmpl;
        spec.chat_template.len = strlen(tmpl);
    }
    rc = mp_tokenizer_build(&spec, out, err);
out:
    free(ts);
    free(ms);
    free(ty);
    return rc;
}

int mp_convert_tokenizer_blob(const mp_source *src, uint8_t **blob, size_t *len, mp_chat_format *chat,
                              mp_chat_template_match *match, mp_error *err)
{
    mp_tokenizer *tok = NULL;
    int rc = src->kind == MP_SOURCE_GGUF ? mp_tokenizer_load_gguf(&src->gg, &tok, err)
                                         : mp_tokenizer_load_hf(src->dir, &tok, err);
    if (rc)
        return rc;
    if (mp_tokenizer_n_tokens(tok) > src->desc.vocab_size)
        rc = mp_fail(err, MP_ERR_INPUT, src->path, NULL, "the tokenizer has %u tokens, more than vocab_size %u",
                     mp_tokenizer_n_tokens(tok), src->desc.vocab_size);
    if (!rc) {
        *chat = mp_chat_format_for_tokenizer(tok);
        *match = mp_chat_template_check(mp_tokenizer_chat_template(tok, NULL), *chat);
        rc = mp_tokenizer_serialize(tok, blob, len, err);
    }
    mp_tokenizer_free(tok);
    return rc;
}
