/* The presets of `moepack synth` and their config.json.
 *
 * Keys, values and key order are those of the official config.json files on
 * Hugging Face (deepseek-ai/DeepSeek-V3 and -R1 in their current revisions,
 * DeepSeek-V2, DeepSeek-V2-Lite), which transformers writes sorted, indented
 * by 2, with Python's float spelling (1e-06, 16.0). Only num_hidden_layers,
 * first_k_dense_replace, num_nextn_predict_layers (1 with the MTP layer, else
 * 0), vocab_size and the token ids follow the options, and quantization_config
 * is present exactly when the weights are FP8. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "synth_internal.h"

typedef struct synth_preset {
    const char *name;
    mp_synth_family family;
    uint32_t vocab, hidden, intermediate, moe_intermediate, layers, dense, heads;
    uint32_t n_routed, n_shared, topk, n_group, topk_group;
    uint32_t q_lora, kv_lora, nope, rope, v_head;
    uint32_t max_position_embeddings;
    double routed_scaling_factor;
    const char *scoring_func, *topk_method;
    bool norm_topk_prob;
    double yarn_mscale; /* mscale and mscale_all_dim */
    const char *transformers_version;
    bool fp8;
    uint64_t shard_bytes;
} synth_preset;

/* Official V3 shards average 4.2 GB (163 files); the same target is used for
 * V2 so that no shard exceeds 5 GB (the official V2 files are ~8.6 GB; pass
 * --shard-size to mimic them). tiny is split into a few shards on purpose. */
#define SHARD_4_3_GB 4300000000ull
static const synth_preset presets[MP_SYNTH_PRESET_COUNT] = {
    [MP_SYNTH_TINY] = {"tiny", MP_SYNTH_FAMILY_V3, 2048, 256, 512, 128, 3, 1, 4, 16, 1, 4, 4, 2, 192, 128, 32, 16,
                       32, 163840, 2.5, "sigmoid", "noaux_tc", true, 1.0, "4.33.1", false, 3u << 20},
    [MP_SYNTH_DEEPSEEK_V3] = {"deepseek-v3", MP_SYNTH_FAMILY_V3, 129280, 7168, 18432, 2048, 61, 3, 128, 256, 1, 8, 8,
                              4, 1536, 512, 128, 64, 128, 163840, 2.5, "sigmoid", "noaux_tc", true, 1.0, "4.33.1",
                              true, SHARD_4_3_GB},
    [MP_SYNTH_DEEPSEEK_R1] = {"deepseek-r1", MP_SYNTH_FAMILY_V3, 129280, 7168, 18432, 2048, 61, 3, 128, 256, 1, 8, 8,
                              4, 1536, 512, 128, 64, 128, 163840, 2.5, "sigmoid", "noaux_tc", true, 1.0, "4.46.3",
                              true, SHARD_4_3_GB},
    [MP_SYNTH_DEEPSEEK_V2] = {"deepseek-v2", MP_SYNTH_FAMILY_V2, 102400, 5120, 12288, 1536, 60, 1, 128, 160, 2, 6, 8,
                              3, 1536, 512, 128, 64, 128, 163840, 16.0, "softmax", "group_limited_greedy", false,
                              0.707, "4.39.3", false, SHARD_4_3_GB},
    [MP_SYNTH_DEEPSEEK_V2_LITE] = {"deepseek-v2-lite", MP_SYNTH_FAMILY_V2, 102400, 2048, 10944, 1408, 27, 1, 16, 64,
                                   2, 6, 1, 1, 0, 512, 128, 64, 128, 163840, 1.0, "softmax", "greedy", false, 0.707,
                                   "4.33.1", false, SHARD_4_3_GB},
};

const char *mp_synth_preset_name(mp_synth_preset preset)
{
    return (unsigned)preset < MP_SYNTH_PRESET_COUNT ? presets[preset].name : NULL;
}

bool mp_synth_preset_from_name(const char *name, mp_synth_preset *out)
{
    for (int i = 0; i < MP_SYNTH_PRESET_COUNT; i++)
        if (!strcmp(name, presets[i].name)) {
            *out = (mp_synth_preset)i;
            return true;
        }
    return false;
}

void mp_synth_options_init(mp_synth_options *o)
{
    memset(o, 0, sizeof *o);
    o->preset = MP_SYNTH_TINY;
    o->layers = -1;
    o->dense = -1;
    o->dtype = MP_SYNTH_DTYPE_DEFAULT;
}

/* The smallest vocabulary that still holds the 256 byte symbols, the special
 * tokens and some merges. */
enum { MIN_VOCAB = 512, MAX_VOCAB = 1u << 22, MAX_LAYERS = 1024 };

int mp_synth_model_resolve(const mp_synth_options *o, mp_synth_model *m, mp_error *err)
{
    if ((unsigned)o->preset >= MP_SYNTH_PRESET_COUNT)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "unknown preset %d", (int)o->preset);
    const synth_preset *p = &presets[o->preset];
    memset(m, 0, sizeof *m);
    m->preset = o->preset;
    m->family = p->family;
    m->vocab = o->vocab ? o->vocab : p->vocab;
    m->hidden = p->hidden;
    m->intermediate = p->intermediate;
    m->moe_intermediate = p->moe_intermediate;
    m->heads = p->heads;
    m->n_routed = p->n_routed;
    m->n_shared = p->n_shared;
    m->topk = p->topk;
    m->n_group = p->n_group;
    m->topk_group = p->topk_group;
    m->q_lora = p->q_lora;
    m->kv_lora = p->kv_lora;
    m->nope = p->nope;
    m->rope = p->rope;
    m->v_head = p->v_head;
    m->shard_bytes = o->shard_bytes ? o->shard_bytes : p->shard_bytes;

    if (o->layers == 0 || o->layers > MAX_LAYERS)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "--layers must be in [1, %d]", MAX_LAYERS);
    m->layers = o->layers > 0 ? (uint32_t)o->layers : p->layers;
    if (o->dense < 0) /* the real count, but leave at least one MoE layer */
        m->dense = p->dense < m->layers ? p->dense : m->layers - 1;
    else if ((uint64_t)o->dense > m->layers)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "--dense %lld is more than --layers %u", (long long)o->dense,
                       m->layers);
    else
        m->dense = (uint32_t)o->dense;
    if (o->mtp && p->family != MP_SYNTH_FAMILY_V3)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "--mtp: %s has no multi-token-prediction layer", p->name);
    m->mtp = o->mtp;
    m->fp8 = o->dtype == MP_SYNTH_DTYPE_DEFAULT ? p->fp8 : o->dtype == MP_SYNTH_DTYPE_FP8;
    if (m->vocab < MIN_VOCAB || m->vocab > MAX_VOCAB)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "--vocab must be in [%d, %u]", MIN_VOCAB, (unsigned)MAX_VOCAB);
    if (p->family == MP_SYNTH_FAMILY_V3) {
        m->bos_id = 0;
        m->eos_id = 1;
    } else if (m->vocab >= 100002) { /* DeepSeek LLM's ids, after its 100000 BPE tokens */
        m->bos_id = 100000;
        m->eos_id = 100001;
    } else {
        m->bos_id = m->vocab - 2;
        m->eos_id = m->vocab - 1;
    }
    return MP_OK;
}

static json_t *one_string(const char *s)
{
    json_t *arr = json_array();
    json_array_append_new(arr, json_string(s));
    return arr;
}

#define SET(obj, key, value) json_object_set_new(obj, key, value)
#define INT(v) json_integer((json_int_t)(v))

char *mp_synth_config_json(const mp_synth_model *m)
{
    const synth_preset *p = &presets[m->preset];
    const bool v3 = m->family == MP_SYNTH_FAMILY_V3;
    const char *cls = v3 ? "V3" : "V2";
    char arch[64], auto_cfg[64], auto_model[64], auto_lm[64];
    snprintf(arch, sizeof arch, "Deepseek%sForCausalLM", cls);
    snprintf(auto_cfg, sizeof auto_cfg, "configuration_deepseek.Deepseek%sConfig", cls);
    snprintf(auto_model, sizeof auto_model, "modeling_deepseek.Deepseek%sModel", cls);
    snprintf(auto_lm, sizeof auto_lm, "modeling_deepseek.Deepseek%sForCausalLM", cls);

    json_t *c = json_object();
    json_t *auto_map = json_object();
    SET(auto_map, "AutoConfig", json_string(auto_cfg));
    SET(auto_map, "AutoModel", json_string(auto_model));
    SET(auto_map, "AutoModelForCausalLM", json_string(auto_lm));
    json_t *rope = json_object();
    SET(rope, "beta_fast", INT(32));
    SET(rope, "beta_slow", INT(1));
    SET(rope, "factor", INT(40));
    SET(rope, "mscale", json_real(p->yarn_mscale));
    SET(rope, "mscale_all_dim", json_real(p->yarn_mscale));
    SET(rope, "original_max_position_embeddings", INT(4096));
    SET(rope, "type", json_string("yarn"));

    SET(c, "architectures", one_string(arch));
    SET(c, "attention_bias", json_false());
    SET(c, "attention_dropout", json_real(0.0));
    SET(c, "auto_map", auto_map);
    if (!v3)
        SET(c, "aux_loss_alpha", json_real(0.001));
    SET(c, "bos_token_id", INT(m->bos_id));
    SET(c, "eos_token_id", INT(m->eos_id));
    if (v3)
        SET(c, "ep_size", INT(1));
    SET(c, "first_k_dense_replace", INT(m->dense));
    SET(c, "hidden_act", json_string("silu"));
    SET(c, "hidden_size", INT(m->hidden));
    SET(c, "initializer_range", json_real(0.02));
    SET(c, "intermediate_size", INT(m->intermediate));
    SET(c, "kv_lora_rank", INT(m->kv_lora));
    SET(c, "max_position_embeddings", INT(p->max_position_embeddings));
    SET(c, "model_type", json_string(v3 ? "deepseek_v3" : "deepseek_v2"));
    SET(c, "moe_intermediate_size", INT(m->moe_intermediate));
    SET(c, "moe_layer_freq", INT(1));
    SET(c, "n_group", INT(m->n_group));
    SET(c, "n_routed_experts", INT(m->n_routed));
    SET(c, "n_shared_experts", INT(m->n_shared));
    SET(c, "norm_topk_prob", json_boolean(p->norm_topk_prob));
    SET(c, "num_attention_heads", INT(m->heads));
    SET(c, "num_experts_per_tok", INT(m->topk));
    SET(c, "num_hidden_layers", INT(m->layers));
    SET(c, "num_key_value_heads", INT(m->heads));
    if (v3)
        SET(c, "num_nextn_predict_layers", INT(m->mtp ? 1 : 0));
    if (!v3)
        SET(c, "pretraining_tp", INT(1));
    SET(c, "q_lora_rank", m->q_lora ? INT(m->q_lora) : json_null());
    SET(c, "qk_nope_head_dim", INT(m->nope));
    SET(c, "qk_rope_head_dim", INT(m->rope));
    if (m->fp8) {
        json_t *q = json_object();
        json_t *block = json_array();
        json_array_append_new(block, INT(128));
        json_array_append_new(block, INT(128));
        SET(q, "activation_scheme", json_string("dynamic"));
        SET(q, "fmt", json_string("e4m3"));
        SET(q, "quant_method", json_string("fp8"));
        SET(q, "weight_block_size", block);
        SET(c, "quantization_config", q);
    }
    SET(c, "rms_norm_eps", json_real(1e-06));
    SET(c, "rope_scaling", rope);
    SET(c, "rope_theta", INT(10000));
    SET(c, "routed_scaling_factor", json_real(p->routed_scaling_factor));
    SET(c, "scoring_func", json_string(p->scoring_func));
    if (!v3)
        SET(c, "seq_aux", json_true());
    SET(c, "tie_word_embeddings", json_false());
    SET(c, "topk_group", INT(m->topk_group));
    SET(c, "topk_method", json_string(p->topk_method));
    SET(c, "torch_dtype", json_string("bfloat16")); /* also in the official FP8 file */
    SET(c, "transformers_version", json_string(p->transformers_version));
    SET(c, "use_cache", json_true());
    SET(c, "v_head_dim", INT(m->v_head));
    SET(c, "vocab_size", INT(m->vocab));

    /* 15 significant digits print every value here as Python's repr does,
     * except that jansson drops an exponent's leading zero (1e-6 where
     * Python writes 1e-06): put it back. No string value in a config has a
     * digit followed by "e-" or "e+". */
    char *text = json_dumps(c, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(c);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *out = malloc(2 * n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        out[o++] = text[i];
        if (text[i] == 'e' && i > 0 && text[i - 1] >= '0' && text[i - 1] <= '9' && i + 2 < n &&
            (text[i + 1] == '-' || text[i + 1] == '+') && text[i + 2] >= '0' && text[i + 2] <= '9' &&
            !(i + 3 < n && text[i + 3] >= '0' && text[i + 3] <= '9')) {
            out[o++] = text[++i];
            out[o++] = '0';
        }
    }
    free(text);
    out[o++] = '\n';
    out[o] = '\0';
    return out;
}
