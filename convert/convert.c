/* convert.c: the conversion pipeline.
 *
 * 1. Plan: every container tensor, its layout and sizes, is decided from the
 *    model description before any data is read, so every file offset is fixed
 *    up front (formats/container.h).
 * 2. Convert in units (unit 0: the global tensors; unit L+1: layer L): the
 *    tensors of a unit are converted in parallel, each read from the source
 *    as f32 rows, quantized, packed, hashed and written at its offset. After a
 *    unit its data is synced and a journal record written, which is what
 *    --resume continues from.
 * 3. Finish: metadata, tokenizer, directory, header; rename into place.
 *
 * Memory is bounded by one tensor's packed bytes plus a row chunk per thread,
 * whatever the model size; the source's pages are released after each tensor. */
#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "attn_params.h"
#include "convert_tokenizer.h"
#include "model_desc_json.h"
#include "mp_file.h"
#include "mp_layout.h"
#include "mp_num.h"
#include "mp_version.h"
#include "source.h"

#define CHUNK_BYTES (32u << 20) /* f32 rows read per step of a row-chunked tensor */

void mp_convert_opts_default(mp_convert_opts *o)
{
    memset(o, 0, sizeof *o);
    o->cpu_quant = MP_QUANT_INT8;
    o->gpu_quant = MP_QUANT_INT4_SYM;
    o->int4_fit = MP_INT4_FIT_MSE;
    o->gate_up_group = 0;
}

void mp_convert_opts_string(const mp_convert_opts *o, char *buf, size_t len)
{
    snprintf(buf, len, "--cpu-quant %s --gpu-quant %s --int4-fit %s --int8-group %u%s%s%s%s",
             mp_quant_name(o->cpu_quant), mp_quant_name(o->gpu_quant), mp_int4_fit_name(o->int4_fit),
             o->gate_up_group, o->keep_mtp ? " --keep-mtp" : "", o->allow_nonfinite ? " --allow-nonfinite" : "",
             o->config_override ? " --config " : "", o->config_override ? o->config_override : "");
}

/* ---- the plan ------------------------------------------------------------ */

typedef enum {
    JOB_F32,      /* row_major f32 */
    JOB_BF16,     /* row_major bf16 */
    JOB_INT4,     /* gpu_int4 */
    JOB_AMX_INT8, /* routed expert, int8 */
    JOB_AMX_BF16, /* routed expert, bf16 */
    JOB_W_UK,     /* heads bf16 [H][kv_lora][nope] from kv_b or k_b */
    JOB_W_UV,     /* heads bf16 [H][v][kv_lora] from kv_b or v_b */
} job_kind;

typedef struct job {
    job_kind kind;
    size_t tensor; /* index into the plan */
    uint32_t unit;
    const mp_src_tensor *src; /* kv_b for W_UK/W_UV when present, else k_b / v_b */
    /* results */
    double sum_w2, sum_e2;
    uint64_t nonfinite, zero_rows;
    int64_t first_zero_row;
    bool done;
} job;

typedef struct ctx {
    const mp_convert_opts *o;
    mp_source *src;
    const mp_model_desc *d;
    mp_container_plan plan;
    job *jobs;
    size_t n_jobs, cap_jobs;
    uint32_t n_units;
    uint32_t n_layers; /* decoder layers converted (incl. kept MTP layers) */
    mp_outfile out;
    bool out_open;
    int journal_fd;
    char *journal_path;
    uint64_t plan_hash;
    /* progress */
    uint64_t total_bytes, done_bytes, resumed_bytes;
    double t_start, t_last_print;
    /* per-thread scratch */
    int threads;
    struct scratch {
        float *f;
        size_t f_cap;
        uint8_t *b;
        size_t b_cap;
        uint8_t *q;
        size_t q_cap;
        float *s;
        size_t s_cap;
    } *scratch;
} ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Expected [rows, cols] of a source tensor; a checkpoint that disagrees is
 * refused before anything is written. */
static void expected_shape(const mp_model_desc *d, mp_role role, uint64_t *rows, uint64_t *cols)
{
    uint64_t H = d->hidden_size, nh = d->num_attention_heads, qk = mp_qk_head_dim(d);
    uint64_t kvl = d->kv_lora_rank, rope = d->qk_rope_head_dim, nope = d->qk_nope_head_dim, v = d->v_head_dim;
    uint64_t Im = d->moe_intermediate_size, Is = Im * d->n_shared_experts, V = d->vocab_size;
    *rows = 1;
    *cols = H;
    switch (role) {
    case MP_ROLE_TOKEN_EMBD: case MP_ROLE_LM_HEAD: case MP_ROLE_MTP_EMBED: case MP_ROLE_MTP_HEAD:
        *rows = V; break;
    case MP_ROLE_Q_PROJ: *rows = nh * qk; break;
    case MP_ROLE_Q_A: *rows = d->q_lora_rank; break;
    case MP_ROLE_Q_A_NORM: *cols = d->q_lora_rank; break;
    case MP_ROLE_Q_B: *rows = nh * qk; *cols = d->q_lora_rank; break;
    case MP_ROLE_KV_A_MQA: *rows = kvl + rope; break;
    case MP_ROLE_KV_A_NORM: *cols = kvl; break;
    case MP_ROLE_KV_B: *rows = nh * (nope + v); *cols = kvl; break;
    case MP_ROLE_K_B: *rows = nh * kvl; *cols = nope; break;
    case MP_ROLE_V_B: *rows = nh * v; *cols = kvl; break;
    case MP_ROLE_ATTN_OUT: *rows = H; *cols = nh * v; break;
    case MP_ROLE_FFN_GATE: case MP_ROLE_FFN_UP: *rows = d->intermediate_size; break;
    case MP_ROLE_FFN_DOWN: *rows = H; *cols = d->intermediate_size; break;
    case MP_ROLE_ROUTER: *rows = d->n_routed_experts; break;
    case MP_ROLE_ROUTER_BIAS: *cols = d->n_routed_experts; break;
    case MP_ROLE_EXP_GATE: case MP_ROLE_EXP_UP: *rows = Im; break;
    case MP_ROLE_EXP_DOWN: *rows = H; *cols = Im; break;
    case MP_ROLE_SHEXP_GATE: case MP_ROLE_SHEXP_UP: *rows = Is; break;
    case MP_ROLE_SHEXP_DOWN: *rows = H; *cols = Is; break;
    case MP_ROLE_MTP_EH_PROJ: *rows = H; *cols = 2 * H; break;
    default: break; /* norms: [1, H] */
    }
}

/* Container names (docs/FORMAT.md §4). */
static const char *container_suffix(mp_role r)
{
    switch (r) {
    case MP_ROLE_TOKEN_EMBD: return "token_embd";
    case MP_ROLE_OUTPUT_NORM: return "output_norm";
    case MP_ROLE_LM_HEAD: return "output";
    case MP_ROLE_ATTN_NORM: return "attn_norm";
    case MP_ROLE_FFN_NORM: return "ffn_norm";
    case MP_ROLE_Q_PROJ: return "attn_q";
    case MP_ROLE_Q_A: return "attn_q_a";
    case MP_ROLE_Q_A_NORM: return "attn_q_a_norm";
    case MP_ROLE_Q_B: return "attn_q_b";
    case MP_ROLE_KV_A_MQA: return "attn_kv_a_mqa";
    case MP_ROLE_KV_A_NORM: return "attn_kv_a_norm";
    case MP_ROLE_ATTN_OUT: return "attn_output";
    case MP_ROLE_FFN_GATE: return "ffn_gate";
    case MP_ROLE_FFN_UP: return "ffn_up";
    case MP_ROLE_FFN_DOWN: return "ffn_down";
    case MP_ROLE_ROUTER: return "ffn_gate_inp";
    case MP_ROLE_ROUTER_BIAS: return "exp_probs_b";
    case MP_ROLE_EXP_GATE: return "ffn_gate_exps";
    case MP_ROLE_EXP_UP: return "ffn_up_exps";
    case MP_ROLE_EXP_DOWN: return "ffn_down_exps";
    case MP_ROLE_SHEXP_GATE: return "ffn_gate_shexp";
    case MP_ROLE_SHEXP_UP: return "ffn_up_shexp";
    case MP_ROLE_SHEXP_DOWN: return "ffn_down_shexp";
    case MP_ROLE_MTP_EMBED: return "nextn.embed_tokens";
    case MP_ROLE_MTP_ENORM: return "nextn.enorm";
    case MP_ROLE_MTP_HNORM: return "nextn.hnorm";
    case MP_ROLE_MTP_EH_PROJ: return "nextn.eh_proj";
    case MP_ROLE_MTP_HEAD_NORM: return "nextn.shared_head_norm";
    case MP_ROLE_MTP_HEAD: return "nextn.shared_head_head";
    case MP_ROLE_W_UK: return "attn_w_uk";
    case MP_ROLE_W_UV: return "attn_w_uv";
    default: return "unknown";
    }
}

static int add_job(ctx *c, const mp_ctensor *spec, job_kind kind, uint32_t unit, const mp_src_tensor *src,
                   mp_error *err)
{
    int rc = mp_container_plan_add(&c->plan, spec, err);
    if (rc)
        return rc;
    if (c->n_jobs == c->cap_jobs) {
        size_t cap = c->cap_jobs ? 2 * c->cap_jobs : 256;
        job *j = realloc(c->jobs, cap * sizeof *j);
        if (!j)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory planning the conversion");
        c->jobs = j;
        c->cap_jobs = cap;
    }
    job *j = &c->jobs[c->n_jobs++];
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->tensor = c->plan.n_tensors - 1;
    j->unit = unit;
    j->src = src;
    j->first_zero_row = -1;
    return MP_OK;
}

/* Finds and shape-checks the source tensor of (role, layer, expert). */
static int need_src(ctx *c, mp_role role, int32_t layer, int32_t expert, const mp_src_tensor **out, mp_error *err)
{
    const mp_src_tensor *t = mp_source_find(c->src, role, layer, expert);
    *out = t;
    if (!t) {
        char where[64] = "";
        if (layer >= 0)
            snprintf(where, sizeof where, " of layer %d%s", layer, "");
        if (expert >= 0)
            snprintf(where + strlen(where), sizeof where - strlen(where), ", expert %d", expert);
        return mp_fail(err, MP_ERR_INPUT, c->src->path, NULL, "the checkpoint has no %s tensor%s", mp_role_name(role),
                       where);
    }
    uint64_t rows, cols;
    expected_shape(c->d, role, &rows, &cols);
    if (t->rows != rows || t->cols != cols)
        return mp_fail(err, MP_ERR_INPUT, c->src->path, t->name, "shape [%" PRIu64 ", %" PRIu64 "] does not match the model's [%" PRIu64 ", %" PRIu64 "]",
                       t->rows, t->cols, rows, cols);
    return MP_OK;
}

static void spec_init(mp_ctensor *s, char *name, size_t name_len, mp_role role, int32_t layer, int32_t expert)
{
    memset(s, 0, sizeof *s);
    if (layer >= 0 && expert >= 0)
        snprintf(name, name_len, "blk.%d.%s.%d", layer, container_suffix(role), expert);
    else if (layer >= 0)
        snprintf(name, name_len, "blk.%d.%s", layer, container_suffix(role));
    else
        snprintf(name, name_len, "%s", container_suffix(role));
    s->name = name;
    s->role = role;
    s->layer = layer;
    s->expert = expert;
}

/* A norm/router/bias (f32), embedding/head (bf16) or GPU matrix (int4/bf16). */
static int plan_plain(ctx *c, mp_role role, int32_t layer, mp_section section, uint32_t unit, mp_error *err)
{
    const mp_src_tensor *t;
    int rc = need_src(c, role, layer, -1, &t, err);
    if (rc)
        return rc;
    char name[96];
    mp_ctensor s;
    spec_init(&s, name, sizeof name, role, layer, -1);
    s.section = section;
    bool one_d = t->rows == 1 && role != MP_ROLE_ROUTER;
    s.ndim = one_d ? 1 : 2;
    s.shape[0] = one_d ? t->cols : t->rows;
    s.shape[1] = one_d ? 0 : t->cols;
    s.layout = MP_LAYOUT_ROW_MAJOR;
    job_kind kind;
    bool is_matrix = !one_d && role != MP_ROLE_ROUTER;
    bool keep_bf16 = role == MP_ROLE_TOKEN_EMBD || role == MP_ROLE_LM_HEAD || role == MP_ROLE_MTP_EMBED ||
                     role == MP_ROLE_MTP_HEAD;
    if (!is_matrix) {
        s.quant = MP_QUANT_F32; /* norms, router and its bias: small, and precision matters for routing */
        kind = JOB_F32;
    } else if (keep_bf16 || c->o->gpu_quant == MP_QUANT_BF16) {
        s.quant = MP_QUANT_BF16;
        kind = JOB_BF16;
    } else {
        s.layout = MP_LAYOUT_GPU_INT4;
        s.quant = c->o->gpu_quant;
        s.group_width = MP_INT4_GROUP;
        kind = JOB_INT4;
    }
    return add_job(c, &s, kind, unit, t, err);
}

static int plan_heads(ctx *c, int32_t layer, uint32_t unit, mp_error *err)
{
    const mp_model_desc *d = c->d;
    const mp_src_tensor *kvb = mp_source_find(c->src, MP_ROLE_KV_B, layer, -1);
    const mp_src_tensor *kb = NULL, *vb = NULL;
    int rc;
    if (kvb) {
        if ((rc = need_src(c, MP_ROLE_KV_B, layer, -1, &kvb, err)))
            return rc;
        kb = vb = kvb;
    } else if ((rc = need_src(c, MP_ROLE_K_B, layer, -1, &kb, err)) || (rc = need_src(c, MP_ROLE_V_B, layer, -1, &vb, err))) {
        return mp_fail(err, MP_ERR_INPUT, c->src->path, NULL,
                       "layer %d has neither kv_b_proj (attn_kv_b) nor both attn_k_b and attn_v_b", layer);
    }
    char name[96];
    mp_ctensor s;
    spec_init(&s, name, sizeof name, MP_ROLE_W_UK, layer, -1);
    s.section = MP_SECTION_GPU;
    s.layout = MP_LAYOUT_HEADS;
    s.quant = MP_QUANT_BF16;
    s.ndim = 3;
    s.shape[0] = d->num_attention_heads;
    s.shape[1] = d->kv_lora_rank;
    s.shape[2] = d->qk_nope_head_dim;
    if ((rc = add_job(c, &s, JOB_W_UK, unit, kb, err)))
        return rc;
    spec_init(&s, name, sizeof name, MP_ROLE_W_UV, layer, -1);
    s.section = MP_SECTION_GPU;
    s.layout = MP_LAYOUT_HEADS;
    s.quant = MP_QUANT_BF16;
    s.ndim = 3;
    s.shape[0] = d->num_attention_heads;
    s.shape[1] = d->v_head_dim;
    s.shape[2] = d->kv_lora_rank;
    return add_job(c, &s, JOB_W_UV, unit, vb, err);
}

static int plan_expert(ctx *c, mp_role role, int32_t layer, int32_t e, uint32_t unit, mp_error *err)
{
    const mp_src_tensor *t;
    int rc = need_src(c, role, layer, e, &t, err);
    if (rc)
        return rc;
    char name[96];
    mp_ctensor s;
    spec_init(&s, name, sizeof name, role, layer, e);
    s.section = MP_SECTION_CPU;
    s.ndim = 2;
    s.shape[0] = t->rows;
    s.shape[1] = t->cols;
    bool i8 = c->o->cpu_quant == MP_QUANT_INT8;
    uint32_t step = i8 ? 64 : 32;
    /* down is cut along K into the NUMA slices; gate/up keep whole rows unless asked */
    if (role == MP_ROLE_EXP_DOWN)
        s.group_width = MP_EXPERT_SLICE_WIDTH;
    else if (i8 && c->o->gate_up_group)
        s.group_width = c->o->gate_up_group;
    else
        s.group_width = (uint32_t)mp_align_up(t->cols, step);
    s.layout = i8 ? MP_LAYOUT_AMX_INT8 : MP_LAYOUT_AMX_BF16;
    s.quant = i8 ? MP_QUANT_INT8 : MP_QUANT_BF16;
    return add_job(c, &s, i8 ? JOB_AMX_INT8 : JOB_AMX_BF16, unit, t, err);
}

static int build_plan(ctx *c, mp_error *err)
{
    const mp_model_desc *d = c->d;
    int rc;
    /* unit 0: the global tensors */
    if ((rc = plan_plain(c, MP_ROLE_TOKEN_EMBD, -1, MP_SECTION_HOST, 0, err)) ||
        (rc = plan_plain(c, MP_ROLE_OUTPUT_NORM, -1, MP_SECTION_GPU, 0, err)))
        return rc;
    if (mp_source_find(c->src, MP_ROLE_LM_HEAD, -1, -1) || !d->tie_word_embeddings) {
        if ((rc = plan_plain(c, MP_ROLE_LM_HEAD, -1, MP_SECTION_GPU, 0, err)))
            return rc;
    } else {
        /* tied: the head is the embedding, stored again where the GPU needs it */
        const mp_src_tensor *t;
        if ((rc = need_src(c, MP_ROLE_TOKEN_EMBD, -1, -1, &t, err)))
            return rc;
        char name[96];
        mp_ctensor s;
        spec_init(&s, name, sizeof name, MP_ROLE_LM_HEAD, -1, -1);
        s.section = MP_SECTION_GPU;
        s.layout = MP_LAYOUT_ROW_MAJOR;
        s.quant = MP_QUANT_BF16;
        s.ndim = 2;
        s.shape[0] = t->rows;
        s.shape[1] = t->cols;
        if ((rc = add_job(c, &s, JOB_BF16, 0, t, err)))
            return rc;
    }
    c->n_layers = d->num_hidden_layers + (c->o->keep_mtp ? d->num_nextn_predict_layers : 0);
    /* GPU-side tensors of every layer first, then the experts: the plan keeps
     * each section's tensors in the order they are added. */
    for (uint32_t L = 0; L < c->n_layers; L++) {
        int32_t l = (int32_t)L;
        uint32_t unit = L + 1;
        if (L >= d->num_hidden_layers) {
            static const mp_role mtp[] = {MP_ROLE_MTP_ENORM, MP_ROLE_MTP_HNORM, MP_ROLE_MTP_EH_PROJ,
                                          MP_ROLE_MTP_HEAD_NORM};
            for (size_t i = 0; i < sizeof mtp / sizeof mtp[0]; i++)
                if ((rc = plan_plain(c, mtp[i], l, MP_SECTION_GPU, unit, err)))
                    return rc;
            /* The MTP layer's embedding and head are copies of the main ones in
             * the official checkpoints; kept only when present. */
            if (mp_source_find(c->src, MP_ROLE_MTP_EMBED, l, -1) &&
                (rc = plan_plain(c, MP_ROLE_MTP_EMBED, l, MP_SECTION_HOST, unit, err)))
                return rc;
            if (mp_source_find(c->src, MP_ROLE_MTP_HEAD, l, -1) &&
                (rc = plan_plain(c, MP_ROLE_MTP_HEAD, l, MP_SECTION_GPU, unit, err)))
                return rc;
        }
        if ((rc = plan_plain(c, MP_ROLE_ATTN_NORM, l, MP_SECTION_GPU, unit, err)))
            return rc;
        if (d->q_lora_rank) {
            if ((rc = plan_plain(c, MP_ROLE_Q_A, l, MP_SECTION_GPU, unit, err)) ||
                (rc = plan_plain(c, MP_ROLE_Q_A_NORM, l, MP_SECTION_GPU, unit, err)) ||
                (rc = plan_plain(c, MP_ROLE_Q_B, l, MP_SECTION_GPU, unit, err)))
                return rc;
        } else if ((rc = plan_plain(c, MP_ROLE_Q_PROJ, l, MP_SECTION_GPU, unit, err))) {
            return rc;
        }
        if ((rc = plan_plain(c, MP_ROLE_KV_A_MQA, l, MP_SECTION_GPU, unit, err)) ||
            (rc = plan_plain(c, MP_ROLE_KV_A_NORM, l, MP_SECTION_GPU, unit, err)) ||
            (rc = plan_heads(c, l, unit, err)) ||
            (rc = plan_plain(c, MP_ROLE_ATTN_OUT, l, MP_SECTION_GPU, unit, err)) ||
            (rc = plan_plain(c, MP_ROLE_FFN_NORM, l, MP_SECTION_GPU, unit, err)))
            return rc;
        /* MTP layers are MoE layers in DeepSeek-V3 */
        bool moe = mp_layer_is_moe(d, L);
        if (!moe) {
            if ((rc = plan_plain(c, MP_ROLE_FFN_GATE, l, MP_SECTION_GPU, unit, err)) ||
                (rc = plan_plain(c, MP_ROLE_FFN_UP, l, MP_SECTION_GPU, unit, err)) ||
                (rc = plan_plain(c, MP_ROLE_FFN_DOWN, l, MP_SECTION_GPU, unit, err)))
                return rc;
            continue;
        }
        if ((rc = plan_plain(c, MP_ROLE_ROUTER, l, MP_SECTION_GPU, unit, err)))
            return rc;
        if (d->topk_method == MP_TOPK_NOAUX_TC && (rc = plan_plain(c, MP_ROLE_ROUTER_BIAS, l, MP_SECTION_GPU, unit, err)))
            return rc;
        if (d->n_shared_experts &&
            ((rc = plan_plain(c, MP_ROLE_SHEXP_GATE, l, MP_SECTION_GPU, unit, err)) ||
             (rc = plan_plain(c, MP_ROLE_SHEXP_UP, l, MP_SECTION_GPU, unit, err)) ||
             (rc = plan_plain(c, MP_ROLE_SHEXP_DOWN, l, MP_SECTION_GPU, unit, err))))
            return rc;
    }
    for (uint32_t L = 0; L < c->n_layers; L++) {
        if (!mp_layer_is_moe(d, L))
            continue;
        for (uint32_t e = 0; e < d->n_routed_experts; e++)
            if ((rc = plan_expert(c, MP_ROLE_EXP_GATE, (int32_t)L, (int32_t)e, L + 1, err)) ||
                (rc = plan_expert(c, MP_ROLE_EXP_UP, (int32_t)L, (int32_t)e, L + 1, err)) ||
                (rc = plan_expert(c, MP_ROLE_EXP_DOWN, (int32_t)L, (int32_t)e, L + 1, err)))
                return rc;
    }
    c->n_units = c->n_layers + 1;
    return mp_container_plan_layout(&c->plan, err);
}

/* ---- scratch ------------------------------------------------------------- */

static void *grow(void *p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return p;
    free(p);
    *cap = 0;
    p = malloc(need);
    if (p)
        *cap = need;
    return p;
}

/* ---- converting one tensor ----------------------------------------------- */

typedef struct writer {
    ctx *c;
    const mp_ctensor *t;
    XXH3_state_t *h;
} writer;

static int write_at(writer *w, const void *buf, size_t n, uint64_t off, mp_error *err)
{
    XXH3_64bits_update(w->h, buf, n);
    return mp_outfile_pwrite(&w->c->out, buf, n, off, err);
}

/* Reads rows [r0, r0+n) and checks them: NaN/Inf are refused (or zeroed with
 * allow_nonfinite), all-zero rows counted. */
static int read_checked(ctx *c, job *j, const mp_src_tensor *src, uint64_t r0, uint64_t n, float *f, mp_error *err)
{
    int rc = mp_source_read_rows(c->src, src, r0, n, f, err);
    if (rc)
        return rc;
    uint64_t cols = src->cols;
    for (uint64_t r = 0; r < n; r++) {
        float *row = f + r * cols;
        bool zero = true;
        for (uint64_t k = 0; k < cols; k++) {
            if (!isfinite(row[k])) {
                if (!c->o->allow_nonfinite)
                    return mp_fail(err, MP_ERR_INPUT, c->src->path, src->name,
                                   "row %" PRIu64 ", column %" PRIu64 " is %s; --allow-nonfinite replaces such values by 0",
                                   r0 + r, k, isnan(row[k]) ? "NaN" : "infinite");
                row[k] = 0.0f;
                j->nonfinite++;
            }
            zero &= row[k] == 0.0f;
        }
        if (zero) {
            if (j->first_zero_row < 0)
                j->first_zero_row = (int64_t)(r0 + r);
            j->zero_rows++;
        }
    }
    return MP_OK;
}

static uint64_t chunk_rows(uint64_t cols, uint64_t multiple)
{
    uint64_t n = CHUNK_BYTES / (cols * sizeof(float));
    n = n / multiple * multiple;
    return n ? n : multiple;
}

static int run_rowmajor(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    bool f32 = t->quant == MP_QUANT_F32;
    uint64_t cols = src->cols, step = chunk_rows(cols, 1);
    size_t elem = f32 ? 4 : 2;
    sc->f = grow(sc->f, &sc->f_cap, step * cols * sizeof(float));
    sc->b = grow(sc->b, &sc->b_cap, step * cols * elem);
    if (!sc->f || !sc->b)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        int rc = read_checked(c, j, src, r0, n, sc->f, err);
        if (rc)
            return rc;
        if (f32) {
            for (uint64_t i = 0; i < n * cols; i++)
                j->sum_w2 += (double)sc->f[i] * sc->f[i];
            memcpy(sc->b, sc->f, n * cols * 4);
        } else {
            uint16_t *o = (uint16_t *)sc->b;
            for (uint64_t i = 0; i < n * cols; i++) {
                o[i] = mp_f32_to_bf16(sc->f[i]);
                double e = (double)sc->f[i] - mp_bf16_to_f32(o[i]);
                j->sum_w2 += (double)sc->f[i] * sc->f[i];
                j->sum_e2 += e * e;
            }
        }
        if ((rc = write_at(w, sc->b, n * cols * elem, t->data_offset + r0 * cols * elem, err)))
            return rc;
    }
    return MP_OK;
}

static int run_int4(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    mp_int4_scheme scheme = t->quant == MP_QUANT_INT4_ASYM ? MP_INT4_ASYM : MP_INT4_SYM;
    mp_gpu_int4_layout lay;
    int rc = mp_gpu_int4_layout_init(src->rows, src->cols, scheme, &lay, err);
    if (rc)
        return rc;
    if (lay.data_bytes != t->data_size || lay.total_bytes - lay.scale_offset != t->scale_size)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "internal error: int4 layout sizes disagree with the plan");
    uint64_t cols = src->cols, step = chunk_rows(cols, 16);
    uint32_t groups = lay.groups;
    sc->f = grow(sc->f, &sc->f_cap, step * cols * sizeof(float));
    sc->b = grow(sc->b, &sc->b_cap, lay.total_bytes);
    sc->q = grow(sc->q, &sc->q_cap, step * cols);
    sc->s = grow(sc->s, &sc->s_cap, step * groups * 2 * sizeof(uint16_t));
    if (!sc->f || !sc->b || !sc->q || !sc->s)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    memset(sc->b, 0, lay.total_bytes);
    uint16_t *scale = (uint16_t *)sc->s, *min = scale + step * groups;
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        if ((rc = read_checked(c, j, src, r0, n, sc->f, err)))
            return rc;
        for (uint64_t r = 0; r < n; r++) {
            const float *row = sc->f + r * cols;
            uint8_t *q = sc->q + r * cols;
            uint16_t *s = scale + r * groups, *m = min + r * groups;
            if ((rc = mp_quant_int4_row(row, (uint32_t)cols, scheme, c->o->int4_fit, q, s,
                                        scheme == MP_INT4_ASYM ? m : NULL, err)))
                return mp_error_prefix(err, t->name);
            for (uint64_t k = 0; k < cols; k++) {
                float sf = mp_f16_to_f32(s[k / MP_INT4_GROUP]);
                float mf = scheme == MP_INT4_ASYM ? mp_f16_to_f32(m[k / MP_INT4_GROUP]) : 0.0f;
                double e = (double)row[k] - mp_int4_dequant(scheme, q[k], sf, mf);
                j->sum_w2 += (double)row[k] * row[k];
                j->sum_e2 += e * e;
            }
        }
        if ((rc = mp_gpu_int4_pack_rows(&lay, (uint32_t)r0, (uint32_t)(r0 + n), sc->q, cols, scale,
                                        scheme == MP_INT4_ASYM ? min : NULL, sc->b, lay.total_bytes, err)))
            return mp_error_prefix(err, t->name);
    }
    if ((rc = write_at(w, sc->b, lay.data_bytes, t->data_offset, err)))
        return rc;
    return write_at(w, sc->b + lay.scale_offset, t->scale_size, t->scale_offset, err);
}

static int run_amx_int8(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    mp_amx_int8_layout lay;
    int rc = mp_amx_int8_layout_init(src->rows, src->cols, t->group_width, &lay, err);
    if (rc)
        return rc;
    if (lay.data_bytes != t->data_size || lay.scale_bytes + lay.wsum_bytes != t->scale_size ||
        lay.wsum_offset != lay.scale_offset + lay.scale_bytes)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "internal error: amx_int8 layout sizes disagree with the plan");
    uint64_t cols = src->cols, step = chunk_rows(cols, 16);
    uint32_t groups = lay.groups;
    sc->f = grow(sc->f, &sc->f_cap, step * cols * sizeof(float));
    sc->b = grow(sc->b, &sc->b_cap, lay.total_bytes);
    sc->q = grow(sc->q, &sc->q_cap, step * cols);
    sc->s = grow(sc->s, &sc->s_cap, step * groups * sizeof(float));
    if (!sc->f || !sc->b || !sc->q || !sc->s)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    memset(sc->b, 0, lay.total_bytes);
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        if ((rc = read_checked(c, j, src, r0, n, sc->f, err)))
            return rc;
        for (uint64_t r = 0; r < n; r++) {
            const float *row = sc->f + r * cols;
            int8_t *q = (int8_t *)sc->q + r * cols;
            float *s = sc->s + r * groups;
            if ((rc = mp_quant_int8_row(row, (uint32_t)cols, lay.kg, q, s, err)))
                return mp_error_prefix(err, t->name);
            for (uint64_t k = 0; k < cols; k++) {
                double e = (double)row[k] - (double)q[k] * s[k / lay.kg];
                j->sum_w2 += (double)row[k] * row[k];
                j->sum_e2 += e * e;
            }
        }
        if ((rc = mp_amx_int8_pack_rows(&lay, (uint32_t)r0, (uint32_t)(r0 + n), (const int8_t *)sc->q, cols, sc->s,
                                        sc->b, lay.total_bytes, err)))
            return mp_error_prefix(err, t->name);
    }
    if ((rc = write_at(w, sc->b, lay.data_bytes, t->data_offset, err)))
        return rc;
    return write_at(w, sc->b + lay.scale_offset, t->scale_size, t->scale_offset, err);
}

static int run_amx_bf16(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    mp_amx_bf16_layout lay;
    int rc = mp_amx_bf16_layout_init(src->rows, src->cols, t->group_width, &lay, err);
    if (rc)
        return rc;
    if (lay.data_bytes != t->data_size)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "internal error: amx_bf16 layout sizes disagree with the plan");
    uint64_t cols = src->cols, step = chunk_rows(cols, 16);
    sc->f = grow(sc->f, &sc->f_cap, step * cols * sizeof(float));
    sc->b = grow(sc->b, &sc->b_cap, lay.total_bytes);
    sc->q = grow(sc->q, &sc->q_cap, step * cols * 2);
    if (!sc->f || !sc->b || !sc->q)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    memset(sc->b, 0, lay.total_bytes);
    uint16_t *h = (uint16_t *)sc->q;
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        if ((rc = read_checked(c, j, src, r0, n, sc->f, err)))
            return rc;
        for (uint64_t i = 0; i < n * cols; i++) {
            h[i] = mp_f32_to_bf16(sc->f[i]);
            double e = (double)sc->f[i] - mp_bf16_to_f32(h[i]);
            j->sum_w2 += (double)sc->f[i] * sc->f[i];
            j->sum_e2 += e * e;
        }
        if ((rc = mp_amx_bf16_pack_rows(&lay, (uint32_t)r0, (uint32_t)(r0 + n), h, cols, sc->b, lay.total_bytes, err)))
            return mp_error_prefix(err, t->name);
    }
    return write_at(w, sc->b, lay.data_bytes, t->data_offset, err);
}

/* W_UK [h][c][d] = kv_b[h*(nope+v) + d][c]; W_UV [h][j][c] = kv_b[h*(nope+v) + nope + j][c].
 * From GGUF's split tensors they are already in this order. */
static int run_heads(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    const mp_model_desc *d = c->d;
    uint64_t nh = d->num_attention_heads, nope = d->qk_nope_head_dim, vd = d->v_head_dim, lora = d->kv_lora_rank;
    uint64_t n = src->rows * src->cols;
    sc->f = grow(sc->f, &sc->f_cap, n * sizeof(float));
    sc->b = grow(sc->b, &sc->b_cap, t->data_size);
    if (!sc->f || !sc->b)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    int rc = read_checked(c, j, src, 0, src->rows, sc->f, err);
    if (rc)
        return rc;
    uint16_t *o = (uint16_t *)sc->b;
    const float *f = sc->f;
    bool from_kvb = src->id.role == MP_ROLE_KV_B;
    uint64_t i = 0;
    if (j->kind == JOB_W_UK) {
        for (uint64_t h = 0; h < nh; h++)
            for (uint64_t cc = 0; cc < lora; cc++)
                for (uint64_t dd = 0; dd < nope; dd++, i++) {
                    float x = from_kvb ? f[(h * (nope + vd) + dd) * lora + cc] : f[i];
                    o[i] = mp_f32_to_bf16(x);
                    double e = (double)x - mp_bf16_to_f32(o[i]);
                    j->sum_w2 += (double)x * x;
                    j->sum_e2 += e * e;
                }
    } else {
        for (uint64_t h = 0; h < nh; h++)
            for (uint64_t jj = 0; jj < vd; jj++)
                for (uint64_t cc = 0; cc < lora; cc++, i++) {
                    float x = from_kvb ? f[(h * (nope + vd) + nope + jj) * lora + cc] : f[i];
                    o[i] = mp_f32_to_bf16(x);
                    double e = (double)x - mp_bf16_to_f32(o[i]);
                    j->sum_w2 += (double)x * x;
                    j->sum_e2 += e * e;
                }
    }
    return write_at(w, sc->b, t->data_size, t->data_offset, err);
}

static int run_job(ctx *c, job *j, struct scratch *sc, mp_error *err)
{
    mp_ctensor *t = &c->plan.tensors[j->tensor];
    writer w = {c, t, XXH3_createState()};
    if (!w.h)
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    XXH3_64bits_reset(w.h);
    int rc;
    switch (j->kind) {
    case JOB_F32:
    case JOB_BF16: rc = run_rowmajor(c, j, sc, &w, err); break;
    case JOB_INT4: rc = run_int4(c, j, sc, &w, err); break;
    case JOB_AMX_INT8: rc = run_amx_int8(c, j, sc, &w, err); break;
    case JOB_AMX_BF16: rc = run_amx_bf16(c, j, sc, &w, err); break;
    default: rc = run_heads(c, j, sc, &w, err); break;
    }
    t->checksum = XXH3_64bits_digest(w.h);
    XXH3_freeState(w.h);
    mp_source_release(c->src, j->src);
    return rc;
}

/* ---- progress ------------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t n)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(fmod(s, 3600) / 60));
    else if (s >= 60)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, n, "%.1fs", s);
}

static void print_progress(ctx *c, uint32_t unit, bool unit_done)
{
    FILE *f = c->o->progress;
    if (!f)
        return;
    double t = now_s();
    if (!unit_done && t - c->t_last_print < 0.2)
        return;
    c->t_last_print = t;
    double el = t - c->t_start;
    uint64_t fresh = c->done_bytes - c->resumed_bytes;
    double rate = el > 0 ? (double)fresh / el : 0;
    double frac = c->total_bytes ? (double)c->done_bytes / (double)c->total_bytes : 1;
    double eta = rate > 0 ? (double)(c->total_bytes - c->done_bytes) / rate : -1;
    char eta_s[32];
    fmt_duration(eta, eta_s, sizeof eta_s);
    char what[48];
    if (unit == 0)
        snprintf(what, sizeof what, "embeddings");
    else
        snprintf(what, sizeof what, "layer %u/%u", unit - 1, c->n_layers);
    if (c->o->progress_tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        fprintf(f, "\r[%s] %5.1f%%  %-16s %7.2f GB/s  ETA %-8s", bar, 100 * frac, what, rate / 1e9, eta_s);
    } else if (unit_done) {
        fprintf(f, "converted %-16s %5.1f%%  %.2f GB/s  ETA %s\n", what, 100 * frac, rate / 1e9, eta_s);
    }
    fflush(f);
}

/* ---- journal (resume) ----------------------------------------------------- */

static uint64_t compute_plan_hash(ctx *c)
{
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    char opts[512];
    mp_convert_opts_string(c->o, opts, sizeof opts);
    XXH3_64bits_update(h, opts, strlen(opts));
    for (size_t i = 0; i < c->src->n_files; i++) {
        XXH3_64bits_update(h, &c->src->files[i].size, sizeof c->src->files[i].size);
        XXH3_64bits_update(h, &c->src->files[i].header_xxh3, sizeof c->src->files[i].header_xxh3);
    }
    for (size_t i = 0; i < c->plan.n_tensors; i++) {
        const mp_ctensor *t = &c->plan.tensors[i];
        XXH3_64bits_update(h, t->name, strlen(t->name) + 1);
        uint64_t f[6] = {t->data_offset, t->data_size, t->scale_offset, t->scale_size, t->layout, t->quant};
        XXH3_64bits_update(h, f, sizeof f);
    }
    uint64_t v = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return v;
}

static uint64_t dbits(double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}

static double bitsd(uint64_t u)
{
    double x;
    memcpy(&x, &u, 8);
    return x;
}

/* Reads complete unit records of an existing journal; returns the number of
 * units restored (jobs marked done with their checksums and stats). */
static int journal_load(ctx *c, uint32_t *restored, mp_error *err)
{
    *restored = 0;
    char *text = NULL;
    size_t len = 0;
    if (!mp_file_exists(c->journal_path))
        return MP_OK;
    int rc = mp_read_small_file(c->journal_path, 1ull << 30, &text, &len, err);
    if (rc)
        return rc;
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    uint64_t hash = 0;
    if (!line || sscanf(line, "moepack-journal 1 %" SCNx64, &hash) != 1 || hash != c->plan_hash) {
        free(text);
        return mp_fail(err, MP_ERR_INPUT, c->journal_path, NULL,
                       "belongs to a conversion with other input or options; delete it and %s.partial, or convert "
                       "without --resume", c->out.final_path);
    }
    /* tensors of the unit being read, applied only once its "end" line is seen */
    size_t *pending = malloc(c->n_jobs * sizeof *pending);
    job *staged = malloc(c->n_jobs * sizeof *staged);
    uint64_t *sums = malloc(c->n_jobs * sizeof *sums);
    size_t np = 0;
    uint32_t cur = UINT32_MAX;
    while ((line = strtok_r(NULL, "\n", &save))) {
        uint32_t u;
        size_t ti;
        uint64_t sum, w2, e2, nf, zr;
        int64_t fz;
        if (sscanf(line, "unit %u", &u) == 1) {
            cur = u;
            np = 0;
        } else if (sscanf(line, "t %zu %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNu64 " %" SCNu64 " %" SCNd64, &ti, &sum,
                          &w2, &e2, &nf, &zr, &fz) == 7 &&
                   cur != UINT32_MAX && ti < c->n_jobs && c->jobs[ti].unit == cur && np < c->n_jobs) {
            staged[np] = c->jobs[ti];
            staged[np].sum_w2 = bitsd(w2);
            staged[np].sum_e2 = bitsd(e2);
            staged[np].nonfinite = nf;
            staged[np].zero_rows = zr;
            staged[np].first_zero_row = fz;
            sums[np] = sum;
            pending[np++] = ti;
        } else if (sscanf(line, "end %u", &u) == 1 && u == cur) {
            for (size_t k = 0; k < np; k++) {
                job *j = &c->jobs[pending[k]];
                *j = staged[k];
                j->done = true;
                c->plan.tensors[j->tensor].checksum = sums[k];
            }
            (*restored)++;
            cur = UINT32_MAX;
        }
    }
    free(pending);
    free(staged);
    free(sums);
    free(text);
    /* a unit is done only if all of its tensors were recorded */
    for (uint32_t u = 0; u < c->n_units; u++) {
        bool any = false, all = true;
        for (size_t i = 0; i < c->n_jobs; i++)
            if (c->jobs[i].unit == u) {
                any |= c->jobs[i].done;
                all &= c->jobs[i].done;
            }
        if (any && !all)
            for (size_t i = 0; i < c->n_jobs; i++)
                if (c->jobs[i].unit == u)
                    c->jobs[i].done = false;
    }
    return MP_OK;
}

static int journal_append_unit(ctx *c, uint32_t unit, mp_error *err)
{
    size_t cap = 256 + 160 * 64, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return mp_fail(err, MP_ERR_INPUT, c->journal_path, NULL, "out of memory");
    len += (size_t)snprintf(buf + len, cap - len, "unit %u\n", unit);
    for (size_t i = 0; i < c->n_jobs; i++) {
        const job *j = &c->jobs[i];
        if (j->unit != unit)
            continue;
        if (cap - len < 200) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return mp_fail(err, MP_ERR_INPUT, c->journal_path, NULL, "out of memory");
            }
            buf = nb;
        }
        len += (size_t)snprintf(buf + len, cap - len, "t %zu %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %" PRIu64 " %" PRIu64 " %" PRId64 "\n", i,
                                c->plan.tensors[j->tensor].checksum, dbits(j->sum_w2), dbits(j->sum_e2), j->nonfinite,
                                j->zero_rows, j->first_zero_row);
    }
    len += (size_t)snprintf(buf + len, cap - len, "end %u\n", unit);
    /* data first, then the record that says it is there */
    int rc = MP_OK;
    if (fdatasync(c->out.fd) != 0)
        rc = mp_fail_errno(err, c->out.partial_path, errno, "cannot sync");
    size_t off = 0;
    while (!rc && off < len) {
        ssize_t wr = write(c->journal_fd, buf + off, len - off);
        if (wr < 0 && errno == EINTR)
            continue;
        if (wr <= 0)
            rc = mp_fail_errno(err, c->journal_path, wr < 0 ? errno : ENOSPC, "cannot write");
        else
            off += (size_t)wr;
    }
    if (!rc && fsync(c->journal_fd) != 0)
        rc = mp_fail_errno(err, c->journal_path, errno, "cannot sync");
    free(buf);
    return rc;
}

/* ---- metadata -------------------------------------------------------------- */

static const char *basename_of(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static char *build_meta(ctx *c, const mp_convert_summary *sum, mp_chat_format chat, mp_error *err)
{
    mp_attn_params ap;
    if (mp_attn_params_compute(c->d, &ap, err))
        return NULL;
    json_t *m = json_object();
    json_object_set_new(m, "format", json_string("moepack"));
    json_object_set_new(m, "format_version", json_string("1.0"));
    json_t *conv = json_object();
    json_object_set_new(conv, "name", json_string("moepack"));
    json_object_set_new(conv, "version", json_string(MP_VERSION_STRING));
    json_object_set_new(m, "converter", conv);
    json_object_set_new(m, "model", mp_model_desc_to_json(c->d));

    json_t *a = json_object();
    json_object_set_new(a, "softmax_scale", json_real(ap.softmax_scale));
    json_object_set_new(a, "rope_attn_factor", json_real(ap.rope_attn_factor));
    json_t *inv = json_array();
    for (uint32_t i = 0; i < ap.rope_pairs; i++)
        json_array_append_new(inv, json_real(ap.inv_freq[i]));
    json_object_set_new(a, "rope_inv_freq", inv);
    json_object_set_new(m, "attention", a);

    json_t *q = json_object();
    json_object_set_new(q, "cpu_experts", json_string(mp_quant_name(c->o->cpu_quant)));
    json_object_set_new(q, "gpu", json_string(mp_quant_name(c->o->gpu_quant)));
    json_object_set_new(q, "int4_group", json_integer(MP_INT4_GROUP));
    json_object_set_new(q, "int4_fit", json_string(mp_int4_fit_name(c->o->int4_fit)));
    json_object_set_new(q, "expert_slice_width", json_integer(MP_EXPERT_SLICE_WIDTH));
    json_object_set_new(m, "quantization", q);

    json_t *l = json_object();
    json_object_set_new(l, "decoder_layers", json_integer(c->d->num_hidden_layers));
    json_object_set_new(l, "mtp_layers_kept", json_integer(c->n_layers - c->d->num_hidden_layers));
    json_object_set_new(m, "layers", l);
    json_object_set_new(m, "chat_format", json_string(mp_chat_format_name(chat)));

    json_t *p = json_object();
    json_object_set_new(p, "source_kind", json_string(mp_source_kind_name(c->src->kind)));
    json_t *files = json_array();
    for (size_t i = 0; i < c->src->n_files; i++) {
        json_t *f = json_object();
        char hex[32];
        snprintf(hex, sizeof hex, "%016" PRIx64, c->src->files[i].header_xxh3);
        json_object_set_new(f, "file", json_string(basename_of(c->src->files[i].path)));
        json_object_set_new(f, "size", json_integer((json_int_t)c->src->files[i].size));
        json_object_set_new(f, "header_xxh3", json_string(hex));
        json_array_append_new(files, f);
    }
    json_object_set_new(p, "sources", files);
    char opts[512];
    mp_convert_opts_string(c->o, opts, sizeof opts);
    json_object_set_new(p, "options", json_string(opts));
    json_object_set_new(m, "provenance", p);

    json_t *rep = json_object();
    for (int r = 0; r < MP_ROLE_COUNT; r++) {
        const mp_role_error *re = &sum->roles[r];
        if (!re->tensors)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "tensors", json_integer((json_int_t)re->tensors));
        json_object_set_new(o, "rms_rel_err", json_real(re->sum_w2 > 0 ? sqrt(re->sum_e2 / re->sum_w2) : 0));
        json_object_set_new(o, "worst_tensor", json_string(re->worst_name));
        json_object_set_new(o, "worst_rms_rel_err", json_real(re->worst));
        json_object_set_new(rep, mp_role_name((mp_role)r), o);
    }
    json_object_set_new(m, "quant_report", rep);
    char *s = json_dumps(m, JSON_INDENT(1));
    json_decref(m);
    if (!s)
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory writing metadata");
    return s;
}

/* ---- the driver ------------------------------------------------------------- */

static void summarize(ctx *c, mp_convert_summary *sum)
{
    for (size_t i = 0; i < c->n_jobs; i++) {
        const job *j = &c->jobs[i];
        const mp_ctensor *t = &c->plan.tensors[j->tensor];
        mp_role_error *re = &sum->roles[t->role];
        re->sum_w2 += j->sum_w2;
        re->sum_e2 += j->sum_e2;
        re->tensors++;
        double rel = j->sum_w2 > 0 ? sqrt(j->sum_e2 / j->sum_w2) : 0;
        if (rel > re->worst || !re->worst_name[0]) {
            re->worst = rel;
            snprintf(re->worst_name, sizeof re->worst_name, "%s", t->name);
        }
        sum->nonfinite_zeroed += j->nonfinite;
        if (j->zero_rows && !sum->zero_rows)
            snprintf(sum->first_zero_row, sizeof sum->first_zero_row, "%s row %" PRId64, j->src->name,
                     j->first_zero_row);
        sum->zero_rows += j->zero_rows;
    }
    sum->n_tensors = c->plan.n_tensors;
    for (int s = 0; s < MP_SECTION_COUNT; s++)
        sum->section_bytes[s] = c->plan.section_size[s];
}

static int disk_check(ctx *c, mp_error *err)
{
    char *dir = mp_path_dirname(c->out.final_path);
    struct statvfs vs;
    int rc = MP_OK;
    if (dir && statvfs(dir, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
        uint64_t have = c->out.size; /* a resumed partial already holds its bytes */
        uint64_t need = c->plan.data_end > have ? c->plan.data_end - have : 0;
        if (need > avail)
            rc = mp_fail(err, MP_ERR_INPUT, c->out.partial_path, NULL,
                         "not enough disk space: the container needs %.2f GB more, %.2f GB are free",
                         (double)need / 1e9, (double)avail / 1e9);
    }
    free(dir);
    return rc;
}

static void cleanup(ctx *c, bool keep_partial)
{
    if (c->journal_fd >= 0)
        close(c->journal_fd);
    if (c->journal_path && !keep_partial)
        unlink(c->journal_path);
    if (c->out_open) {
        if (keep_partial)
            mp_outfile_close_keep(&c->out);
        else
            mp_outfile_abort(&c->out);
    }
    if (c->scratch)
        for (int i = 0; i < c->threads; i++) {
            free(c->scratch[i].f);
            free(c->scratch[i].b);
            free(c->scratch[i].q);
            free(c->scratch[i].s);
        }
    free(c->scratch);
    free(c->journal_path);
    free(c->jobs);
    mp_container_plan_free(&c->plan);
    mp_source_close(c->src);
}

static int cmp_job_size(const void *a, const void *b, void *arg)
{
    ctx *c = arg;
    const size_t *x = a, *y = b;
    uint64_t sx = c->plan.tensors[c->jobs[*x].tensor].data_size, sy = c->plan.tensors[c->jobs[*y].tensor].data_size;
    if (sx != sy)
        return sx < sy ? 1 : -1;
    return *x < *y ? -1 : *x > *y;
}

int mp_convert(const char *src_path, const char *out_path, const mp_convert_opts *opts, mp_convert_summary *sum,
               mp_error *err)
{
    memset(sum, 0, sizeof *sum);
    ctx c;
    memset(&c, 0, sizeof c);
    c.o = opts;
    c.journal_fd = -1;
    c.t_start = now_s();
    int rc = mp_source_open(src_path, opts->config_override, &c.src, err);
    if (rc)
        return rc;
    c.d = &c.src->desc;
    uint8_t *tok_blob = NULL;
    size_t tok_len = 0;
    mp_chat_format chat = MP_CHAT_DEEPSEEK_V3;
    bool keep_partial = false;
    /* the tokenizer first: a checkpoint without one fails before the long part */
    rc = mp_convert_tokenizer_blob(c.src, &tok_blob, &tok_len, &chat, err);
    if (!rc)
        rc = build_plan(&c, err);
    if (rc)
        goto done;
    c.plan_hash = compute_plan_hash(&c);
    for (size_t i = 0; i < c.n_jobs; i++)
        c.total_bytes += mp_source_tensor_bytes(c.src, c.jobs[i].src);

    c.journal_path = malloc(strlen(out_path) + 32);
    if (!c.journal_path) {
        rc = mp_fail(err, MP_ERR_INPUT, out_path, NULL, "out of memory");
        goto done;
    }
    sprintf(c.journal_path, "%s.partial.journal", out_path);
    bool resuming = opts->resume && mp_file_exists(c.journal_path);
    if ((rc = mp_outfile_open(&c.out, out_path, resuming, err)))
        goto done;
    c.out_open = true;
    uint32_t restored = 0;
    if (resuming && (rc = journal_load(&c, &restored, err))) {
        keep_partial = true; /* not ours to delete: it belongs to another conversion */
        goto done;
    }
    sum->units_resumed = restored;
    if ((rc = disk_check(&c, err)))
        goto done;
    c.journal_fd = open(c.journal_path, O_WRONLY | O_CREAT | O_CLOEXEC | (resuming ? O_APPEND : O_TRUNC), 0644);
    if (c.journal_fd < 0) {
        rc = mp_fail_errno(err, c.journal_path, errno, "cannot create");
        goto done;
    }
    if (!resuming) {
        char head[64];
        int n = snprintf(head, sizeof head, "moepack-journal 1 %016" PRIx64 "\n", c.plan_hash);
        if (write(c.journal_fd, head, (size_t)n) != n) {
            rc = mp_fail_errno(err, c.journal_path, errno, "cannot write");
            goto done;
        }
    }
    for (size_t i = 0; i < c.n_jobs; i++)
        if (c.jobs[i].done)
            c.resumed_bytes += mp_source_tensor_bytes(c.src, c.jobs[i].src);
    c.done_bytes = c.resumed_bytes;

    c.threads = opts->threads > 0 ? opts->threads : omp_get_max_threads();
    c.scratch = calloc((size_t)c.threads, sizeof *c.scratch);
    size_t *order = malloc(c.n_jobs * sizeof *order);
    if (!c.scratch || !order) {
        free(order);
        rc = mp_fail(err, MP_ERR_INPUT, out_path, NULL, "out of memory");
        goto done;
    }
    uint32_t units_run = 0;
    for (uint32_t u = 0; u < c.n_units && !rc; u++) {
        size_t n = 0;
        for (size_t i = 0; i < c.n_jobs; i++)
            if (c.jobs[i].unit == u && !c.jobs[i].done)
                order[n++] = i;
        if (!n)
            continue;
        if (opts->max_layers && units_run == opts->max_layers) {
            keep_partial = true; /* a deliberately interrupted conversion (tests) */
            rc = mp_fail(err, MP_ERR_INPUT, out_path, NULL, "stopped after %u units as asked", units_run);
            break;
        }
        /* largest first, so the tail of a unit is not one big tensor alone */
        qsort_r(order, n, sizeof *order, cmp_job_size, &c);
        for (size_t k = 0; k < n && k < (size_t)c.threads * 2; k++)
            mp_source_prefetch(c.src, c.jobs[order[k]].src);
        int first_rc = MP_OK;
        mp_error first_err = {0};
#pragma omp parallel for schedule(dynamic, 1) num_threads(c.threads)
        for (size_t k = 0; k < n; k++) {
            int failed;
#pragma omp atomic read
            failed = first_rc;
            if (failed)
                continue;
            job *j = &c.jobs[order[k]];
            mp_error e = {0};
            int jrc = run_job(&c, j, &c.scratch[omp_get_thread_num()], &e);
#pragma omp critical(convert_progress)
            {
                if (jrc && !first_rc) {
                    first_rc = jrc;
                    first_err = e;
                }
                if (!jrc) {
                    j->done = true;
                    c.done_bytes += mp_source_tensor_bytes(c.src, j->src);
                    if (k + (size_t)c.threads * 2 < n)
                        mp_source_prefetch(c.src, c.jobs[order[k + (size_t)c.threads * 2]].src);
                    print_progress(&c, u, false);
                }
            }
        }
        if (first_rc) {
            *err = first_err;
            rc = first_rc;
            break;
        }
        units_run++;
        if ((rc = journal_append_unit(&c, u, err)))
            break;
        print_progress(&c, u, true);
    }
    free(order);
    if (opts->progress && opts->progress_tty)
        fputc('\n', opts->progress);
    if (rc)
        goto done;

    summarize(&c, sum);
    char *meta = build_meta(&c, sum, chat, err);
    if (!meta) {
        rc = err->code ? err->code : MP_ERR_INPUT;
        goto done;
    }
    rc = mp_container_write_tail(&c.out, &c.plan, meta, tok_blob, tok_len, err);
    free(meta);
    if (!rc)
        rc = mp_outfile_commit(&c.out, err);
    if (!rc) {
        c.out_open = false;
        sum->file_bytes = c.out.size;
    }

done:
    if (!rc) {
        for (size_t i = 0; i < c.n_jobs; i++)
            sum->source_bytes += mp_source_tensor_bytes(c.src, c.jobs[i].src);
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            sum->peak_rss_bytes = (uint64_t)ru.ru_maxrss * 1024;
        sum->seconds = now_s() - c.t_start;
    }
    free(tok_blob);
    cleanup(&c, keep_partial || (rc && opts->max_layers));
    return rc;
}
