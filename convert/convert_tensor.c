/* convert_tensor: one container tensor from its source rows: read (f32),
 * check (NaN/Inf, all-zero rows), quantize, pack into its layout, hash, write
 * at its planned offset. Memory: one row chunk plus the packed tensor. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "convert_internal.h"
#include "mp_layout.h"
#include "mp_num.h"

#define CHUNK_BYTES (32u << 20) /* f32 rows read per step of a row-chunked tensor */

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

/* Makes the worker's scratch buffers hold at least these byte counts (0: a
 * buffer the caller does not use, left as it is); out of memory is an error
 * naming tensor t. */
static int reserve(struct scratch *sc, const mp_ctensor *t, size_t f_bytes, size_t b_bytes, size_t q_bytes,
                   size_t s_bytes, mp_error *err)
{
    if (f_bytes)
        sc->f = grow(sc->f, &sc->f_cap, f_bytes);
    if (b_bytes)
        sc->b = grow(sc->b, &sc->b_cap, b_bytes);
    if (q_bytes)
        sc->q = grow(sc->q, &sc->q_cap, q_bytes);
    if (s_bytes)
        sc->s = grow(sc->s, &sc->s_cap, s_bytes);
    if ((f_bytes && !sc->f) || (b_bytes && !sc->b) || (q_bytes && !sc->q) || (s_bytes && !sc->s))
        return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "out of memory");
    return MP_OK;
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

/* Adds one weight and the value the container stores for it to the job's
 * quantization-error sums. */
static inline void count_error(job *j, double w, double stored)
{
    double e = w - stored;
    j->sum_w2 += w * w;
    j->sum_e2 += e * e;
}

/* x rounded to bf16, its rounding error counted. */
static inline uint16_t bf16_counted(job *j, float x)
{
    uint16_t h = mp_f32_to_bf16(x);
    count_error(j, x, mp_bf16_to_f32(h));
    return h;
}

/* The packed data and, after it in the same buffer at scale_offset, the
 * scales (and whatever follows them): the tensor's two planned ranges. */
static int write_data_and_scales(writer *w, const uint8_t *packed, uint64_t data_bytes, uint64_t scale_offset,
                                 mp_error *err)
{
    int rc = write_at(w, packed, data_bytes, w->t->data_offset, err);
    if (rc)
        return rc;
    return write_at(w, packed + scale_offset, w->t->scale_size, w->t->scale_offset, err);
}

static int run_rowmajor(ctx *c, job *j, struct scratch *sc, writer *w, mp_error *err)
{
    const mp_ctensor *t = w->t;
    const mp_src_tensor *src = j->src;
    bool f32 = t->quant == MP_QUANT_F32;
    uint64_t cols = src->cols, step = chunk_rows(cols, 1);
    size_t elem = f32 ? 4 : 2;
    int rc = reserve(sc, t, step * cols * sizeof(float), step * cols * elem, 0, 0, err);
    if (rc)
        return rc;
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        if ((rc = read_checked(c, j, src, r0, n, sc->f, err)))
            return rc;
        if (f32) {
            for (uint64_t i = 0; i < n * cols; i++)
                j->sum_w2 += (double)sc->f[i] * sc->f[i];
            memcpy(sc->b, sc->f, n * cols * 4);
        } else {
            uint16_t *o = (uint16_t *)sc->b;
            for (uint64_t i = 0; i < n * cols; i++)
                o[i] = bf16_counted(j, sc->f[i]);
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
    if ((rc = reserve(sc, t, step * cols * sizeof(float), lay.total_bytes, step * cols,
                      step * groups * 2 * sizeof(uint16_t), err)))
        return rc;
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
                count_error(j, row[k], mp_int4_dequant(scheme, q[k], sf, mf));
            }
        }
        if ((rc = mp_gpu_int4_pack_rows(&lay, (uint32_t)r0, (uint32_t)(r0 + n), sc->q, cols, scale,
                                        scheme == MP_INT4_ASYM ? min : NULL, sc->b, lay.total_bytes, err)))
            return mp_error_prefix(err, t->name);
    }
    return write_data_and_scales(w, sc->b, lay.data_bytes, lay.scale_offset, err);
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
    if ((rc = reserve(sc, t, step * cols * sizeof(float), lay.total_bytes, step * cols, step * groups * sizeof(float),
                      err)))
        return rc;
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
            for (uint64_t k = 0; k < cols; k++)
                count_error(j, row[k], (double)q[k] * s[k / lay.kg]);
        }
        if ((rc = mp_amx_int8_pack_rows(&lay, (uint32_t)r0, (uint32_t)(r0 + n), (const int8_t *)sc->q, cols, sc->s,
                                        sc->b, lay.total_bytes, err)))
            return mp_error_prefix(err, t->name);
    }
    return write_data_and_scales(w, sc->b, lay.data_bytes, lay.scale_offset, err);
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
    if ((rc = reserve(sc, t, step * cols * sizeof(float), lay.total_bytes, step * cols * 2, 0, err)))
        return rc;
    memset(sc->b, 0, lay.total_bytes);
    uint16_t *h = (uint16_t *)sc->q;
    for (uint64_t r0 = 0; r0 < src->rows; r0 += step) {
        uint64_t n = src->rows - r0 < step ? src->rows - r0 : step;
        if ((rc = read_checked(c, j, src, r0, n, sc->f, err)))
            return rc;
        for (uint64_t i = 0; i < n * cols; i++)
            h[i] = bf16_counted(j, sc->f[i]);
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
    int rc = reserve(sc, t, n * sizeof(float), t->data_size, 0, 0, err);
    if (rc || (rc = read_checked(c, j, src, 0, src->rows, sc->f, err)))
        return rc;
    uint16_t *o = (uint16_t *)sc->b;
    const float *f = sc->f;
    bool from_kvb = src->id.role == MP_ROLE_KV_B;
    uint64_t i = 0;
    if (j->kind == JOB_W_UK) {
        for (uint64_t h = 0; h < nh; h++)
            for (uint64_t cc = 0; cc < lora; cc++)
                for (uint64_t dd = 0; dd < nope; dd++, i++)
                    o[i] = bf16_counted(j, from_kvb ? f[(h * (nope + vd) + dd) * lora + cc] : f[i]);
    } else {
        for (uint64_t h = 0; h < nh; h++)
            for (uint64_t jj = 0; jj < vd; jj++)
                for (uint64_t cc = 0; cc < lora; cc++, i++)
                    o[i] = bf16_counted(j, from_kvb ? f[(h * (nope + vd) + nope + jj) * lora + cc] : f[i]);
    }
    return write_at(w, sc->b, t->data_size, t->data_offset, err);
}

int mp_convert_run_job(ctx *c, job *j, struct scratch *sc, mp_error *err)
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

void mp_convert_scratch_free(struct scratch *sc)
{
    free(sc->f);
    free(sc->b);
    free(sc->q);
    free(sc->s);
}
