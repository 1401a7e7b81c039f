/* model_desc: one description of a DeepSeek-family model (V2, V2-Lite, V3,
 * R1), whichever source it came from (HF config.json or GGUF deepseek2.*
 * keys), and the role of every tensor in either naming.
 *
 * Field names follow the official config.json keys. */
#ifndef MP_MODEL_DESC_H
#define MP_MODEL_DESC_H

#include <stdbool.h>
#include <stdint.h>

#include "mp_error.h"

typedef enum { MP_SCORING_SOFTMAX = 0, MP_SCORING_SIGMOID = 1 } mp_scoring_func;

typedef enum {
    MP_TOPK_GREEDY = 0,
    MP_TOPK_GROUP_LIMITED_GREEDY = 1,
    MP_TOPK_NOAUX_TC = 2,
} mp_topk_method;

typedef struct mp_yarn {
    bool enabled;                 /* rope_scaling.type == "yarn" */
    float factor;                 /* rope_scaling.factor */
    uint32_t original_max_position_embeddings;
    float beta_fast, beta_slow;   /* 32 and 1 when absent, as in the reference code */
    float mscale, mscale_all_dim; /* 1 and 0 when absent... see model_desc.c */
} mp_yarn;

typedef struct mp_model_desc {
    char model_type[32]; /* "deepseek_v2" or "deepseek_v3" */
    uint32_t vocab_size;
    uint32_t hidden_size;
    uint32_t intermediate_size;     /* dense MLP layers */
    uint32_t moe_intermediate_size; /* each routed and shared expert */
    uint32_t num_hidden_layers;     /* without MTP layers */
    uint32_t num_nextn_predict_layers;
    uint32_t num_attention_heads;
    uint32_t n_routed_experts;
    uint32_t n_shared_experts;
    uint32_t num_experts_per_tok;
    uint32_t n_group, topk_group; /* 1, 1 when routing is not group-limited */
    uint32_t first_k_dense_replace;
    uint32_t moe_layer_freq;
    uint32_t q_lora_rank; /* 0 when q_lora_rank is null (V2-Lite): plain q_proj */
    uint32_t kv_lora_rank;
    uint32_t qk_nope_head_dim;
    uint32_t qk_rope_head_dim;
    uint32_t v_head_dim;
    mp_scoring_func scoring_func;
    mp_topk_method topk_method;
    bool norm_topk_prob;
    float routed_scaling_factor;
    float rms_norm_eps;
    double rope_theta;
    mp_yarn yarn;
    uint32_t max_position_embeddings;
    bool tie_word_embeddings;
    /* quantization_config: fp8 with weight_block_size (0, 0 when not fp8) */
    uint32_t fp8_block_rows, fp8_block_cols;
    int32_t bos_token_id, eos_token_id; /* -1 when unknown */
    /* Which of the routing fields the source did not record (GGUF files made
     * by older converters lack the group counts); bit set = defaulted. */
    uint32_t defaulted;
} mp_model_desc;

enum {
    MP_DEFAULTED_GROUPS = 1u << 0,      /* n_group / topk_group */
    MP_DEFAULTED_TOPK_METHOD = 1u << 1, /* topk_method inferred */
    MP_DEFAULTED_YARN_BETAS = 1u << 2,  /* beta_fast / beta_slow */
    MP_DEFAULTED_MSCALE = 1u << 3,      /* mscale taken equal to mscale_all_dim */
    MP_DEFAULTED_MOE_LAYER_FREQ = 1u << 4, /* moe_layer_freq inferred from the tensors (GGUF) */
    MP_DEFAULTED_YARN_ORIGINAL_MAX_POS = 1u << 5, /* yarn original_max_position_embeddings: 4096 from a
                                                    * config.json, context_length from a GGUF */
};

/* Hard caps mp_model_desc_validate enforces: far above any real model, low
 * enough that products of two of them cannot overflow 64-bit sizes. */
#define MP_MAX_VOCAB (1u << 24)
#define MP_MAX_HIDDEN 65536u
#define MP_MAX_FFN (1u << 20)       /* intermediate_size, moe_intermediate_size */
#define MP_MAX_LAYERS 1024u         /* num_hidden_layers + num_nextn_predict_layers */
#define MP_MAX_NEXTN 16u
#define MP_MAX_HEADS 1024u
#define MP_MAX_HEAD_DIM 4096u       /* qk_nope, qk_rope, v head dims */
#define MP_MAX_ROPE_HEAD_DIM 1024u  /* qk_rope_head_dim: the rope frequencies are a fixed array of half as many */
#define MP_MAX_LORA_RANK 65536u     /* q_lora_rank, kv_lora_rank */
#define MP_MAX_EXPERTS 4096u
#define MP_MAX_SHARED_EXPERTS 64u
#define MP_MAX_POSITIONS (1u << 26) /* max_position_embeddings */
#define MP_MAX_FP8_BLOCK 65536u

/* qk_nope_head_dim + qk_rope_head_dim */
static inline uint32_t mp_qk_head_dim(const mp_model_desc *d)
{
    return d->qk_nope_head_dim + d->qk_rope_head_dim;
}

/* Layer L uses routed experts (as the reference modeling code decides). */
static inline bool mp_layer_is_moe(const mp_model_desc *d, uint32_t layer)
{
    return d->n_routed_experts > 0 && layer >= d->first_k_dense_replace &&
           (d->moe_layer_freq == 0 || layer % d->moe_layer_freq == 0);
}

/* Tensor roles, in either naming. */
typedef enum {
    MP_ROLE_UNKNOWN = 0,
    MP_ROLE_TOKEN_EMBD,
    MP_ROLE_OUTPUT_NORM,
    MP_ROLE_LM_HEAD,
    MP_ROLE_ATTN_NORM, /* input_layernorm */
    MP_ROLE_FFN_NORM,  /* post_attention_layernorm */
    MP_ROLE_Q_PROJ,    /* q_proj (no q_lora) */
    MP_ROLE_Q_A,
    MP_ROLE_Q_A_NORM,
    MP_ROLE_Q_B,
    MP_ROLE_KV_A_MQA,
    MP_ROLE_KV_A_NORM,
    MP_ROLE_KV_B,
    MP_ROLE_K_B, /* GGUF attn_k_b: per head [kv_lora, qk_nope] */
    MP_ROLE_V_B, /* GGUF attn_v_b: per head [v_head, kv_lora] */
    MP_ROLE_ATTN_OUT,
    MP_ROLE_FFN_GATE, /* dense layers */
    MP_ROLE_FFN_UP,
    MP_ROLE_FFN_DOWN,
    MP_ROLE_ROUTER,      /* mlp.gate.weight / ffn_gate_inp */
    MP_ROLE_ROUTER_BIAS, /* e_score_correction_bias / exp_probs_b.bias */
    MP_ROLE_EXP_GATE,    /* routed experts; expert = -1 for GGUF 3-D tensors */
    MP_ROLE_EXP_UP,
    MP_ROLE_EXP_DOWN,
    MP_ROLE_SHEXP_GATE,
    MP_ROLE_SHEXP_UP,
    MP_ROLE_SHEXP_DOWN,
    MP_ROLE_MTP_EMBED, /* MTP layers: model.layers.N.embed_tokens ... */
    MP_ROLE_MTP_ENORM,
    MP_ROLE_MTP_HNORM,
    MP_ROLE_MTP_EH_PROJ,
    MP_ROLE_MTP_HEAD_NORM,
    MP_ROLE_MTP_HEAD,
    MP_ROLE_W_UK, /* container only: absorbed MLA, per head */
    MP_ROLE_W_UV,
    MP_ROLE_COUNT
} mp_role;

typedef struct mp_tensor_id {
    mp_role role;
    int32_t layer;     /* -1 for global tensors */
    int32_t expert;    /* -1 when not a single routed expert */
    bool is_scale_inv; /* FP8 companion "<name>_scale_inv" of the tensor above */
} mp_tensor_id;

/* Short stable name of a role ("attn_q_a", "exp_gate", ...), used by inspect
 * and the container directory. */
const char *mp_role_name(mp_role role);

/* Where a tensor of (layer, expert) sits, for messages: " of layer L",
 * ", expert E" after it for an expert, "" for a global tensor. Returns buf. */
const char *mp_tensor_place(int32_t layer, int32_t expert, char *buf, size_t len);

/* The name the tensor of (role, layer, expert) has in a Hugging Face
 * checkpoint or, with `gguf`, in a GGUF (whose routed experts are one 3-D
 * tensor per layer: `expert` is then left out): the inverse of
 * mp_name_map_hf / mp_name_map_gguf, for messages about a missing tensor.
 * Returns buf; "" for a role no checkpoint has. */
const char *mp_tensor_source_name(bool gguf, mp_role role, int32_t layer, int32_t expert, char *buf, size_t len);

/* For messages: the configuration values that decide whether layer `layer`
 * has a tensor of `role` ("q_lora_rank is null", "topk_method is greedy",
 * "layer 1 is a MoE layer (first_k_dense_replace 1, moe_layer_freq 1)").
 * Returns buf; "" for roles every layer (or model) has. */
const char *mp_model_desc_role_reason(const mp_model_desc *d, mp_role role, int32_t layer, char *buf, size_t len);

/* Classify a tensor name; returns false (and role UNKNOWN, layer/expert -1)
 * for names that are not part of a DeepSeek checkpoint. Hugging Face naming:
 * "model.layers.L.mlp.experts.E.gate_proj.weight", ...; GGUF naming (as
 * llama.cpp's converter writes deepseek2): "blk.L.ffn_gate_exps.weight", ...
 * MTP layers: "model.layers.N.{embed_tokens,enorm,hnorm,eh_proj,shared_head.
 * norm,shared_head.head}.weight" / "blk.N.nextn.{embed_tokens,enorm,hnorm,
 * eh_proj,shared_head_norm,shared_head_head}.weight"; their attention and MoE
 * tensors have the ordinary names with layer N. Hugging Face
 * "<matrix>.weight_scale_inv" maps like "<matrix>.weight" with is_scale_inv
 * (norms and biases have no scale). Indices are strict: decimal digits only,
 * no sign, no leading zero, at most INT32_MAX. */
bool mp_name_map_hf(const char *name, mp_tensor_id *out);
bool mp_name_map_gguf(const char *name, mp_tensor_id *out);

/* What a tensor the name maps do not know is, for deciding what to do with
 * it (the converter: convert_plan.c). */
typedef enum {
    /* a buffer the modeling code recomputes from the configuration
     * (rotary_emb.inv_freq, which older V2 checkpoints carry): nothing lost */
    MP_UNKNOWN_DERIVED = 1,
    /* a part of the model's computation: anything under a decoder layer
     * ("model.layers.N.*", "blk.N.*": a bias, an indexer as in DeepSeek-V3.2,
     * a projection moepack does not implement) and the final norm's or
     * head's bias; without it the model computes something else */
    MP_UNKNOWN_LAYER_PART,
    /* anything else: extra tensors whose effect moepack cannot judge */
    MP_UNKNOWN_OTHER,
} mp_unknown_kind;

/* Classifies a name mp_name_map_hf (or, with `gguf`, mp_name_map_gguf)
 * does not know. *layer is the layer the name is under ("model.layers.N."
 * or "blk.N."), -1 when none or when N is not a plain index. */
mp_unknown_kind mp_unknown_tensor_kind(bool gguf, const char *name, int32_t *layer);
/* "derived buffer", "part of the model's computation", "unknown". */
const char *mp_unknown_kind_name(mp_unknown_kind kind);

/* A description with every field at its "nothing known" value: zeros, token
 * ids -1, n_group = topk_group = moe_layer_freq = 1, and the yarn fields at
 * the reference code's defaults (factor 1, betas 32/1, mscale 1,
 * mscale_all_dim 0) with yarn disabled. Sources start from this. */
void mp_model_desc_init(mp_model_desc *d);

/* Fills *d from a config.json text. `path` names the file in errors. Absent
 * keys take the defaults of the reference configuration class of the
 * model_type (see model_desc.c), except the dimension keys, which are
 * required. Does not call mp_model_desc_validate. */
int mp_model_desc_from_config_json(const char *json_text, size_t len, const char *path, mp_model_desc *d,
                                   mp_error *err);

/* Checks that the description is internally consistent and within sane
 * limits (every dim > 0 and below hard caps, experts_per_tok <= experts,
 * topk_group <= n_group, n_routed_experts % n_group == 0, ...). */
int mp_model_desc_validate(const mp_model_desc *d, const char *path, mp_error *err);

/* Writes a human-readable multi-line summary. */
void mp_model_desc_print(const mp_model_desc *d, void *file /* FILE* */);

/* Compares two descriptions field by field, ignoring fields that either one
 * marks as defaulted. Returns true when equal; otherwise writes the first
 * differing field's name to `what` (if non-NULL). */
bool mp_model_desc_equal(const mp_model_desc *a, const mp_model_desc *b, char *what, size_t what_len);

/* For each value dst defaulted and src states (its MP_DEFAULTED_* bit set in
 * dst, clear in src), takes src's value and clears the bit: what a source
 * records wins over another's default. */
void mp_model_desc_take_stated(mp_model_desc *dst, const mp_model_desc *src);

#endif
