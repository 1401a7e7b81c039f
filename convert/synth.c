/* `moepack synth`: plans the tensors of a DeepSeek checkpoint, groups them
 * into shards like the official files, and streams random weights into them.
 *
 * Tensor order (which decides the grouping into shards) follows the official
 * checkpoints: embeddings, then each layer's tensors in module order
 * (attention, MLP or experts + router + shared experts, norms), the final norm
 * and lm_head, then the MTP layer. An FP8 weight and its weight_scale_inv
 * always share a shard. Within a shard, tensors are laid out the way the
 * reference safetensors serializer orders them (by dtype, then name), so a
 * file is byte-identical to what `safetensors` itself would write.
 *
 * Writing is a list of jobs per shard (row ranges of a tensor; 128-row bands
 * for FP8, whose block scales need whole blocks), run by OpenMP threads that
 * each own fixed-size buffers and pwrite their results into place. */
#include "synth.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_array.h"
#include "mp_file.h"
#include "mp_num.h"
#include "safetensors_write.h"
#include "synth_internal.h"

enum { NAME_MAX_LEN = 112, JOB_ELEMS = 1 << 17, FP8_BLOCK = 128 };

typedef struct plan_tensor {
    char name[NAME_MAX_LEN];
    mp_synth_values values;
    mp_stw_dtype dtype;
    uint8_t ndim;
    int32_t scale;   /* FP8 weight: index of its weight_scale_inv; else -1 */
    bool is_scale;   /* a weight_scale_inv, written by its weight's jobs */
    uint32_t shard;
    uint32_t slot;   /* index in its shard's writer */
} plan_tensor;

typedef struct plan {
    mp_synth_model m;
    uint64_t seed;
    plan_tensor *t;
    size_t n, cap;
    uint32_t nshards;
    bool failed; /* out of memory or a name too long while planning */
} plan;

static plan_tensor *plan_push(plan *p)
{
    plan_tensor *grown = mp_array_grow(p->t, p->n, &p->cap, sizeof *grown, 1024);
    if (!grown) {
        p->failed = true;
        return NULL;
    }
    p->t = grown;
    plan_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    t->scale = -1;
    return t;
}

/* Adds one tensor; `key_name` names the tensor whose values it copies (the
 * MTP layer's embed_tokens and shared_head.head are copies of the main ones,
 * as in the official checkpoint), NULL for its own. `quantizable` marks the
 * weights the official FP8 checkpoint stores as F8_E4M3. */
static void add(plan *p, const char *name, const char *key_name, mp_synth_kind kind, uint32_t rows, uint32_t cols,
                int ndim, bool quantizable)
{
    plan_tensor *t = plan_push(p);
    if (!t)
        return;
    if (strlen(name) + sizeof "_scale_inv" > NAME_MAX_LEN) {
        p->failed = true;
        return;
    }
    strcpy(t->name, name);
    t->ndim = (uint8_t)ndim;
    uint64_t key = mp_synth_tensor_key(p->seed, key_name ? key_name : name);
    mp_synth_values_init(&t->values, key, kind, ndim == 1 ? 1 : rows, cols);
    t->dtype = kind == MP_SYNTH_KIND_BIAS ? MP_STW_F32 : MP_STW_BF16;
    if (!(quantizable && p->m.fp8))
        return;
    t->dtype = MP_STW_F8_E4M3;
    size_t wi = (size_t)(t - p->t);
    plan_tensor *s = plan_push(p);
    if (!s)
        return;
    t = &p->t[wi]; /* plan_push may have moved the array */
    snprintf(s->name, sizeof s->name, "%s_scale_inv", name);
    s->ndim = 2;
    s->dtype = MP_STW_F32;
    s->is_scale = true;
    /* only the shape matters for a scale tensor: its values come from the weight */
    mp_synth_values_init(&s->values, 0, MP_SYNTH_KIND_BIAS, (rows + FP8_BLOCK - 1) / FP8_BLOCK,
                         (cols + FP8_BLOCK - 1) / FP8_BLOCK);
    t->scale = (int32_t)(s - p->t);
}

static void add_layer(plan *p, uint32_t L)
{
    const mp_synth_model *m = &p->m;
    char pfx[48], n[NAME_MAX_LEN];
    snprintf(pfx, sizeof pfx, "model.layers.%u.", L);
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    const uint32_t qk = m->nope + m->rope;
    if (m->q_lora) {
        add(p, NAME("%sself_attn.q_a_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->q_lora, m->hidden, 2, true);
        add(p, NAME("%sself_attn.q_a_layernorm.weight", pfx), NULL, MP_SYNTH_KIND_NORM, 1, m->q_lora, 1, false);
        add(p, NAME("%sself_attn.q_b_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->heads * qk, m->q_lora, 2,
            true);
    } else {
        add(p, NAME("%sself_attn.q_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->heads * qk, m->hidden, 2, true);
    }
    add(p, NAME("%sself_attn.kv_a_proj_with_mqa.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->kv_lora + m->rope,
        m->hidden, 2, true);
    add(p, NAME("%sself_attn.kv_a_layernorm.weight", pfx), NULL, MP_SYNTH_KIND_NORM, 1, m->kv_lora, 1, false);
    add(p, NAME("%sself_attn.kv_b_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->heads * (m->nope + m->v_head),
        m->kv_lora, 2, true);
    add(p, NAME("%sself_attn.o_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR_OUT, m->hidden, m->heads * m->v_head, 2,
        true);
    if (L < m->dense) {
        add(p, NAME("%smlp.gate_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->intermediate, m->hidden, 2, true);
        add(p, NAME("%smlp.up_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, m->intermediate, m->hidden, 2, true);
        add(p, NAME("%smlp.down_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR_OUT, m->hidden, m->intermediate, 2,
            true);
    } else {
        for (uint32_t e = 0; e < m->n_routed; e++) {
            add(p, NAME("%smlp.experts.%u.gate_proj.weight", pfx, e), NULL, MP_SYNTH_KIND_LINEAR, m->moe_intermediate,
                m->hidden, 2, true);
            add(p, NAME("%smlp.experts.%u.up_proj.weight", pfx, e), NULL, MP_SYNTH_KIND_LINEAR, m->moe_intermediate,
                m->hidden, 2, true);
            add(p, NAME("%smlp.experts.%u.down_proj.weight", pfx, e), NULL, MP_SYNTH_KIND_LINEAR_OUT, m->hidden,
                m->moe_intermediate, 2, true);
        }
        add(p, NAME("%smlp.gate.weight", pfx), NULL, MP_SYNTH_KIND_ROUTER, m->n_routed, m->hidden, 2, false);
        if (m->family == MP_SYNTH_FAMILY_V3)
            add(p, NAME("%smlp.gate.e_score_correction_bias", pfx), NULL, MP_SYNTH_KIND_BIAS, 1, m->n_routed, 1,
                false);
        const uint32_t shared = m->moe_intermediate * m->n_shared;
        add(p, NAME("%smlp.shared_experts.gate_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, shared, m->hidden, 2,
            true);
        add(p, NAME("%smlp.shared_experts.up_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR, shared, m->hidden, 2, true);
        add(p, NAME("%smlp.shared_experts.down_proj.weight", pfx), NULL, MP_SYNTH_KIND_LINEAR_OUT, m->hidden, shared, 2,
            true);
    }
    add(p, NAME("%sinput_layernorm.weight", pfx), NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
    add(p, NAME("%spost_attention_layernorm.weight", pfx), NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
#undef NAME
}

static const char EMBED[] = "model.embed_tokens.weight", LM_HEAD[] = "lm_head.weight";

static void build_tensors(plan *p)
{
    const mp_synth_model *m = &p->m;
    add(p, EMBED, NULL, MP_SYNTH_KIND_EMBED, m->vocab, m->hidden, 2, false);
    for (uint32_t L = 0; L < m->layers; L++)
        add_layer(p, L);
    add(p, "model.norm.weight", NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
    add(p, LM_HEAD, NULL, MP_SYNTH_KIND_LINEAR, m->vocab, m->hidden, 2, false);
    if (m->mtp) {
        /* The MTP module is layer index num_hidden_layers: a full decoder layer
         * plus its own (copied) embedding and head; eh_proj stays BF16 in the
         * official FP8 checkpoint. */
        uint32_t L = m->layers;
        char n[NAME_MAX_LEN];
        add_layer(p, L);
        snprintf(n, sizeof n, "model.layers.%u.embed_tokens.weight", L);
        add(p, n, EMBED, MP_SYNTH_KIND_EMBED, m->vocab, m->hidden, 2, false);
        snprintf(n, sizeof n, "model.layers.%u.enorm.weight", L);
        add(p, n, NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
        snprintf(n, sizeof n, "model.layers.%u.hnorm.weight", L);
        add(p, n, NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
        snprintf(n, sizeof n, "model.layers.%u.eh_proj.weight", L);
        add(p, n, NULL, MP_SYNTH_KIND_LINEAR, m->hidden, 2 * m->hidden, 2, false);
        snprintf(n, sizeof n, "model.layers.%u.shared_head.norm.weight", L);
        add(p, n, NULL, MP_SYNTH_KIND_NORM, 1, m->hidden, 1, false);
        snprintf(n, sizeof n, "model.layers.%u.shared_head.head.weight", L);
        add(p, n, LM_HEAD, MP_SYNTH_KIND_LINEAR, m->vocab, m->hidden, 2, false);
    }
}

static uint64_t tensor_bytes(const plan_tensor *t)
{
    return (uint64_t)t->values.rows * t->values.cols * mp_stw_dtype_size(t->dtype);
}

/* Greedy packing in tensor order: a new shard starts when the next weight
 * (with its scale) would push the current one past the target. */
static void assign_shards(plan *p)
{
    uint64_t cur = 0;
    uint32_t shard = 0;
    for (size_t i = 0; i < p->n; i++) {
        plan_tensor *t = &p->t[i];
        if (t->is_scale)
            continue; /* placed with its weight */
        uint64_t unit = tensor_bytes(t) + (t->scale >= 0 ? tensor_bytes(&p->t[t->scale]) : 0);
        if (cur > 0 && cur + unit > p->m.shard_bytes) {
            shard++;
            cur = 0;
        }
        t->shard = shard;
        if (t->scale >= 0)
            p->t[t->scale].shard = shard;
        cur += unit;
    }
    p->nshards = shard + 1;
}

static void shard_name(char *buf, size_t size, uint32_t shard, uint32_t nshards)
{
    /* DeepSeek's own naming: five digits, then six for the count. */
    snprintf(buf, size, "model-%05u-of-%06u.safetensors", shard + 1, nshards);
}

/* qsort_r comparators over indices into the plan's tensors. */
static int cmp_reference(const void *a, const void *b, void *ctx)
{
    const plan_tensor *base = ctx;
    const plan_tensor *x = &base[*(const size_t *)a], *y = &base[*(const size_t *)b];
    return mp_stw_reference_cmp(x->dtype, x->name, y->dtype, y->name);
}

static int cmp_name(const void *a, const void *b, void *ctx)
{
    const plan_tensor *base = ctx;
    return strcmp(base[*(const size_t *)a].name, base[*(const size_t *)b].name);
}

/* ---- writing ---- */

typedef struct job {
    uint32_t tensor;
    uint32_t r0, r1;
} job;

typedef struct thread_buffers {
    float *f;    /* float rows / an FP8 band */
    uint8_t *o;  /* encoded bytes */
    float *s;    /* one row of FP8 block scales */
    float *colf; /* the tensor's column factors */
} thread_buffers;

typedef struct shard_run {
    const plan *p;
    mp_st_writer *w;
    const float *normal;
} shard_run;

static int run_job(const shard_run *r, const job *j, thread_buffers *b, mp_error *err)
{
    const plan_tensor *t = &r->p->t[j->tensor];
    const mp_synth_values *v = &t->values;
    const uint32_t cols = v->cols;
    mp_synth_col_factors(v, b->colf);
    if (t->dtype == MP_STW_F8_E4M3) {
        const plan_tensor *s = &r->p->t[t->scale];
        const uint32_t nrows = j->r1 - j->r0, ncb = s->values.cols;
        mp_synth_band_fp8(v, r->normal, b->colf, j->r0, nrows, b->f, b->o, b->s);
        int rc = mp_st_writer_write(r->w, t->slot, (uint64_t)j->r0 * cols, b->o, (size_t)nrows * cols, err);
        if (rc == MP_OK)
            rc = mp_st_writer_write(r->w, s->slot, (uint64_t)(j->r0 / FP8_BLOCK) * ncb * 4, b->s, (size_t)ncb * 4, err);
        return rc;
    }
    const size_t esize = mp_stw_dtype_size(t->dtype);
    for (uint32_t row = j->r0; row < j->r1; row++) {
        uint8_t *dst = b->o + (size_t)(row - j->r0) * cols * esize;
        mp_synth_row_f32(v, r->normal, b->colf, row, b->f);
        if (t->dtype == MP_STW_F32) {
            memcpy(dst, b->f, (size_t)cols * 4);
        } else {
            uint16_t *h = (uint16_t *)(void *)dst; /* the buffer is malloc'd: aligned for any type */
            for (uint32_t c = 0; c < cols; c++)
                h[c] = mp_f32_to_bf16(b->f[c]); /* little-endian host, as the format */
        }
    }
    return mp_st_writer_write(r->w, t->slot, (uint64_t)j->r0 * cols * esize, b->o,
                              (size_t)(j->r1 - j->r0) * cols * esize, err);
}

/* Rows per job: a 128-row band for FP8 (block scales need whole blocks),
 * else about JOB_ELEMS elements, which keeps each thread's buffers in L2. */
static uint32_t job_rows(const plan_tensor *t)
{
    uint32_t step = t->dtype == MP_STW_F8_E4M3 ? FP8_BLOCK : (uint32_t)(JOB_ELEMS / t->values.cols);
    return step ? step : 1;
}

/* Bytes a job writes (an FP8 band also writes its row of scales). */
static uint64_t job_bytes(const plan *p, const job *j)
{
    const plan_tensor *t = &p->t[j->tensor];
    uint64_t bytes = (uint64_t)(j->r1 - j->r0) * t->values.cols * mp_stw_dtype_size(t->dtype);
    return t->scale >= 0 ? bytes + 4ull * p->t[t->scale].values.cols : bytes;
}

/* MP_ERR_INPUT "interrupted" once the caller has set *o->stop (a signal). */
static int interrupted(const mp_synth_options *o, const char *where, mp_error *err)
{
    return o->stop && *o->stop ? mp_fail(err, MP_ERR_INPUT, where, NULL, "interrupted") : MP_OK;
}

static int write_shard(plan *p, const char *path, const size_t *members, size_t nmembers,
                       const float *normal, thread_buffers *bufs, int threads, _Atomic uint64_t *done, uint64_t total,
                       const mp_synth_options *o, uint64_t *file_bytes, mp_error *err)
{
    mp_st_writer *w = NULL;
    int rc = mp_st_writer_open(&w, path, err);
    if (rc)
        return rc;
    /* Hugging Face's save_pretrained tags every shard with the framework. */
    rc = mp_st_writer_set_metadata(w, "format", "pt", err);
    size_t njobs = 0;
    for (size_t k = 0; rc == MP_OK && k < nmembers; k++) {
        plan_tensor *t = &p->t[members[k]];
        uint64_t shape[2] = {t->values.rows, t->values.cols};
        size_t slot;
        rc = t->ndim == 1 ? mp_st_writer_add(w, t->name, t->dtype, shape + 1, 1, &slot, err)
                          : mp_st_writer_add(w, t->name, t->dtype, shape, 2, &slot, err);
        t->slot = (uint32_t)slot;
        if (!t->is_scale)
            njobs += (t->values.rows + job_rows(t) - 1) / job_rows(t);
    }
    if (rc == MP_OK)
        rc = mp_st_writer_begin(w, err);
    job *jobs = rc == MP_OK ? malloc((njobs ? njobs : 1) * sizeof *jobs) : NULL;
    if (rc == MP_OK && !jobs)
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    size_t nj = 0;
    for (size_t k = 0; rc == MP_OK && k < nmembers; k++) {
        const plan_tensor *t = &p->t[members[k]];
        if (t->is_scale)
            continue;
        uint32_t step = job_rows(t);
        for (uint32_t r0 = 0; r0 < t->values.rows; r0 += step)
            jobs[nj++] = (job){(uint32_t)members[k], r0, r0 + step < t->values.rows ? r0 + step : t->values.rows};
    }
    shard_run run = {p, w, normal};
    bool failed = false;
    mp_error first = {0};
    if (rc == MP_OK) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (size_t k = 0; k < nj; k++) {
            bool stop;
#pragma omp atomic read
            stop = failed;
            if (stop)
                continue;
            mp_error e = {0};
            int jrc = interrupted(o, path, &e);
            if (!jrc)
                jrc = run_job(&run, &jobs[k], &bufs[omp_get_thread_num()], &e);
            if (jrc) {
#pragma omp critical(synth_error)
                {
                    if (!failed)
                        first = e;
#pragma omp atomic write
                    failed = true;
                }
                continue;
            }
            uint64_t bytes = job_bytes(p, &jobs[k]);
            uint64_t now = atomic_fetch_add(done, bytes) + bytes;
            if (o->progress && omp_get_thread_num() == 0)
                o->progress(o->progress_ctx, now, total);
        }
        if (failed) {
            *err = first;
            rc = first.code ? first.code : MP_ERR_INPUT;
        }
    }
    free(jobs);
    if (rc) {
        mp_st_writer_abort(w);
        return rc;
    }
    *file_bytes += mp_st_writer_file_size(w);
    return mp_st_writer_commit(w, err);
}

static int write_text(const char *dir, const char *name, const char *text, mp_error *err)
{
    char *path = mp_path_join(dir, name);
    if (!path)
        return mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    const mp_file_part part = {text, strlen(text)};
    int rc = mp_write_file_parts(path, &part, 1, err);
    free(path);
    return rc;
}

/* ---- what a run leaves ---- */

/* A file the run writes, as its name stood before the run. Every file is
 * written through FILE.partial and renamed over the name, so the one this run
 * wrote is a new inode: a failed run removes a name that now stands for
 * another file than before, and leaves the rest of the folder alone. */
typedef struct output_file {
    char *path;
    bool existed;
    dev_t dev;
    ino_t ino;
} output_file;

static const char *const TEXT_FILES[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                         "model.safetensors.index.json"};
enum { N_TEXT_FILES = sizeof TEXT_FILES / sizeof TEXT_FILES[0] };

/* The paths of every file the run may write (the text files, then the
 * shards), each with what stands at it now; NULL when out of memory. */
static output_file *note_outputs(const plan *p, const char *out_dir, size_t *n_out)
{
    size_t n = N_TEXT_FILES + p->nshards;
    output_file *f = calloc(n, sizeof *f);
    for (size_t i = 0; f && i < n; i++) {
        char name[64];
        if (i < N_TEXT_FILES)
            snprintf(name, sizeof name, "%s", TEXT_FILES[i]);
        else
            shard_name(name, sizeof name, (uint32_t)(i - N_TEXT_FILES), p->nshards);
        struct stat st;
        if (!(f[i].path = mp_path_join(out_dir, name))) {
            for (size_t k = 0; k < i; k++)
                free(f[k].path);
            free(f);
            return NULL;
        }
        f[i].existed = stat(f[i].path, &st) == 0;
        f[i].dev = f[i].existed ? st.st_dev : 0;
        f[i].ino = f[i].existed ? st.st_ino : 0;
    }
    *n_out = n;
    return f;
}

/* Removes the files of outputs that this run wrote; returns how many. */
static uint32_t remove_written(const output_file *f, size_t n)
{
    uint32_t removed = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(f[i].path, &st) == 0 && (!f[i].existed || st.st_dev != f[i].dev || st.st_ino != f[i].ino) &&
            unlink(f[i].path) == 0)
            removed++;
    }
    return removed;
}

/* At most the bytes the run writes. The shard data is exact; what is only
 * known once written is bounded from above: a header entry of a tensor (its
 * name plus dtype, shape and offsets), an index line (its name plus a shard
 * name), a tokenizer entry (the official V3 tokenizer.json takes 64 bytes a
 * token), and a block of 4 KB per file for rounding up. The bound errs high
 * by a few MB at most, which matters only on a disk full to the last MB. */
static uint64_t disk_bytes_needed(const plan *p, uint64_t data_bytes, bool dry_run)
{
    uint64_t names = 0;
    for (size_t i = 0; i < p->n; i++)
        names += strlen(p->t[i].name);
    uint64_t index = names + 64ull * p->n + 4096;
    uint64_t text = (uint64_t)p->m.vocab * 128 + (256u << 10); /* tokenizer, its config, config.json */
    uint64_t headers = names + 128ull * p->n + 4352ull * p->nshards;
    return index + text + (dry_run ? 0 : data_bytes + headers);
}

/* Writes the shards (the tensors in `order`, shard s being order[first[s] ..
 * first[s + 1])). */
static int write_shards(plan *p, const size_t *order, const size_t *first, uint64_t data_bytes,
                        const mp_synth_options *o, const char *out_dir, uint64_t *file_bytes, mp_error *err)
{
    int rc = MP_OK;
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    uint32_t max_cols = 1, max_fp8_cols = 0;
    for (size_t i = 0; i < p->n; i++) {
        uint32_t c = p->t[i].values.cols;
        max_cols = c > max_cols ? c : max_cols;
        if (p->t[i].dtype == MP_STW_F8_E4M3 && c > max_fp8_cols)
            max_fp8_cols = c;
    }
    size_t fsize = (size_t)FP8_BLOCK * max_fp8_cols > max_cols ? (size_t)FP8_BLOCK * max_fp8_cols : max_cols;
    size_t osize = (size_t)FP8_BLOCK * max_fp8_cols;
    /* a non-FP8 job is JOB_ELEMS elements, or one row when a row is longer */
    size_t row_job = (size_t)(max_cols > JOB_ELEMS ? max_cols : JOB_ELEMS) * 4;
    osize = osize > row_job ? osize : row_job;
    float *normal = malloc(MP_SYNTH_NORMAL_TABLE * sizeof *normal);
    thread_buffers *bufs = calloc((size_t)threads, sizeof *bufs);
    bool ok = normal && bufs;
    for (int t = 0; ok && t < threads; t++) {
        bufs[t].f = malloc(fsize * sizeof(float));
        bufs[t].o = malloc(osize);
        bufs[t].s = malloc(((size_t)max_cols / FP8_BLOCK + 1) * sizeof(float));
        bufs[t].colf = malloc((size_t)max_cols * sizeof(float));
        ok = bufs[t].f && bufs[t].o && bufs[t].s && bufs[t].colf;
    }
    if (!ok)
        rc = mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "out of memory for the generation buffers");
    else
        mp_synth_normal_table(normal);
    _Atomic uint64_t done = 0;
    for (uint32_t s = 0; rc == MP_OK && s < p->nshards; s++) {
        char name[64];
        shard_name(name, sizeof name, s, p->nshards);
        char *path = mp_path_join(out_dir, name);
        if (!path) {
            rc = mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "out of memory");
            break;
        }
        rc = write_shard(p, path, order + first[s], first[s + 1] - first[s], normal, bufs, threads, &done,
                         data_bytes, o, file_bytes, err);
        free(path);
    }
    if (rc == MP_OK && o->progress)
        o->progress(o->progress_ctx, data_bytes, data_bytes);
    for (int t = 0; bufs && t < threads; t++) {
        free(bufs[t].f);
        free(bufs[t].o);
        free(bufs[t].s);
        free(bufs[t].colf);
    }
    free(bufs);
    free(normal);
    return rc;
}

/* The index, sorted by tensor name as save_pretrained writes it. */
static int write_index(const plan *p, size_t *order, uint64_t data_bytes, const char *out_dir, mp_error *err)
{
    char(*files)[64] = malloc((size_t)p->nshards * sizeof *files);
    mp_st_index_entry *entries = malloc(p->n * sizeof *entries);
    char *path = mp_path_join(out_dir, "model.safetensors.index.json");
    int rc;
    if (!files || !entries || !path) {
        rc = mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "out of memory");
    } else {
        for (uint32_t s = 0; s < p->nshards; s++)
            shard_name(files[s], sizeof files[s], s, p->nshards);
        for (size_t i = 0; i < p->n; i++)
            order[i] = i;
        qsort_r(order, p->n, sizeof *order, cmp_name, p->t);
        for (size_t i = 0; i < p->n; i++)
            entries[i] = (mp_st_index_entry){p->t[order[i]].name, files[p->t[order[i]].shard]};
        rc = mp_st_write_index(path, data_bytes, entries, p->n, err);
    }
    free(files);
    free(entries);
    free(path);
    return rc;
}

int mp_synth_run(const mp_synth_options *o, const char *out_dir, mp_synth_result *result, mp_error *err)
{
    plan p = {0};
    memset(result, 0, sizeof *result);
    int rc = mp_synth_model_resolve(o, &p.m, err);
    if (rc)
        return rc;
    if (!mp_is_directory(out_dir))
        return mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "not a directory");
    p.seed = o->seed;
    build_tensors(&p);
    if (p.failed) {
        free(p.t);
        return mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "cannot plan the tensors (out of memory, or a name too long)");
    }
    assign_shards(&p);

    /* Shard membership (tensor order within each shard is the reference's). */
    size_t *order = malloc(p.n * sizeof *order);
    size_t *first = calloc((size_t)p.nshards + 1, sizeof *first);
    size_t *fill = calloc(p.nshards, sizeof *fill);
    size_t n_outputs = 0;
    output_file *outputs = note_outputs(&p, out_dir, &n_outputs);
    if (!order || !first || !fill || !outputs)
        rc = mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "out of memory");
    uint64_t data_bytes = 0;
    if (rc == MP_OK) {
        for (size_t i = 0; i < p.n; i++) {
            first[p.t[i].shard + 1]++;
            data_bytes += tensor_bytes(&p.t[i]);
        }
        for (uint32_t s = 0; s < p.nshards; s++)
            first[s + 1] += first[s];
        for (size_t i = 0; i < p.n; i++)
            order[first[p.t[i].shard] + fill[p.t[i].shard]++] = i;
        for (uint32_t s = 0; s < p.nshards; s++)
            qsort_r(order + first[s], first[s + 1] - first[s], sizeof *order, cmp_reference, p.t);
    }
    free(fill);

    /* Before anything is written: a disk too small would otherwise be found
     * full after hours, with most of the shards written. */
    if (rc == MP_OK)
        rc = mp_check_disk_space(out_dir, disk_bytes_needed(&p, data_bytes, o->dry_run), NULL,
                                 o->dry_run ? "the config, tokenizer and index" : "the checkpoint", err);

    if (rc == MP_OK)
        rc = interrupted(o, out_dir, err);
    if (rc == MP_OK) {
        char *config = mp_synth_config_json(&p.m);
        rc = config ? write_text(out_dir, "config.json", config, err)
                    : mp_fail(err, MP_ERR_INPUT, out_dir, NULL, "out of memory");
        free(config);
    }
    if (rc == MP_OK)
        rc = interrupted(o, out_dir, err);
    if (rc == MP_OK)
        rc = mp_synth_write_tokenizer(&p.m, out_dir, err);
    if (rc == MP_OK)
        rc = interrupted(o, out_dir, err);

    uint64_t file_bytes = 0;
    if (rc == MP_OK && !o->dry_run)
        rc = write_shards(&p, order, first, data_bytes, o, out_dir, &file_bytes, err);
    if (rc == MP_OK)
        rc = interrupted(o, out_dir, err);
    if (rc == MP_OK)
        rc = write_index(&p, order, data_bytes, out_dir, err);

    if (rc == MP_OK) {
        result->layers = p.m.layers;
        result->dense = p.m.dense;
        result->vocab = p.m.vocab;
        result->fp8 = p.m.fp8;
        result->mtp = p.m.mtp;
        result->tensors = p.n;
        result->shards = p.nshards;
        result->data_bytes = data_bytes;
        result->file_bytes = file_bytes;
        result->disk_bytes = disk_bytes_needed(&p, data_bytes, false);
    } else if (outputs) {
        result->removed_files = remove_written(outputs, n_outputs);
    }
    for (size_t i = 0; outputs && i < n_outputs; i++)
        free(outputs[i].path);
    free(outputs);
    free(order);
    free(first);
    free(p.t);
    return rc;
}
