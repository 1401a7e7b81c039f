/* model_desc: config.json parsing, validation, comparison and the tensor name
 * maps of DeepSeek V2 / V2-Lite / V3 / R1. See model_desc.h. */
#include "model_desc.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ======================================================================
 * config.json
 * ====================================================================== */

/* Defaults of absent keys, per model_type, from the reference configuration
 * classes: DeepSeek's configuration_deepseek.py (DeepseekV2Config shipped with
 * DeepSeek-V2 / V2-Lite, DeepseekV3Config shipped with DeepSeek-V3 / R1), which
 * Hugging Face transformers' DeepseekV3Config agrees with for every key they
 * share. The dimension keys (hidden_size, vocab_size, ...) have defaults there
 * too, sized for the full models; they are required here instead, because a
 * config without them is broken and a 7168-wide guess would only surface later
 * as shape mismatches. */
typedef struct cfg_defaults {
    uint32_t n_shared_experts; /* V2: None (no shared experts); V3: 1 */
    uint32_t n_group, topk_group; /* V2: None (ungrouped: 1, 1); V3: 8, 4 */
    uint32_t first_k_dense_replace; /* V2: 0; V3: 3 */
    uint32_t moe_layer_freq;        /* 1 in both */
    mp_scoring_func scoring_func;   /* V2: 'softmax'; V3: 'sigmoid' */
    mp_topk_method topk_method;     /* V2: 'gready' (sic: greedy); V3: 'noaux_tc' */
    bool norm_topk_prob;            /* V2: False; V3: True */
    float routed_scaling_factor;    /* V2: 1.0; V3: 2.5 */
    uint32_t max_position_embeddings; /* V2: 2048; V3: 4096 */
} cfg_defaults;

static const cfg_defaults defaults_v2 = {0, 1, 1, 0, 1, MP_SCORING_SOFTMAX, MP_TOPK_GREEDY, false, 1.0f, 2048};
static const cfg_defaults defaults_v3 = {1, 8, 4, 3, 1, MP_SCORING_SIGMOID, MP_TOPK_NOAUX_TC, true, 2.5f, 4096};
/* Shared by both classes: rms_norm_eps 1e-6, rope_theta 10000.0, rope_scaling
 * None, tie_word_embeddings False, hidden_act 'silu', attention_bias False.
 * Also:
 * - num_nextn_predict_layers: absent = 0. DeepSeek's V3 class defaults to 1,
 *   but every official V3/R1 config states the key; a config without it comes
 *   from transformers' DeepseekV3Config, which has no MTP layers at all.
 * - bos_token_id / eos_token_id: absent = -1 (unknown). The classes default to
 *   ids of their own vocabularies (100000/100001 for V2, 0/1 for V3), which
 *   are wrong for any other tokenizer; the tokenizer files say it better.
 * - rope_scaling yarn: the reference DeepseekV2/V3YarnRotaryEmbedding defaults
 *   original_max_position_embeddings 4096, beta_fast 32, beta_slow 1,
 *   mscale 1, mscale_all_dim 0; "factor" is read unconditionally (required).
 * - quantization_config fp8 without weight_block_size: 128 x 128, the default
 *   of transformers' FineGrainedFP8Config. */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

typedef struct cfg_reader {
    const char *path;
    mp_error *err;
    uint32_t *defaulted;
    const char *prefix; /* "" or "rope_scaling." ...: keys are named in full */
    char label_buf[128];
} cfg_reader;

/* The full name of `key` for messages ("rope_scaling.factor"). */
static const char *label(cfg_reader *r, const char *key)
{
    snprintf(r->label_buf, sizeof r->label_buf, "%s%s", r->prefix, key);
    return r->label_buf;
}

static int type_error(cfg_reader *r, const char *key, const char *want, const json_t *v)
{
    return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "must be %s, not %s", want, json_type_name(v));
}

/* An unsigned 32-bit integer key. `required`: absence is an error; otherwise
 * *out keeps its (default) value. `null_value` >= 0: JSON null means that
 * value; otherwise null is a type error. */
static int read_u32(cfg_reader *r, json_t *obj, const char *key, bool required, int64_t null_value, uint32_t *out,
                    bool *present)
{
    json_t *v = json_object_get(obj, key);
    if (present)
        *present = v != NULL;
    if (!v) {
        if (required)
            return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "required key is missing");
        return MP_OK;
    }
    if (json_is_null(v) && null_value >= 0) {
        *out = (uint32_t)null_value;
        return MP_OK;
    }
    if (!json_is_integer(v))
        return type_error(r, key, null_value >= 0 ? "an integer or null" : "an integer", v);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > (json_int_t)UINT32_MAX)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "%lld is out of range (0..4294967295)",
                       (long long)x);
    *out = (uint32_t)x;
    return MP_OK;
}

static int read_number(cfg_reader *r, json_t *obj, const char *key, double *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    if (present)
        *present = v != NULL;
    if (!v)
        return MP_OK;
    if (!json_is_number(v))
        return type_error(r, key, "a number", v);
    double x = json_number_value(v);
    if (!isfinite(x))
        return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "is not a finite number");
    *out = x;
    return MP_OK;
}

static int read_float(cfg_reader *r, json_t *obj, const char *key, float *out, bool *present)
{
    double x = *out;
    int rc = read_number(r, obj, key, &x, present);
    if (rc)
        return rc;
    if (fabs(x) > FLT_MAX)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "%g does not fit a 32-bit float", x);
    *out = (float)x;
    return MP_OK;
}

static int read_bool(cfg_reader *r, json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return MP_OK;
    if (!json_is_boolean(v))
        return type_error(r, key, "true or false", v);
    *out = json_is_true(v);
    return MP_OK;
}

/* A string key; *out stays NULL when absent. */
static int read_string(cfg_reader *r, json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return MP_OK;
    if (!json_is_string(v))
        return type_error(r, key, "a string", v);
    *out = json_string_value(v);
    return MP_OK;
}

/* bos_token_id / eos_token_id: an integer, null (-1), or a list whose first
 * element is used (some configs list several end-of-sequence ids). */
static int read_token_id(cfg_reader *r, json_t *obj, const char *key, int32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return MP_OK;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            return MP_OK;
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v))
        return type_error(r, key, "an integer, a list of integers or null", v);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > INT32_MAX)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, key), "%lld is not a valid token id", (long long)x);
    *out = (int32_t)x;
    return MP_OK;
}

/* rope_scaling (or transformers 5's rope_parameters, named by `what`): null,
 * "default" (plain RoPE) or yarn. */
static int read_rope_scaling(cfg_reader *r, json_t *rs, const char *what, mp_model_desc *d)
{
    if (!json_is_object(rs))
        return type_error(r, what, "an object or null", rs);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", what);
    r->prefix = prefix;
    const char *type = NULL, *rope_type = NULL;
    int rc = read_string(r, rs, "type", &type);
    if (!rc)
        rc = read_string(r, rs, "rope_type", &rope_type);
    if (rc)
        goto done;
    if (type && rope_type && strcmp(type, rope_type) != 0) {
        rc = mp_fail(r->err, MP_ERR_INPUT, r->path, what, "type '%.40s' and rope_type '%.40s' disagree", type,
                     rope_type);
        goto done;
    }
    const char *t = type ? type : rope_type;
    if (!t) {
        rc = mp_fail(r->err, MP_ERR_INPUT, r->path, what, "has neither 'type' nor 'rope_type'");
        goto done;
    }
    if (strcmp(t, "default") == 0)
        goto done; /* plain RoPE */
    if (strcmp(t, "yarn") != 0) {
        rc = mp_fail(r->err, MP_ERR_INPUT, r->path, what,
                     "unsupported RoPE scaling type '%.40s' (DeepSeek models use 'yarn')", t);
        goto done;
    }
    d->yarn.enabled = true;
    bool has_factor, has_original_max_pos, has_fast, has_slow;
    rc = read_float(r, rs, "factor", &d->yarn.factor, &has_factor);
    if (!rc && !has_factor)
        rc = mp_fail(r->err, MP_ERR_INPUT, r->path, label(r, "factor"), "required key is missing");
    if (!rc)
        rc = read_u32(r, rs, "original_max_position_embeddings", false, -1, &d->yarn.original_max_position_embeddings,
                      &has_original_max_pos);
    if (!rc && !has_original_max_pos)
        *r->defaulted |= MP_DEFAULTED_YARN_ORIGINAL_MAX_POS;
    if (!rc)
        rc = read_float(r, rs, "beta_fast", &d->yarn.beta_fast, &has_fast);
    if (!rc)
        rc = read_float(r, rs, "beta_slow", &d->yarn.beta_slow, &has_slow);
    if (!rc)
        rc = read_float(r, rs, "mscale", &d->yarn.mscale, NULL);
    if (!rc)
        rc = read_float(r, rs, "mscale_all_dim", &d->yarn.mscale_all_dim, NULL);
    if (!rc && (!has_fast || !has_slow))
        *r->defaulted |= MP_DEFAULTED_YARN_BETAS;
done:
    r->prefix = "";
    return rc;
}

static int read_quantization(cfg_reader *r, json_t *q, mp_model_desc *d)
{
    if (json_is_null(q))
        return MP_OK;
    if (!json_is_object(q))
        return type_error(r, "quantization_config", "an object or null", q);
    const char *method = NULL, *fmt = NULL;
    r->prefix = "quantization_config.";
    int rc = read_string(r, q, "quant_method", &method);
    if (!rc)
        rc = read_string(r, q, "fmt", &fmt);
    r->prefix = "";
    if (rc)
        return rc;
    if (!method)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "quantization_config.quant_method", "required key is missing");
    if (strcmp(method, "fp8") != 0)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "quantization_config.quant_method",
                       "'%.40s' is not supported (only block-scaled 'fp8' checkpoints are read)", method);
    if (fmt && strcmp(fmt, "e4m3") != 0)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "quantization_config.fmt",
                       "'%.40s' is not supported (only 'e4m3')", fmt);
    d->fp8_block_rows = d->fp8_block_cols = 128;
    json_t *bs = json_object_get(q, "weight_block_size");
    if (!bs || json_is_null(bs))
        return MP_OK;
    if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
        !json_is_integer(json_array_get(bs, 1)))
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "quantization_config.weight_block_size",
                       "must be a list of 2 integers");
    json_int_t br = json_integer_value(json_array_get(bs, 0)), bc = json_integer_value(json_array_get(bs, 1));
    if (br < 1 || bc < 1 || br > MP_MAX_FP8_BLOCK || bc > MP_MAX_FP8_BLOCK)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "quantization_config.weight_block_size",
                       "[%lld, %lld] is out of range (1..%u)", (long long)br, (long long)bc, MP_MAX_FP8_BLOCK);
    d->fp8_block_rows = (uint32_t)br;
    d->fp8_block_cols = (uint32_t)bc;
    return MP_OK;
}

void mp_model_desc_init(mp_model_desc *d)
{
    memset(d, 0, sizeof *d);
    d->n_group = d->topk_group = 1;
    d->moe_layer_freq = 1;
    d->bos_token_id = d->eos_token_id = -1;
    d->yarn.factor = 1.0f;
    d->yarn.beta_fast = 32.0f;
    d->yarn.beta_slow = 1.0f;
    d->yarn.mscale = 1.0f;
    d->yarn.mscale_all_dim = 0.0f;
}

static int parse_config(cfg_reader *r, json_t *root, mp_model_desc *d)
{
    if (!json_is_object(root))
        return mp_fail(r->err, MP_ERR_INPUT, r->path, NULL, "not a JSON object");
    const char *model_type;
    int rc = read_string(r, root, "model_type", &model_type);
    if (rc)
        return rc;
    if (!model_type)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "model_type", "required key is missing");
    const cfg_defaults *def;
    if (strcmp(model_type, "deepseek_v2") == 0)
        def = &defaults_v2;
    else if (strcmp(model_type, "deepseek_v3") == 0)
        def = &defaults_v3;
    else
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "model_type",
                       "'%.40s' is not supported (deepseek_v2 or deepseek_v3)", model_type);
    snprintf(d->model_type, sizeof d->model_type, "%s", model_type);

    /* unsupported variants of the architecture */
    const char *act;
    if ((rc = read_string(r, root, "hidden_act", &act)))
        return rc;
    if (act && strcmp(act, "silu") != 0)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "hidden_act", "'%.40s' is not supported (silu)", act);
    bool attention_bias = false;
    if ((rc = read_bool(r, root, "attention_bias", &attention_bias)))
        return rc;
    if (attention_bias)
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "attention_bias", "true is not supported");

    /* dimensions: required */
    static const struct {
        const char *key;
        size_t off;
    } required[] = {
        {"vocab_size", offsetof(mp_model_desc, vocab_size)},
        {"hidden_size", offsetof(mp_model_desc, hidden_size)},
        {"intermediate_size", offsetof(mp_model_desc, intermediate_size)},
        {"num_hidden_layers", offsetof(mp_model_desc, num_hidden_layers)},
        {"num_attention_heads", offsetof(mp_model_desc, num_attention_heads)},
        {"kv_lora_rank", offsetof(mp_model_desc, kv_lora_rank)},
        {"qk_nope_head_dim", offsetof(mp_model_desc, qk_nope_head_dim)},
        {"qk_rope_head_dim", offsetof(mp_model_desc, qk_rope_head_dim)},
        {"v_head_dim", offsetof(mp_model_desc, v_head_dim)},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if ((rc = read_u32(r, root, required[i].key, true, -1, (uint32_t *)((char *)d + required[i].off), NULL)))
            return rc;
    /* null = no query compression (V2-Lite); null n_routed_experts = dense */
    if ((rc = read_u32(r, root, "q_lora_rank", true, 0, &d->q_lora_rank, NULL)))
        return rc;
    if ((rc = read_u32(r, root, "n_routed_experts", true, 0, &d->n_routed_experts, NULL)))
        return rc;
    bool moe = d->n_routed_experts > 0;
    if ((rc = read_u32(r, root, "moe_intermediate_size", moe, -1, &d->moe_intermediate_size, NULL)))
        return rc;
    if ((rc = read_u32(r, root, "num_experts_per_tok", moe, 0, &d->num_experts_per_tok, NULL)))
        return rc;

    /* behaviour: reference defaults */
    d->n_shared_experts = def->n_shared_experts;
    if ((rc = read_u32(r, root, "n_shared_experts", false, 0, &d->n_shared_experts, NULL)))
        return rc;
    if ((rc = read_u32(r, root, "num_nextn_predict_layers", false, -1, &d->num_nextn_predict_layers, NULL)))
        return rc;
    bool has_group, has_topk_group;
    d->n_group = def->n_group;
    d->topk_group = def->topk_group;
    if ((rc = read_u32(r, root, "n_group", false, 1, &d->n_group, &has_group)))
        return rc;
    if ((rc = read_u32(r, root, "topk_group", false, 1, &d->topk_group, &has_topk_group)))
        return rc;
    if (!has_group || !has_topk_group)
        d->defaulted |= MP_DEFAULTED_GROUPS;
    d->first_k_dense_replace = def->first_k_dense_replace;
    if ((rc = read_u32(r, root, "first_k_dense_replace", false, -1, &d->first_k_dense_replace, NULL)))
        return rc;
    d->moe_layer_freq = def->moe_layer_freq;
    if ((rc = read_u32(r, root, "moe_layer_freq", false, -1, &d->moe_layer_freq, NULL)))
        return rc;

    const char *s;
    d->scoring_func = def->scoring_func;
    if ((rc = read_string(r, root, "scoring_func", &s)))
        return rc;
    if (s) {
        if (strcmp(s, "softmax") == 0)
            d->scoring_func = MP_SCORING_SOFTMAX;
        else if (strcmp(s, "sigmoid") == 0)
            d->scoring_func = MP_SCORING_SIGMOID;
        else
            return mp_fail(r->err, MP_ERR_INPUT, r->path, "scoring_func", "'%.40s' is not softmax or sigmoid", s);
    }
    d->topk_method = def->topk_method;
    if ((rc = read_string(r, root, "topk_method", &s)))
        return rc;
    if (!s) {
        d->defaulted |= MP_DEFAULTED_TOPK_METHOD;
    } else if (strcmp(s, "greedy") == 0 || strcmp(s, "gready") == 0) {
        /* "gready" is the reference V2 class's own default spelling */
        d->topk_method = MP_TOPK_GREEDY;
    } else if (strcmp(s, "group_limited_greedy") == 0) {
        d->topk_method = MP_TOPK_GROUP_LIMITED_GREEDY;
    } else if (strcmp(s, "noaux_tc") == 0) {
        d->topk_method = MP_TOPK_NOAUX_TC;
    } else {
        return mp_fail(r->err, MP_ERR_INPUT, r->path, "topk_method",
                       "'%.40s' is not greedy, group_limited_greedy or noaux_tc", s);
    }
    d->norm_topk_prob = def->norm_topk_prob;
    if ((rc = read_bool(r, root, "norm_topk_prob", &d->norm_topk_prob)))
        return rc;
    d->routed_scaling_factor = def->routed_scaling_factor;
    if ((rc = read_float(r, root, "routed_scaling_factor", &d->routed_scaling_factor, NULL)))
        return rc;
    d->rms_norm_eps = 1e-6f;
    if ((rc = read_float(r, root, "rms_norm_eps", &d->rms_norm_eps, NULL)))
        return rc;
    d->rope_theta = 10000.0;
    bool has_theta;
    if ((rc = read_number(r, root, "rope_theta", &d->rope_theta, &has_theta)))
        return rc;
    d->max_position_embeddings = def->max_position_embeddings;
    if ((rc = read_u32(r, root, "max_position_embeddings", false, -1, &d->max_position_embeddings, NULL)))
        return rc;

    d->yarn.original_max_position_embeddings = 4096;
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if ((rc = read_rope_scaling(r, rs, "rope_scaling", d)))
            return rc;
    } else if (!rs && (rs = json_object_get(root, "rope_parameters")) && !json_is_null(rs)) {
        /* transformers 5 writes rope_parameters, with rope_theta inside */
        if ((rc = read_rope_scaling(r, rs, "rope_parameters", d)))
            return rc;
        r->prefix = "rope_parameters.";
        rc = has_theta ? MP_OK : read_number(r, rs, "rope_theta", &d->rope_theta, NULL);
        r->prefix = "";
        if (rc)
            return rc;
    }
    if (!d->yarn.enabled) /* keep the "nothing known" values of init */
        d->yarn.original_max_position_embeddings = 0;

    json_t *q = json_object_get(root, "quantization_config");
    if (q && (rc = read_quantization(r, q, d)))
        return rc;
    if ((rc = read_bool(r, root, "tie_word_embeddings", &d->tie_word_embeddings)))
        return rc;
    if ((rc = read_token_id(r, root, "bos_token_id", &d->bos_token_id)))
        return rc;
    if ((rc = read_token_id(r, root, "eos_token_id", &d->eos_token_id)))
        return rc;
    return MP_OK;
}

int mp_model_desc_from_config_json(const char *json_text, size_t len, const char *path, mp_model_desc *d,
                                   mp_error *err)
{
    mp_model_desc_init(d);
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                       jerr.column);
    cfg_reader r = {.path = path, .err = err, .defaulted = &d->defaulted, .prefix = ""};
    int rc = parse_config(&r, root, d);
    json_decref(root);
    return rc;
}

/* ======================================================================
 * validation
 * ====================================================================== */

#define CHECK_RANGE(key, v, lo, hi)                                                                              \
    do {                                                                                                         \
        if ((uint64_t)(v) < (uint64_t)(lo) || (uint64_t)(v) > (uint64_t)(hi))                                    \
            return mp_fail(err, MP_ERR_INPUT, path, key, "%" PRIu64 " is out of range (%" PRIu64 "..%" PRIu64 ")", \
                           (uint64_t)(v), (uint64_t)(lo), (uint64_t)(hi));                                       \
    } while (0)

static bool finite_positive(double x)
{
    return isfinite(x) && x > 0;
}

int mp_model_desc_validate(const mp_model_desc *d, const char *path, mp_error *err)
{
    if (strnlen(d->model_type, sizeof d->model_type) == sizeof d->model_type ||
        (strcmp(d->model_type, "deepseek_v2") != 0 && strcmp(d->model_type, "deepseek_v3") != 0))
        return mp_fail(err, MP_ERR_INPUT, path, "model_type", "'%.31s' is not deepseek_v2 or deepseek_v3",
                       d->model_type);
    CHECK_RANGE("vocab_size", d->vocab_size, 1, MP_MAX_VOCAB);
    CHECK_RANGE("hidden_size", d->hidden_size, 1, MP_MAX_HIDDEN);
    CHECK_RANGE("num_hidden_layers", d->num_hidden_layers, 1, MP_MAX_LAYERS);
    CHECK_RANGE("num_nextn_predict_layers", d->num_nextn_predict_layers, 0, MP_MAX_NEXTN);
    if (d->num_hidden_layers + d->num_nextn_predict_layers > MP_MAX_LAYERS)
        return mp_fail(err, MP_ERR_INPUT, path, "num_nextn_predict_layers",
                       "%u layers with num_hidden_layers %u are more than %u", d->num_nextn_predict_layers,
                       d->num_hidden_layers, MP_MAX_LAYERS);
    CHECK_RANGE("num_attention_heads", d->num_attention_heads, 1, MP_MAX_HEADS);
    CHECK_RANGE("q_lora_rank", d->q_lora_rank, 0, MP_MAX_LORA_RANK);
    CHECK_RANGE("kv_lora_rank", d->kv_lora_rank, 1, MP_MAX_LORA_RANK);
    CHECK_RANGE("qk_nope_head_dim", d->qk_nope_head_dim, 1, MP_MAX_HEAD_DIM);
    CHECK_RANGE("qk_rope_head_dim", d->qk_rope_head_dim, 1, MP_MAX_ROPE_HEAD_DIM);
    if (d->qk_rope_head_dim % 2)
        return mp_fail(err, MP_ERR_INPUT, path, "qk_rope_head_dim", "%u is odd; rotary dims come in pairs",
                       d->qk_rope_head_dim);
    CHECK_RANGE("v_head_dim", d->v_head_dim, 1, MP_MAX_HEAD_DIM);
    CHECK_RANGE("intermediate_size", d->intermediate_size, 0, MP_MAX_FFN);
    CHECK_RANGE("moe_layer_freq", d->moe_layer_freq, 1, MP_MAX_LAYERS);
    CHECK_RANGE("first_k_dense_replace", d->first_k_dense_replace, 0, d->num_hidden_layers);
    CHECK_RANGE("n_routed_experts", d->n_routed_experts, 0, MP_MAX_EXPERTS);
    CHECK_RANGE("n_shared_experts", d->n_shared_experts, 0, MP_MAX_SHARED_EXPERTS);

    /* a dense layer exists unless every layer is MoE */
    bool has_dense = d->n_routed_experts == 0;
    for (uint32_t l = 0; l < d->num_hidden_layers && !has_dense; l++)
        has_dense = !mp_layer_is_moe(d, l);
    if (has_dense && d->intermediate_size == 0)
        return mp_fail(err, MP_ERR_INPUT, path, "intermediate_size", "is 0 but the model has dense MLP layers");

    if (d->n_routed_experts > 0) {
        CHECK_RANGE("moe_intermediate_size", d->moe_intermediate_size, 1, MP_MAX_FFN);
        CHECK_RANGE("num_experts_per_tok", d->num_experts_per_tok, 1, d->n_routed_experts);
        CHECK_RANGE("n_group", d->n_group, 1, d->n_routed_experts);
        if (d->n_routed_experts % d->n_group)
            return mp_fail(err, MP_ERR_INPUT, path, "n_group", "%u does not divide n_routed_experts (%u)", d->n_group,
                           d->n_routed_experts);
        CHECK_RANGE("topk_group", d->topk_group, 1, d->n_group);
        uint32_t per_group = d->n_routed_experts / d->n_group;
        if (d->topk_method != MP_TOPK_GREEDY && d->num_experts_per_tok > (uint64_t)d->topk_group * per_group)
            return mp_fail(err, MP_ERR_INPUT, path, "num_experts_per_tok",
                           "%u experts cannot be chosen from topk_group %u groups of %u experts",
                           d->num_experts_per_tok, d->topk_group, per_group);
        /* noaux_tc ranks groups by the sum of their two best experts */
        if (d->topk_method == MP_TOPK_NOAUX_TC && per_group < 2)
            return mp_fail(err, MP_ERR_INPUT, path, "n_group",
                           "noaux_tc needs at least 2 experts per group (n_routed_experts %u, n_group %u)",
                           d->n_routed_experts, d->n_group);
        if (!finite_positive(d->routed_scaling_factor))
            return mp_fail(err, MP_ERR_INPUT, path, "routed_scaling_factor", "%g is not a positive finite number",
                           (double)d->routed_scaling_factor);
    }
    if ((unsigned)d->scoring_func > MP_SCORING_SIGMOID)
        return mp_fail(err, MP_ERR_INPUT, path, "scoring_func", "invalid value %d", (int)d->scoring_func);
    if ((unsigned)d->topk_method > MP_TOPK_NOAUX_TC)
        return mp_fail(err, MP_ERR_INPUT, path, "topk_method", "invalid value %d", (int)d->topk_method);
    if (!finite_positive(d->rms_norm_eps) || d->rms_norm_eps >= 1.0f)
        return mp_fail(err, MP_ERR_INPUT, path, "rms_norm_eps", "%g is not in (0, 1)", (double)d->rms_norm_eps);
    /* the rope frequencies are theta^(-2i/dim) and YaRN divides by ln(theta):
     * at 1 that is a division by zero, below 1 the frequencies grow instead
     * of decaying (the converter's attention constants refuse both) */
    if (!isfinite(d->rope_theta) || d->rope_theta <= 1.0)
        return mp_fail(err, MP_ERR_INPUT, path, "rope_theta", "%g is not a finite number greater than 1",
                       d->rope_theta);
    CHECK_RANGE("max_position_embeddings", d->max_position_embeddings, 1, MP_MAX_POSITIONS);
    if (d->yarn.enabled) {
        if (!finite_positive(d->yarn.factor))
            return mp_fail(err, MP_ERR_INPUT, path, "rope_scaling.factor", "%g is not a positive finite number",
                           (double)d->yarn.factor);
        CHECK_RANGE("rope_scaling.original_max_position_embeddings", d->yarn.original_max_position_embeddings, 1,
                    MP_MAX_POSITIONS);
        if (!finite_positive(d->yarn.beta_fast) || !finite_positive(d->yarn.beta_slow))
            return mp_fail(err, MP_ERR_INPUT, path, "rope_scaling.beta_fast",
                           "beta_fast %g and beta_slow %g must be positive finite numbers", (double)d->yarn.beta_fast,
                           (double)d->yarn.beta_slow);
        if (!isfinite(d->yarn.mscale) || d->yarn.mscale < 0 || !isfinite(d->yarn.mscale_all_dim) ||
            d->yarn.mscale_all_dim < 0)
            return mp_fail(err, MP_ERR_INPUT, path, "rope_scaling.mscale",
                           "mscale %g and mscale_all_dim %g must be finite and >= 0", (double)d->yarn.mscale,
                           (double)d->yarn.mscale_all_dim);
    }
    if ((d->fp8_block_rows == 0) != (d->fp8_block_cols == 0) || d->fp8_block_rows > MP_MAX_FP8_BLOCK ||
        d->fp8_block_cols > MP_MAX_FP8_BLOCK)
        return mp_fail(err, MP_ERR_INPUT, path, "quantization_config.weight_block_size",
                       "[%u, %u] is invalid (both 0, or both 1..%u)", d->fp8_block_rows, d->fp8_block_cols,
                       MP_MAX_FP8_BLOCK);
    if (d->bos_token_id < -1 || (d->bos_token_id >= 0 && (uint32_t)d->bos_token_id >= d->vocab_size))
        return mp_fail(err, MP_ERR_INPUT, path, "bos_token_id", "%d is not a token of a %u-token vocabulary",
                       (int)d->bos_token_id, d->vocab_size);
    if (d->eos_token_id < -1 || (d->eos_token_id >= 0 && (uint32_t)d->eos_token_id >= d->vocab_size))
        return mp_fail(err, MP_ERR_INPUT, path, "eos_token_id", "%d is not a token of a %u-token vocabulary",
                       (int)d->eos_token_id, d->vocab_size);
    return MP_OK;
}

/* ======================================================================
 * printing and comparing
 * ====================================================================== */

static const char *scoring_name(mp_scoring_func s)
{
    return s == MP_SCORING_SOFTMAX ? "softmax" : s == MP_SCORING_SIGMOID ? "sigmoid" : "invalid";
}

static const char *topk_name(mp_topk_method m)
{
    switch (m) {
    case MP_TOPK_GREEDY: return "greedy";
    case MP_TOPK_GROUP_LIMITED_GREEDY: return "group_limited_greedy";
    case MP_TOPK_NOAUX_TC: return "noaux_tc";
    default: return "invalid";
    }
}

void mp_model_desc_print(const mp_model_desc *d, void *file)
{
    FILE *f = file;
    const char *dflt_groups = (d->defaulted & MP_DEFAULTED_GROUPS) ? " (defaulted)" : "";
    fprintf(f, "model_type: %s\n", d->model_type);
    fprintf(f, "vocab_size: %u\n", d->vocab_size);
    fprintf(f, "hidden_size: %u\n", d->hidden_size);
    fprintf(f, "intermediate_size: %u\n", d->intermediate_size);
    fprintf(f, "moe_intermediate_size: %u\n", d->moe_intermediate_size);
    fprintf(f, "num_hidden_layers: %u\n", d->num_hidden_layers);
    fprintf(f, "num_nextn_predict_layers: %u\n", d->num_nextn_predict_layers);
    fprintf(f, "num_attention_heads: %u\n", d->num_attention_heads);
    fprintf(f, "q_lora_rank: %u%s\n", d->q_lora_rank, d->q_lora_rank ? "" : " (none: plain q_proj)");
    fprintf(f, "kv_lora_rank: %u\n", d->kv_lora_rank);
    fprintf(f, "qk_nope_head_dim: %u\n", d->qk_nope_head_dim);
    fprintf(f, "qk_rope_head_dim: %u\n", d->qk_rope_head_dim);
    fprintf(f, "v_head_dim: %u\n", d->v_head_dim);
    fprintf(f, "n_routed_experts: %u\n", d->n_routed_experts);
    fprintf(f, "n_shared_experts: %u\n", d->n_shared_experts);
    fprintf(f, "num_experts_per_tok: %u\n", d->num_experts_per_tok);
    fprintf(f, "n_group: %u%s\n", d->n_group, dflt_groups);
    fprintf(f, "topk_group: %u%s\n", d->topk_group, dflt_groups);
    fprintf(f, "first_k_dense_replace: %u\n", d->first_k_dense_replace);
    fprintf(f, "moe_layer_freq: %u%s\n", d->moe_layer_freq,
            (d->defaulted & MP_DEFAULTED_MOE_LAYER_FREQ) ? " (defaulted)" : "");
    fprintf(f, "scoring_func: %s\n", scoring_name(d->scoring_func));
    fprintf(f, "topk_method: %s%s\n", topk_name(d->topk_method),
            (d->defaulted & MP_DEFAULTED_TOPK_METHOD) ? " (defaulted)" : "");
    fprintf(f, "norm_topk_prob: %s\n", d->norm_topk_prob ? "true" : "false");
    fprintf(f, "routed_scaling_factor: %g\n", (double)d->routed_scaling_factor);
    fprintf(f, "rms_norm_eps: %g\n", (double)d->rms_norm_eps);
    fprintf(f, "rope_theta: %g\n", d->rope_theta);
    fprintf(f, "max_position_embeddings: %u\n", d->max_position_embeddings);
    if (d->yarn.enabled) {
        fprintf(f, "rope_scaling: yarn factor %g, original_max_position_embeddings %u%s, beta_fast %g, beta_slow %g%s, "
                   "mscale %g%s, mscale_all_dim %g\n",
                (double)d->yarn.factor, d->yarn.original_max_position_embeddings,
                (d->defaulted & MP_DEFAULTED_YARN_ORIGINAL_MAX_POS) ? " (defaulted)" : "", (double)d->yarn.beta_fast,
                (double)d->yarn.beta_slow, (d->defaulted & MP_DEFAULTED_YARN_BETAS) ? " (defaulted)" : "",
                (double)d->yarn.mscale, (d->defaulted & MP_DEFAULTED_MSCALE) ? " (defaulted)" : "",
                (double)d->yarn.mscale_all_dim);
    } else {
        fprintf(f, "rope_scaling: none\n");
    }
    if (d->fp8_block_rows)
        fprintf(f, "quantization: fp8 e4m3, blocks %ux%u\n", d->fp8_block_rows, d->fp8_block_cols);
    else
        fprintf(f, "quantization: none\n");
    fprintf(f, "tie_word_embeddings: %s\n", d->tie_word_embeddings ? "true" : "false");
    fprintf(f, "bos_token_id: %d\n", (int)d->bos_token_id);
    fprintf(f, "eos_token_id: %d\n", (int)d->eos_token_id);
}

/* Floats that went through another format (GGUF stores f32, and derives some
 * values, e.g. mscale_all_dim from yarn_log_multiplier = 0.1 * mscale_all_dim)
 * are equal when within a relative 1e-6. */
static bool close_enough(double a, double b)
{
    if (a == b)
        return true;
    return fabs(a - b) <= 1e-6 * fmax(fabs(a), fabs(b));
}

bool mp_model_desc_equal(const mp_model_desc *a, const mp_model_desc *b, char *what, size_t what_len)
{
    uint32_t skip = a->defaulted | b->defaulted;
    const char *diff = NULL;
#define CMP_INT(field)                                                                                           \
    if (!diff && a->field != b->field)                                                                           \
    diff = #field
#define CMP_FLT(field)                                                                                           \
    if (!diff && !close_enough(a->field, b->field))                                                              \
    diff = #field
    /* model_type is not compared: a GGUF file records only the "deepseek2"
     * architecture, and the fields below are what makes the models differ.
     * Nor is the FP8 block size, a property of one checkpoint's encoding. */
    CMP_INT(vocab_size);
    CMP_INT(hidden_size);
    CMP_INT(intermediate_size);
    CMP_INT(moe_intermediate_size);
    CMP_INT(num_hidden_layers);
    CMP_INT(num_nextn_predict_layers);
    CMP_INT(num_attention_heads);
    CMP_INT(n_routed_experts);
    CMP_INT(n_shared_experts);
    CMP_INT(num_experts_per_tok);
    if (!(skip & MP_DEFAULTED_GROUPS)) {
        CMP_INT(n_group);
        CMP_INT(topk_group);
    }
    CMP_INT(first_k_dense_replace);
    if (!(skip & MP_DEFAULTED_MOE_LAYER_FREQ))
        CMP_INT(moe_layer_freq);
    CMP_INT(q_lora_rank);
    CMP_INT(kv_lora_rank);
    CMP_INT(qk_nope_head_dim);
    CMP_INT(qk_rope_head_dim);
    CMP_INT(v_head_dim);
    CMP_INT(scoring_func);
    if (!(skip & MP_DEFAULTED_TOPK_METHOD))
        CMP_INT(topk_method);
    CMP_INT(norm_topk_prob);
    CMP_FLT(routed_scaling_factor);
    CMP_FLT(rms_norm_eps);
    /* rope_theta: as the f32 a GGUF file can hold */
    if (!diff && !close_enough((float)a->rope_theta, (float)b->rope_theta))
        diff = "rope_theta";
    CMP_INT(max_position_embeddings);
    CMP_INT(yarn.enabled);
    if (a->yarn.enabled && b->yarn.enabled) {
        CMP_FLT(yarn.factor);
        if (!(skip & MP_DEFAULTED_YARN_ORIGINAL_MAX_POS))
            CMP_INT(yarn.original_max_position_embeddings);
        if (!(skip & MP_DEFAULTED_YARN_BETAS)) {
            CMP_FLT(yarn.beta_fast);
            CMP_FLT(yarn.beta_slow);
        }
        if (!(skip & MP_DEFAULTED_MSCALE))
            CMP_FLT(yarn.mscale);
        CMP_FLT(yarn.mscale_all_dim);
    }
    CMP_INT(tie_word_embeddings);
    /* -1 = not recorded by that source */
    if (!diff && a->bos_token_id >= 0 && b->bos_token_id >= 0 && a->bos_token_id != b->bos_token_id)
        diff = "bos_token_id";
    if (!diff && a->eos_token_id >= 0 && b->eos_token_id >= 0 && a->eos_token_id != b->eos_token_id)
        diff = "eos_token_id";
#undef CMP_INT
#undef CMP_FLT
    if (diff && what && what_len)
        snprintf(what, what_len, "%s", diff);
    return diff == NULL;
}

void mp_model_desc_take_stated(mp_model_desc *dst, const mp_model_desc *src)
{
    const uint32_t take = dst->defaulted & ~src->defaulted;
    if (take & MP_DEFAULTED_GROUPS) {
        dst->n_group = src->n_group;
        dst->topk_group = src->topk_group;
    }
    if (take & MP_DEFAULTED_TOPK_METHOD)
        dst->topk_method = src->topk_method;
    if (take & MP_DEFAULTED_MOE_LAYER_FREQ)
        dst->moe_layer_freq = src->moe_layer_freq;
    if (take & MP_DEFAULTED_YARN_ORIGINAL_MAX_POS)
        dst->yarn.original_max_position_embeddings = src->yarn.original_max_position_embeddings;
    if (take & MP_DEFAULTED_YARN_BETAS) {
        dst->yarn.beta_fast = src->yarn.beta_fast;
        dst->yarn.beta_slow = src->yarn.beta_slow;
    }
    if (take & MP_DEFAULTED_MSCALE)
        dst->yarn.mscale = src->yarn.mscale;
    dst->defaulted &= ~take;
}

/* ======================================================================
 * tensor names
 * ====================================================================== */

static const char *const role_names[MP_ROLE_COUNT] = {
    [MP_ROLE_UNKNOWN] = "unknown",
    [MP_ROLE_TOKEN_EMBD] = "token_embd",
    [MP_ROLE_OUTPUT_NORM] = "output_norm",
    [MP_ROLE_LM_HEAD] = "lm_head",
    [MP_ROLE_ATTN_NORM] = "attn_norm",
    [MP_ROLE_FFN_NORM] = "ffn_norm",
    [MP_ROLE_Q_PROJ] = "attn_q",
    [MP_ROLE_Q_A] = "attn_q_a",
    [MP_ROLE_Q_A_NORM] = "attn_q_a_norm",
    [MP_ROLE_Q_B] = "attn_q_b",
    [MP_ROLE_KV_A_MQA] = "attn_kv_a_mqa",
    [MP_ROLE_KV_A_NORM] = "attn_kv_a_norm",
    [MP_ROLE_KV_B] = "attn_kv_b",
    [MP_ROLE_K_B] = "attn_k_b",
    [MP_ROLE_V_B] = "attn_v_b",
    [MP_ROLE_ATTN_OUT] = "attn_output",
    [MP_ROLE_FFN_GATE] = "ffn_gate",
    [MP_ROLE_FFN_UP] = "ffn_up",
    [MP_ROLE_FFN_DOWN] = "ffn_down",
    [MP_ROLE_ROUTER] = "router",
    [MP_ROLE_ROUTER_BIAS] = "router_bias",
    [MP_ROLE_EXP_GATE] = "exp_gate",
    [MP_ROLE_EXP_UP] = "exp_up",
    [MP_ROLE_EXP_DOWN] = "exp_down",
    [MP_ROLE_SHEXP_GATE] = "shexp_gate",
    [MP_ROLE_SHEXP_UP] = "shexp_up",
    [MP_ROLE_SHEXP_DOWN] = "shexp_down",
    [MP_ROLE_MTP_EMBED] = "mtp_embed",
    [MP_ROLE_MTP_ENORM] = "mtp_enorm",
    [MP_ROLE_MTP_HNORM] = "mtp_hnorm",
    [MP_ROLE_MTP_EH_PROJ] = "mtp_eh_proj",
    [MP_ROLE_MTP_HEAD_NORM] = "mtp_head_norm",
    [MP_ROLE_MTP_HEAD] = "mtp_head",
    [MP_ROLE_W_UK] = "w_uk",
    [MP_ROLE_W_UV] = "w_uv",
};

const char *mp_role_name(mp_role role)
{
    if ((unsigned)role >= MP_ROLE_COUNT || !role_names[role])
        return "unknown";
    return role_names[role];
}

const char *mp_tensor_place(int32_t layer, int32_t expert, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = 0;
    if (layer >= 0)
        snprintf(buf, len, " of layer %d", layer);
    if (expert >= 0)
        snprintf(buf + strlen(buf), len - strlen(buf), ", expert %d", expert);
    return buf;
}

typedef struct name_rule {
    const char *suffix;
    mp_role role;
} name_rule;

/* Within "model.layers.L." */
static const name_rule hf_layer_rules[] = {
    {"input_layernorm.weight", MP_ROLE_ATTN_NORM},
    {"post_attention_layernorm.weight", MP_ROLE_FFN_NORM},
    {"self_attn.q_proj.weight", MP_ROLE_Q_PROJ},
    {"self_attn.q_a_proj.weight", MP_ROLE_Q_A},
    {"self_attn.q_a_layernorm.weight", MP_ROLE_Q_A_NORM},
    {"self_attn.q_b_proj.weight", MP_ROLE_Q_B},
    {"self_attn.kv_a_proj_with_mqa.weight", MP_ROLE_KV_A_MQA},
    {"self_attn.kv_a_layernorm.weight", MP_ROLE_KV_A_NORM},
    {"self_attn.kv_b_proj.weight", MP_ROLE_KV_B},
    {"self_attn.o_proj.weight", MP_ROLE_ATTN_OUT},
    {"mlp.gate_proj.weight", MP_ROLE_FFN_GATE},
    {"mlp.up_proj.weight", MP_ROLE_FFN_UP},
    {"mlp.down_proj.weight", MP_ROLE_FFN_DOWN},
    {"mlp.gate.weight", MP_ROLE_ROUTER},
    {"mlp.gate.e_score_correction_bias", MP_ROLE_ROUTER_BIAS},
    {"mlp.shared_experts.gate_proj.weight", MP_ROLE_SHEXP_GATE},
    {"mlp.shared_experts.up_proj.weight", MP_ROLE_SHEXP_UP},
    {"mlp.shared_experts.down_proj.weight", MP_ROLE_SHEXP_DOWN},
    /* MTP layers (index >= num_hidden_layers) add these to a full layer */
    {"embed_tokens.weight", MP_ROLE_MTP_EMBED},
    {"enorm.weight", MP_ROLE_MTP_ENORM},
    {"hnorm.weight", MP_ROLE_MTP_HNORM},
    {"eh_proj.weight", MP_ROLE_MTP_EH_PROJ},
    {"shared_head.norm.weight", MP_ROLE_MTP_HEAD_NORM},
    {"shared_head.head.weight", MP_ROLE_MTP_HEAD},
};

/* Within "model.layers.L.mlp.experts.E." */
static const name_rule hf_expert_rules[] = {
    {"gate_proj.weight", MP_ROLE_EXP_GATE},
    {"up_proj.weight", MP_ROLE_EXP_UP},
    {"down_proj.weight", MP_ROLE_EXP_DOWN},
};

static const name_rule hf_global_rules[] = {
    {"model.embed_tokens.weight", MP_ROLE_TOKEN_EMBD},
    {"model.norm.weight", MP_ROLE_OUTPUT_NORM},
    {"lm_head.weight", MP_ROLE_LM_HEAD},
};

/* Within "blk.L.", as llama.cpp's converter names deepseek2 tensors. */
static const name_rule gguf_layer_rules[] = {
    {"attn_norm.weight", MP_ROLE_ATTN_NORM},
    {"ffn_norm.weight", MP_ROLE_FFN_NORM},
    {"attn_q.weight", MP_ROLE_Q_PROJ},
    {"attn_q_a.weight", MP_ROLE_Q_A},
    {"attn_q_a_norm.weight", MP_ROLE_Q_A_NORM},
    {"attn_q_b.weight", MP_ROLE_Q_B},
    {"attn_kv_a_mqa.weight", MP_ROLE_KV_A_MQA},
    {"attn_kv_a_norm.weight", MP_ROLE_KV_A_NORM},
    {"attn_kv_b.weight", MP_ROLE_KV_B},
    {"attn_k_b.weight", MP_ROLE_K_B},
    {"attn_v_b.weight", MP_ROLE_V_B},
    {"attn_output.weight", MP_ROLE_ATTN_OUT},
    {"ffn_gate.weight", MP_ROLE_FFN_GATE},
    {"ffn_up.weight", MP_ROLE_FFN_UP},
    {"ffn_down.weight", MP_ROLE_FFN_DOWN},
    {"ffn_gate_inp.weight", MP_ROLE_ROUTER},
    {"exp_probs_b.bias", MP_ROLE_ROUTER_BIAS},
    {"ffn_gate_exps.weight", MP_ROLE_EXP_GATE},
    {"ffn_up_exps.weight", MP_ROLE_EXP_UP},
    {"ffn_down_exps.weight", MP_ROLE_EXP_DOWN},
    {"ffn_gate_shexp.weight", MP_ROLE_SHEXP_GATE},
    {"ffn_up_shexp.weight", MP_ROLE_SHEXP_UP},
    {"ffn_down_shexp.weight", MP_ROLE_SHEXP_DOWN},
    {"nextn.embed_tokens.weight", MP_ROLE_MTP_EMBED},
    {"nextn.enorm.weight", MP_ROLE_MTP_ENORM},
    {"nextn.hnorm.weight", MP_ROLE_MTP_HNORM},
    {"nextn.eh_proj.weight", MP_ROLE_MTP_EH_PROJ},
    {"nextn.shared_head_norm.weight", MP_ROLE_MTP_HEAD_NORM},
    {"nextn.shared_head_head.weight", MP_ROLE_MTP_HEAD},
};

static const name_rule gguf_global_rules[] = {
    {"token_embd.weight", MP_ROLE_TOKEN_EMBD},
    {"output_norm.weight", MP_ROLE_OUTPUT_NORM},
    {"output.weight", MP_ROLE_LM_HEAD},
};

static const char *rule_suffix(const name_rule *rules, size_t n, mp_role role)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].role == role)
            return rules[i].suffix;
    return NULL;
}

const char *mp_tensor_source_name(bool gguf, mp_role role, int32_t layer, int32_t expert, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = 0;
    const char *s;
    if (layer < 0) {
        s = gguf ? rule_suffix(gguf_global_rules, sizeof gguf_global_rules / sizeof *gguf_global_rules, role)
                 : rule_suffix(hf_global_rules, sizeof hf_global_rules / sizeof *hf_global_rules, role);
        if (s)
            snprintf(buf, len, "%s", s);
    } else if (gguf) {
        s = rule_suffix(gguf_layer_rules, sizeof gguf_layer_rules / sizeof *gguf_layer_rules, role);
        if (s)
            snprintf(buf, len, "blk.%d.%s", layer, s);
    } else if (expert >= 0) {
        s = rule_suffix(hf_expert_rules, sizeof hf_expert_rules / sizeof *hf_expert_rules, role);
        if (s)
            snprintf(buf, len, "model.layers.%d.mlp.experts.%d.%s", layer, expert, s);
    } else {
        s = rule_suffix(hf_layer_rules, sizeof hf_layer_rules / sizeof *hf_layer_rules, role);
        if (s)
            snprintf(buf, len, "model.layers.%d.%s", layer, s);
    }
    return buf;
}

const char *mp_model_desc_role_reason(const mp_model_desc *d, mp_role role, int32_t layer, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = 0;
    bool moe = layer >= 0 && mp_layer_is_moe(d, (uint32_t)layer);
    switch (role) {
    case MP_ROLE_Q_PROJ: case MP_ROLE_Q_A: case MP_ROLE_Q_A_NORM: case MP_ROLE_Q_B:
        if (d->q_lora_rank)
            snprintf(buf, len, "q_lora_rank is %u", d->q_lora_rank);
        else
            snprintf(buf, len, "q_lora_rank is null");
        break;
    case MP_ROLE_ROUTER_BIAS:
        snprintf(buf, len, "topk_method is %s", topk_name(d->topk_method));
        break;
    case MP_ROLE_SHEXP_GATE: case MP_ROLE_SHEXP_UP: case MP_ROLE_SHEXP_DOWN:
        snprintf(buf, len, "n_shared_experts is %u", d->n_shared_experts);
        break;
    case MP_ROLE_FFN_GATE: case MP_ROLE_FFN_UP: case MP_ROLE_FFN_DOWN:
    case MP_ROLE_ROUTER: case MP_ROLE_EXP_GATE: case MP_ROLE_EXP_UP: case MP_ROLE_EXP_DOWN:
        if (layer >= (int32_t)d->num_hidden_layers)
            snprintf(buf, len, "layer %d is a multi-token-prediction layer, a MoE layer", layer);
        else
            snprintf(buf, len, "layer %d is %s (first_k_dense_replace %u, moe_layer_freq %u)", layer,
                     moe ? "a MoE layer" : "dense", d->first_k_dense_replace, d->moe_layer_freq);
        break;
    case MP_ROLE_LM_HEAD:
        snprintf(buf, len, "tie_word_embeddings is %s", d->tie_word_embeddings ? "true" : "false");
        break;
    default:
        break;
    }
    return buf;
}

static bool match_rule(const name_rule *rules, size_t n, const char *s, mp_role *role)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rules[i].suffix, s) == 0) {
            *role = rules[i].role;
            return true;
        }
    return false;
}

/* Consumes `prefix` at *p. */
static bool eat(const char **p, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(*p, prefix, n) != 0)
        return false;
    *p += n;
    return true;
}

/* A layer or expert index followed by '.': decimal digits only, no sign, no
 * leading zero (so every index has one spelling), at most INT32_MAX. */
static bool eat_index(const char **p, int32_t *out)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return false;
    if (s[0] == '0' && s[1] != '.')
        return false;
    int64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > INT32_MAX)
            return false;
        s++;
    }
    if (*s != '.')
        return false;
    *out = (int32_t)v;
    *p = s + 1;
    return true;
}

static void id_clear(mp_tensor_id *out)
{
    out->role = MP_ROLE_UNKNOWN;
    out->layer = -1;
    out->expert = -1;
    out->is_scale_inv = false;
}

#define N_RULES(a) (sizeof(a) / sizeof((a)[0]))

static bool map_hf_plain(const char *name, mp_tensor_id *out)
{
    const char *p = name;
    mp_role role;
    if (match_rule(hf_global_rules, N_RULES(hf_global_rules), p, &role)) {
        out->role = role;
        return true;
    }
    int32_t layer, expert;
    if (!eat(&p, "model.layers.") || !eat_index(&p, &layer))
        return false;
    if (eat(&p, "mlp.experts.")) {
        if (!eat_index(&p, &expert) || !match_rule(hf_expert_rules, N_RULES(hf_expert_rules), p, &role))
            return false;
        out->expert = expert;
    } else if (!match_rule(hf_layer_rules, N_RULES(hf_layer_rules), p, &role)) {
        return false;
    }
    out->role = role;
    out->layer = layer;
    return true;
}

/* Roles that are matrices, so may be FP8 with a block scale. */
static bool role_is_matrix(mp_role r)
{
    switch (r) {
    case MP_ROLE_TOKEN_EMBD:
    case MP_ROLE_LM_HEAD:
    case MP_ROLE_Q_PROJ:
    case MP_ROLE_Q_A:
    case MP_ROLE_Q_B:
    case MP_ROLE_KV_A_MQA:
    case MP_ROLE_KV_B:
    case MP_ROLE_ATTN_OUT:
    case MP_ROLE_FFN_GATE:
    case MP_ROLE_FFN_UP:
    case MP_ROLE_FFN_DOWN:
    case MP_ROLE_ROUTER:
    case MP_ROLE_EXP_GATE:
    case MP_ROLE_EXP_UP:
    case MP_ROLE_EXP_DOWN:
    case MP_ROLE_SHEXP_GATE:
    case MP_ROLE_SHEXP_UP:
    case MP_ROLE_SHEXP_DOWN:
    case MP_ROLE_MTP_EMBED:
    case MP_ROLE_MTP_EH_PROJ:
    case MP_ROLE_MTP_HEAD:
        return true;
    default:
        return false;
    }
}

bool mp_name_map_hf(const char *name, mp_tensor_id *out)
{
    id_clear(out);
    static const char scale_suffix[] = "_scale_inv";
    size_t n = strlen(name), ls = sizeof scale_suffix - 1;
    bool ok;
    if (n > ls && strcmp(name + n - ls, scale_suffix) == 0) {
        /* "<weight name>_scale_inv": the FP8 companion of a matrix */
        char base[256];
        if (n - ls >= sizeof base)
            return false;
        memcpy(base, name, n - ls);
        base[n - ls] = '\0';
        ok = map_hf_plain(base, out) && role_is_matrix(out->role);
        out->is_scale_inv = ok;
    } else {
        ok = map_hf_plain(name, out);
    }
    if (!ok)
        id_clear(out);
    return ok;
}

bool mp_name_map_gguf(const char *name, mp_tensor_id *out)
{
    id_clear(out);
    const char *p = name;
    mp_role role;
    if (match_rule(gguf_global_rules, N_RULES(gguf_global_rules), p, &role)) {
        out->role = role;
        return true;
    }
    int32_t layer;
    if (!eat(&p, "blk.") || !eat_index(&p, &layer) || !match_rule(gguf_layer_rules, N_RULES(gguf_layer_rules), p, &role))
        return false;
    out->role = role;
    out->layer = layer;
    return true;
}

/* A name under "PREFIX<digits>.": true, with *layer the index (or -1 when
 * it is not a strict one) and *rest what follows. */
static bool under_layer(const char *name, const char *prefix, int32_t *layer, const char **rest)
{
    const char *p = name;
    if (!eat(&p, prefix))
        return false;
    const char *q = p;
    int32_t l;
    if (eat_index(&q, &l)) {
        *layer = l;
        *rest = q;
        return true;
    }
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == name + strlen(prefix) || *p != '.')
        return false;
    *layer = -1;
    *rest = p + 1;
    return true;
}

mp_unknown_kind mp_unknown_tensor_kind(bool gguf, const char *name, int32_t *layer)
{
    *layer = -1;
    const char *rest;
    size_t n = strlen(name);
    static const char inv_freq[] = "rotary_emb.inv_freq";
    if (!gguf && n >= sizeof inv_freq - 1 && strcmp(name + n - (sizeof inv_freq - 1), inv_freq) == 0) {
        under_layer(name, "model.layers.", layer, &rest);
        return MP_UNKNOWN_DERIVED;
    }
    /* Anything under a decoder layer takes part in its computation, whatever
     * its name (llama.cpp names V3.2's indexer blk.N.indexer.*); so do the
     * global norm's and head's biases. */
    if (under_layer(name, gguf ? "blk." : "model.layers.", layer, &rest))
        return MP_UNKNOWN_LAYER_PART;
    if (gguf ? (!strcmp(name, "output.bias") || !strcmp(name, "output_norm.bias"))
             : (!strcmp(name, "lm_head.bias") || !strcmp(name, "model.norm.bias")))
        return MP_UNKNOWN_LAYER_PART;
    return MP_UNKNOWN_OTHER;
}

const char *mp_unknown_kind_name(mp_unknown_kind kind)
{
    switch (kind) {
    case MP_UNKNOWN_DERIVED: return "derived buffer";
    case MP_UNKNOWN_LAYER_PART: return "part of the model's computation";
    default: return "unknown";
    }
}
