/* model_desc_json: a model description as a config.json-style JSON object,
 * the form the container's metadata stores it in. Written with the official
 * key names so the one config.json parser reads it back, plus the moepack-only
 * key "moepack_defaulted" (the description's `defaulted` bits). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "model_desc.h"
#include "model_desc_json.h"

static const char *scoring_name(mp_scoring_func s) { return s == MP_SCORING_SIGMOID ? "sigmoid" : "softmax"; }

static const char *topk_name(mp_topk_method m)
{
    return m == MP_TOPK_NOAUX_TC ? "noaux_tc" : m == MP_TOPK_GROUP_LIMITED_GREEDY ? "group_limited_greedy" : "greedy";
}

void *mp_model_desc_to_json(const mp_model_desc *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "model_type", json_string(d->model_type[0] ? d->model_type : "deepseek_v3"));
    json_object_set_new(o, "vocab_size", json_integer(d->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(d->hidden_size));
    json_object_set_new(o, "intermediate_size", json_integer(d->intermediate_size));
    json_object_set_new(o, "moe_intermediate_size", json_integer(d->moe_intermediate_size));
    json_object_set_new(o, "num_hidden_layers", json_integer(d->num_hidden_layers));
    json_object_set_new(o, "num_nextn_predict_layers", json_integer(d->num_nextn_predict_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(d->num_attention_heads));
    json_object_set_new(o, "n_routed_experts", d->n_routed_experts ? json_integer(d->n_routed_experts) : json_null());
    json_object_set_new(o, "n_shared_experts", json_integer(d->n_shared_experts));
    json_object_set_new(o, "num_experts_per_tok", json_integer(d->num_experts_per_tok));
    json_object_set_new(o, "n_group", json_integer(d->n_group));
    json_object_set_new(o, "topk_group", json_integer(d->topk_group));
    json_object_set_new(o, "first_k_dense_replace", json_integer(d->first_k_dense_replace));
    json_object_set_new(o, "moe_layer_freq", json_integer(d->moe_layer_freq));
    json_object_set_new(o, "q_lora_rank", d->q_lora_rank ? json_integer(d->q_lora_rank) : json_null());
    json_object_set_new(o, "kv_lora_rank", json_integer(d->kv_lora_rank));
    json_object_set_new(o, "qk_nope_head_dim", json_integer(d->qk_nope_head_dim));
    json_object_set_new(o, "qk_rope_head_dim", json_integer(d->qk_rope_head_dim));
    json_object_set_new(o, "v_head_dim", json_integer(d->v_head_dim));
    json_object_set_new(o, "scoring_func", json_string(scoring_name(d->scoring_func)));
    json_object_set_new(o, "topk_method", json_string(topk_name(d->topk_method)));
    json_object_set_new(o, "norm_topk_prob", json_boolean(d->norm_topk_prob));
    json_object_set_new(o, "routed_scaling_factor", json_real(d->routed_scaling_factor));
    json_object_set_new(o, "rms_norm_eps", json_real(d->rms_norm_eps));
    json_object_set_new(o, "rope_theta", json_real(d->rope_theta));
    json_object_set_new(o, "max_position_embeddings", json_integer(d->max_position_embeddings));
    if (d->yarn.enabled) {
        json_t *y = json_object();
        json_object_set_new(y, "type", json_string("yarn"));
        json_object_set_new(y, "factor", json_real(d->yarn.factor));
        json_object_set_new(y, "original_max_position_embeddings",
                            json_integer(d->yarn.original_max_position_embeddings));
        json_object_set_new(y, "beta_fast", json_real(d->yarn.beta_fast));
        json_object_set_new(y, "beta_slow", json_real(d->yarn.beta_slow));
        json_object_set_new(y, "mscale", json_real(d->yarn.mscale));
        json_object_set_new(y, "mscale_all_dim", json_real(d->yarn.mscale_all_dim));
        json_object_set_new(o, "rope_scaling", y);
    } else {
        json_object_set_new(o, "rope_scaling", json_null());
    }
    json_object_set_new(o, "tie_word_embeddings", json_boolean(d->tie_word_embeddings));
    if (d->bos_token_id >= 0)
        json_object_set_new(o, "bos_token_id", json_integer(d->bos_token_id));
    if (d->eos_token_id >= 0)
        json_object_set_new(o, "eos_token_id", json_integer(d->eos_token_id));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "moepack_defaulted", json_integer(d->defaulted));
    return o;
}

int mp_model_desc_from_json(const void *obj, const char *path, mp_model_desc *d, mp_error *err)
{
    const json_t *o = obj;
    if (!json_is_object(o))
        return mp_fail(err, MP_ERR_INPUT, path, "model", "is not a JSON object");
    char *text = json_dumps(o, JSON_COMPACT);
    if (!text)
        return mp_fail(err, MP_ERR_INPUT, path, "model", "cannot be serialized");
    int rc = mp_model_desc_from_config_json(text, strlen(text), path, d, err);
    free(text);
    if (rc)
        return rc;
    json_t *def = json_object_get(o, "moepack_defaulted");
    if (def) {
        if (!json_is_integer(def) || json_integer_value(def) < 0 || json_integer_value(def) > 0xffff)
            return mp_fail(err, MP_ERR_INPUT, path, "model.moepack_defaulted", "is not a small non-negative integer");
        d->defaulted = (uint32_t)json_integer_value(def);
    }
    return mp_model_desc_validate(d, path, err);
}
