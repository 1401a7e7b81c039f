/* mp_forward: the pieces of one DeepSeek forward step on the CPU, for the
 * runner's own loop (run_session.c) and for other back ends: the hybrid CUDA
 * path runs attention, router, shared expert and dense MLP on the GPU and
 * calls only mp_fwd_routed_experts here.
 *
 * Every block works on a batch of M tokens (M <= the workspace's max_batch),
 * activations f32 row-major [M][dim], and takes its inputs and writes its
 * outputs explicitly; scratch comes from an mp_workspace allocated once. The
 * blocks parallelize internally with OpenMP (model->threads) and must not be
 * called from inside a parallel region.
 *
 * The reference computation is Hugging Face transformers'
 * DeepseekV3ForCausalLM (fp32 compute on bf16 weights) and DeepSeek's own
 * modeling_deepseek.py for V2; docs/RUNNER.md says where each step comes
 * from. */
#ifndef MP_FORWARD_H
#define MP_FORWARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mp_kernels.h"
#include "mp_layout.h"
#include "mp_runner.h"

/* ---- weights ----------------------------------------------------------------- */

typedef enum {
    MP_LIN_F32 = 1,  /* row_major f32 */
    MP_LIN_BF16,     /* row_major bf16 */
    MP_LIN_INT4,     /* gpu_int4 (sym or asym) */
    MP_LIN_Q8,       /* amx_int8: needs int8 activations (mp_linear_q8) */
    MP_LIN_BF16_AMX, /* amx_bf16 */
} mp_lin_kind;

/* One weight matrix W [n, k] of any layout, as views into the mapping. */
typedef struct mp_linear {
    const mp_ctensor *t; /* the container tensor: name, raw bytes for an upload */
    mp_lin_kind kind;
    uint32_t n, k;
    const float *f32;
    const uint16_t *bf16;
    mp_gpu_int4_view int4;
    mp_amx_int8_view q8;
    mp_amx_bf16_view amx_bf16;
} mp_linear;

typedef struct mp_layer {
    bool moe;
    const float *attn_norm, *ffn_norm; /* f32 [hidden] */
    const float *q_a_norm;             /* f32 [q_lora_rank], NULL without q_lora */
    const float *kv_a_norm;            /* f32 [kv_lora_rank] */
    mp_linear q_a, q_b;                /* with q_lora */
    mp_linear q_proj;                  /* without */
    mp_linear kv_a;                    /* [kv_lora + rope, hidden] */
    const uint16_t *w_uk;              /* bf16 [heads][kv_lora][qk_nope] */
    const uint16_t *w_uv;              /* bf16 [heads][v_head][kv_lora] */
    mp_linear attn_out;                /* [hidden, heads * v_head] */
    mp_linear ffn_gate, ffn_up, ffn_down; /* dense layers */
    mp_linear router;                  /* f32 [experts, hidden] */
    const float *router_bias;          /* f32 [experts], noaux_tc only */
    mp_linear sh_gate, sh_up, sh_down; /* shared experts (n_shared_experts > 0) */
    mp_linear *exp_gate, *exp_up, *exp_down; /* [n_routed_experts] */
} mp_layer;

struct mp_model {
    mp_container *c;
    const mp_model_desc *d;
    mp_tokenizer *tok;
    const mp_cpu_kernels *kern;
    int threads;
    uint32_t top_k;              /* routed experts per token used */
    uint32_t max_batch;          /* tokens per step of a prompt (sessions take min(ctx, this)) */
    bool experts_q8;             /* routed experts amx_int8 (else amx_bf16) */
    bool bf16_activations;       /* mp_model_opts.bf16_activations */
    uint32_t slice_width, slices; /* expert NUMA slices along moe_intermediate_size */
    float softmax_scale;         /* metadata attention.softmax_scale */
    float rope_attn_factor;      /* metadata attention.rope_attn_factor */
    uint32_t rope_pairs;         /* qk_rope_head_dim / 2 */
    float *rope_inv_freq;        /* [rope_pairs] */
    mp_chat_format chat;
    int32_t eos;
    const uint16_t *embed;       /* bf16 [vocab, hidden] */
    const float *output_norm;
    mp_linear lm_head;
    mp_layer *layers;            /* [num_hidden_layers] */
    mp_linear *experts;          /* storage behind the layers' exp_* arrays */
    pthread_mutex_t lock;        /* sessions take turns */
    char backend[48];
    struct mp_gpu_model *gpu;    /* hybrid mode (runner/mp_gpu.h); NULL on the CPU path */
    struct mp_numa_plan *numa;   /* expert slices per node and thread -> node (runner/mp_numa.h) */
    struct mp_load_info {        /* what the load did, for reports */
        double prefault_seconds;
        uint64_t prefault_bytes;
        bool hugepage_advice, populate;
        uint64_t numa_bound_bytes, numa_bind_failures;
        double numa_bind_seconds;
    } load_info;
};

/* ---- linear algebra helpers ---------------------------------------------- */

/* Below this many multiply-adds a parallel region costs more than it saves
 * (waking threads, and on a busy machine waiting for a descheduled one). */
#define MP_PAR_MIN_WORK (1u << 22)

/* Threads for `items` independent work items doing `work` multiply-adds in all. */
static inline int mp_threads_for(const mp_model *m, uint64_t work, uint64_t items)
{
    if (work < MP_PAR_MIN_WORK || items < 2 || m->threads < 2)
        return 1;
    return items < (uint64_t)m->threads ? (int)items : m->threads;
}

/* y[m][n] (+)= x[m] . W[n] for n in [n0, n1), one thread. Not for MP_LIN_Q8. */
void mp_linear_run(const mp_cpu_kernels *kern, const mp_linear *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                   uint32_t n1, float *y, size_t ldy, bool accumulate);
/* The same over all n, split over the model's threads. */
void mp_linear_par(const mp_model *mod, const mp_linear *w, size_t m, const float *x, size_t ldx, float *y, size_t ldy,
                   bool accumulate);
/* Row-wise RMSNorm of m rows (may be in place), in parallel when m is large. */
void mp_rmsnorm_rows(const mp_model *mod, size_t m, const float *x, size_t ldx, const float *w, uint32_t dim,
                     float *y, size_t ldy);

/* ---- KV cache and workspace ------------------------------------------------- */

/* The latent cache of MLA: per layer and position, kv_lora_rank values of
 * the normalized c_kv, then qk_rope_head_dim values of the rotated k_pe (f32,
 * no per-head expansion). */
typedef struct mp_kv_cache {
    uint32_t ctx, layers, row; /* row = kv_lora_rank + qk_rope_head_dim */
    float *data;               /* [layers][ctx][row] */
} mp_kv_cache;

int mp_kv_cache_init(mp_kv_cache *kv, const mp_model *m, uint32_t ctx, mp_error *err);
void mp_kv_cache_free(mp_kv_cache *kv);
static inline float *mp_kv_row(const mp_kv_cache *kv, uint32_t layer, uint32_t pos)
{
    return kv->data + ((size_t)layer * kv->ctx + pos) * kv->row;
}

/* Scratch of the routed experts for up to max_batch tokens. */
typedef struct mp_moe_ws {
    uint32_t max_batch, top_k;
    uint32_t *count, *start;  /* [experts]: tokens routed to each expert, first slot */
    uint32_t *slot_token;     /* [max_batch * top_k]: token of each slot (grouped by expert) */
    float *slot_weight;       /* routing weight of each slot */
    uint32_t *token_slot;     /* [max_batch * top_k]: token t's j-th expert's slot */
    uint32_t *active;         /* [experts]: experts with tokens, ascending */
    uint32_t n_active;
    int8_t *xq;               /* [max_batch][ld_in] quantized input rows (int8 experts) */
    float *xs;                /* [max_batch][groups_in] their scales */
    int8_t *xq_slot;          /* [slots][ld_in] input rows gathered by expert */
    float *xs_slot;           /* [slots][groups_in] */
    float *x_slot;            /* [slots][ld_x] inputs (bf16 experts): f32, or split (see ld_xb) */
    float *g, *u;             /* [slots][inter] gate, up; g becomes silu(g) * u */
    int8_t *hq;               /* [slots][ld_down] quantized silu(g) * u (int8 experts) */
    float *hs;                /* their scales: node j's [slots][its slices] at slots * slice0[j] */
    float *y;                 /* [slots][hidden] expert outputs (unweighted) */
    float *y_part;            /* [nodes - 1][slots][hidden] other nodes' partial down products */
    size_t *next;             /* [nodes] per-node work queue positions */
    size_t ld_in, groups_in, ld_down; /* row strides of xq / xq_slot and hq: padded K + 64 bytes */
    /* bf16 experts on a table with gemm_bf16_split: an expert with at least
     * bf16_split_min_m rows gets its x_slot rows split in two bf16 (ld_xb =
     * 2 * ld_x values a row, lo kp_xb after hi) and its silu(g) * u rows
     * split into hb (ld_hb a row, lo kp_hb after hi). lo_xb / lo_hb are
     * the kernels' lo_off: kp_xb / kp_hb, or 0 (hi only) with
     * bf16_activations */
    size_t ld_x, ld_xb, kp_xb, ld_hb, kp_hb, lo_xb, lo_hb;
    uint16_t *hb;
} mp_moe_ws;

int mp_moe_ws_init(mp_moe_ws *w, const mp_model *m, uint32_t max_batch, mp_error *err);
void mp_moe_ws_free(mp_moe_ws *w);

/* Everything one batch step needs besides the KV cache. */
typedef struct mp_workspace {
    uint32_t max_batch, ctx;
    float *xn;       /* [B][hidden] normalized input of a block */
    float *blk;      /* [B][hidden] a block's output */
    float *qa;       /* [B][q_lora] */
    float *q;        /* [B][heads * qk_head] */
    float *kv;       /* [B][kv_lora + rope] */
    float *qcat;     /* [B][heads][kv_lora + rope]: absorbed q_nope, then roped q_pe */
    float *olat;     /* [B][heads][kv_lora] */
    float *attn;     /* [B][heads * v_head] */
    float *rope_cs;  /* [B][pairs][2]: cos, sin (times rope_attn_factor) */
    float *scores;   /* [threads][MP_ATTN_HEAD_GROUP][ctx] */
    float *mlp_g, *mlp_u; /* [B][max(intermediate, shared intermediate)] */
    float *router_logits; /* [B][experts] */
    uint32_t *topk_ids;   /* [B][top_k] */
    float *topk_w;        /* [B][top_k] */
    int threads;
    mp_moe_ws moe;
    /* The layer being run records its time here (mp_fwd_layer); NULL: off.
     * The session points it at its table before each layer. */
    mp_layer_stats *stats;
} mp_workspace;

/* Seconds on the monotonic clock, for the instrumentation. */
static inline double mp_fwd_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define MP_ATTN_HEAD_GROUP 16u /* most heads per attention work item (rows of one scores GEMM) */

int mp_workspace_init(mp_workspace *ws, const mp_model *m, uint32_t max_batch, uint32_t ctx, mp_error *err);
void mp_workspace_free(mp_workspace *ws);

/* ---- the blocks ---------------------------------------------------------------- */

/* out = Attention(RMSNorm(x)) for tokens at positions pos0 .. pos0+M-1 (MLA,
 * absorbed): writes their latent rows into the cache, then attends causally
 * over positions [0, pos + 1). out may not alias x. */
void mp_fwd_attention(const mp_model *m, mp_workspace *ws, mp_kv_cache *kv, uint32_t layer, uint32_t pos0, size_t M,
                      const float *x, float *out);

/* out = down(silu(gate xn) * up xn) with the dense layer's weights. */
void mp_fwd_dense_mlp(const mp_model *m, mp_workspace *ws, uint32_t layer, size_t M, const float *xn, float *out);

/* The router: ids[M][top_k] (expert indices) and weights[M][top_k] (routing
 * weights with normalization and routed_scaling_factor applied as the
 * model's reference code does). logits: [M][experts] scratch. */
void mp_fwd_router(const mp_model *m, uint32_t layer, size_t M, const float *xn, float *logits, uint32_t *ids,
                   float *weights);

/* out (+)= the shared experts' MLP of xn. */
void mp_fwd_shared_expert(const mp_model *m, mp_workspace *ws, uint32_t layer, size_t M, const float *xn, float *out,
                          bool accumulate);

/* out (+)= sum_j weights[t][j] * expert_{ids[t][j]}(xn[t]): tokens grouped by
 * expert, one GEMM per expert and matrix; work split per (expert, 256-wide
 * slice of the intermediate dimension) for gate/up and per (expert, rows of
 * hidden) for down; the per-token sum runs in ascending expert order, as the
 * reference's loop over experts. */
void mp_fwd_routed_experts(const mp_model *m, mp_moe_ws *ws, uint32_t layer, size_t M, const float *xn,
                           const uint32_t *ids, const float *weights, float *out, bool accumulate);

/* One decoder layer in place on x [M][hidden]. Records its parts' time into
 * ws->stats when that is set. */
void mp_fwd_layer(const mp_model *m, mp_workspace *ws, mp_kv_cache *kv, uint32_t layer, uint32_t pos0, size_t M,
                  float *x);

/* Rows of the bf16 embedding as f32. */
void mp_fwd_embed(const mp_model *m, const int32_t *ids, size_t M, float *x);

#endif
