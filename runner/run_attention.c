/* Multi-head latent attention (MLA) in absorbed form.
 *
 * The reference expands the cached latent c_kv into per-head keys and values
 * (k_nope = W_UK c, v = W_UV c). Here the per-head matrices are applied to the
 * query and the output instead: q_nope . (W_UK c) = (W_UK^T q_nope) . c and
 * sum_t p_t W_UV c_t = W_UV sum_t p_t c_t, so the cache holds only the
 * kv_lora_rank + qk_rope_head_dim values of each token and every head
 * attends over the same rows.
 *
 * Rotary embedding: the reference (rope_interleave) de-interleaves the rope
 * dims, x' = [x0, x2, ..., x1, x3, ...], then rotates halves; that is the
 * rotation of each adjacent pair (x_2i, x_2i+1) by pos * inv_freq[i], with
 * the pairs stored in a permuted order. Queries and keys get the same
 * permutation, which a dot product does not see, so the cache keeps the
 * rotated pairs in their stored order. cos and sin are multiplied by
 * rope_attn_factor as the reference multiplies both. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "mp_forward.h"

/* out[2i], out[2i+1] = the pair rotated by the angle whose cos/sin are cs[2i], cs[2i+1]. */
static void rope_rotate(uint32_t pairs, const float *in, const float *cs, float *out)
{
    for (uint32_t i = 0; i < pairs; i++) {
        float a = in[2 * i], b = in[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
        out[2 * i] = a * c - b * s;
        out[2 * i + 1] = b * c + a * s;
    }
}

void mp_fwd_attention(const mp_model *m, mp_workspace *ws, mp_kv_cache *kv, uint32_t layer, uint32_t pos0, size_t M,
                      const float *x, float *out)
{
    const mp_model_desc *d = m->d;
    const mp_layer *ly = &m->layers[layer];
    const mp_cpu_kernels *K = m->kern;
    const uint32_t H = d->hidden_size, nh = d->num_attention_heads, nope = d->qk_nope_head_dim;
    const uint32_t qk = mp_qk_head_dim(d), kvl = d->kv_lora_rank, vd = d->v_head_dim, pairs = m->rope_pairs;
    const uint32_t row = kvl + d->qk_rope_head_dim;
    const size_t ldq = (size_t)nh * qk;

    /* projections: q (through the low-rank pair when there is one) and the latent kv */
    mp_rmsnorm_rows(m, M, x, H, ly->attn_norm, H, ws->xn, H);
    if (ly->q_a_norm) {
        uint32_t r = d->q_lora_rank;
        mp_linear_par(m, &ly->q_a, M, ws->xn, H, ws->qa, r, false);
        mp_rmsnorm_rows(m, M, ws->qa, r, ly->q_a_norm, r, ws->qa, r);
        mp_linear_par(m, &ly->q_b, M, ws->qa, r, ws->q, ldq, false);
    } else {
        mp_linear_par(m, &ly->q_proj, M, ws->xn, H, ws->q, ldq, false);
    }
    mp_linear_par(m, &ly->kv_a, M, ws->xn, H, ws->kv, row, false);

    /* cos/sin of the batch's positions, in f32 as the reference computes them */
    for (size_t i = 0; i < M; i++) {
        float p = (float)(pos0 + i);
        float *cs = ws->rope_cs + i * 2 * pairs;
        for (uint32_t j = 0; j < pairs; j++) {
            float ang = p * m->rope_inv_freq[j];
            cs[2 * j] = cosf(ang) * m->rope_attn_factor;
            cs[2 * j + 1] = sinf(ang) * m->rope_attn_factor;
        }
    }

    /* the cache rows of the new tokens: normalized c_kv, rotated k_pe */
    for (size_t i = 0; i < M; i++) {
        float *crow = mp_kv_row(kv, layer, pos0 + (uint32_t)i);
        const float *src = ws->kv + i * row;
        K->rmsnorm(kvl, src, ly->kv_a_norm, d->rms_norm_eps, crow);
        rope_rotate(pairs, src + kvl, ws->rope_cs + i * 2 * pairs, crow + kvl);
    }

    /* per head: q_lat = W_UK[h]^T q_nope, and the rotated q_pe, side by side
     * so one dot product against a cache row gives the whole score */
    const size_t ldc = (size_t)nh * row;
    int nt_heads = mp_threads_for(m, (uint64_t)M * nh * kvl * nope, nh);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_heads) if (nt_heads > 1)
    for (uint32_t h = 0; h < nh; h++) {
        K->gemm_bf16_rm(ly->w_uk + (size_t)h * kvl * nope, nope, nope, M, ws->q + (size_t)h * qk, ldq, 0, kvl,
                        ws->qcat + (size_t)h * row, ldc, false);
        for (size_t i = 0; i < M; i++)
            rope_rotate(pairs, ws->q + i * ldq + (size_t)h * qk + nope, ws->rope_cs + i * 2 * pairs,
                        ws->qcat + i * ldc + (size_t)h * row + kvl);
    }

    /* scores, causal softmax and the latent output. A work item is one query
     * and a group of up to MP_ATTN_HEAD_GROUP heads: the group's queries are the
     * rows of one GEMM against the cache rows, so each cache row is read once
     * per group, not once per head; groups are made smaller when there are
     * too few queries to keep every thread busy. */
    const float *cache = mp_kv_row(kv, layer, 0);
    uint32_t G = MP_ATTN_HEAD_GROUP;
    if ((uint64_t)M * ((nh + G - 1) / G) < (uint64_t)m->threads) {
        uint64_t g = ((uint64_t)nh * M + (uint64_t)m->threads - 1) / (uint64_t)m->threads;
        G = g < 1 ? 1 : g > MP_ATTN_HEAD_GROUP ? MP_ATTN_HEAD_GROUP : (uint32_t)g;
    }
    if (G > nh)
        G = nh;
    const uint32_t groups = (nh + G - 1) / G;
    const size_t items = M * groups;
    const float scale = m->softmax_scale;
    int nt_items = mp_threads_for(m, (uint64_t)M * nh * (pos0 + M) * (row + kvl), items);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_items) if (nt_items > 1)
    for (size_t it = 0; it < items; it++) {
        size_t i = it / groups;
        uint32_t h0 = (uint32_t)(it % groups) * G, h1 = h0 + G < nh ? h0 + G : nh;
        uint32_t len = pos0 + (uint32_t)i + 1; /* causal: keys 0 .. pos */
        float *sc = ws->scores + (size_t)omp_get_thread_num() * MP_ATTN_HEAD_GROUP * ws->ctx;
        K->gemm_f32(cache, row, row, h1 - h0, ws->qcat + i * ldc + (size_t)h0 * row, row, 0, len, sc, len, false);
        for (uint32_t h = h0; h < h1; h++) {
            float *s = sc + (size_t)(h - h0) * len;
            for (uint32_t t = 0; t < len; t++)
                s[t] *= scale;
            K->softmax(len, s);
            memset(ws->olat + (i * nh + h) * kvl, 0, kvl * sizeof(float));
        }
        for (uint32_t t = 0; t < len; t++) {
            const float *c = cache + (size_t)t * row;
            for (uint32_t h = h0; h < h1; h++)
                K->axpy(kvl, sc[(size_t)(h - h0) * len + t], c, ws->olat + (i * nh + h) * kvl);
        }
    }

    /* per head: out_h = W_UV[h] o_lat, then the output projection */
    const size_t ldo = (size_t)nh * kvl, lda = (size_t)nh * vd;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_heads) if (nt_heads > 1)
    for (uint32_t h = 0; h < nh; h++)
        K->gemm_bf16_rm(ly->w_uv + (size_t)h * vd * kvl, kvl, kvl, M, ws->olat + (size_t)h * kvl, ldo, 0, vd,
                        ws->attn + (size_t)h * vd, lda, false);
    mp_linear_par(m, &ly->attn_out, M, ws->attn, lda, out, H, false);
}
