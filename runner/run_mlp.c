/* Dense MLP (the first_k_dense_replace layers) and the shared experts: the
 * same SwiGLU, down(silu(gate x) * up x), with weights read in place from the
 * GPU section (bf16 row-major or int4). Also the layer step and the
 * embedding lookup. */
#include <omp.h>
#include <string.h>

#include "mp_forward.h"
#include "mp_num.h"

static void swiglu(const mp_model *m, mp_workspace *ws, const mp_linear *gate, const mp_linear *up,
                   const mp_linear *down, size_t M, const float *xn, float *out, bool accumulate)
{
    const uint32_t H = m->d->hidden_size, I = gate->n;
    mp_linear_par(m, gate, M, xn, H, ws->mlp_g, I, false);
    mp_linear_par(m, up, M, xn, H, ws->mlp_u, I, false);
    int nt = mp_threads_for(m, (uint64_t)M * I * 16, M);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t r = 0; r < M; r++)
        m->kern->silu_mul(I, ws->mlp_g + r * I, ws->mlp_u + r * I, ws->mlp_g + r * I);
    mp_linear_par(m, down, M, ws->mlp_g, I, out, H, accumulate);
}

void mp_fwd_dense_mlp(const mp_model *m, mp_workspace *ws, uint32_t layer, size_t M, const float *xn, float *out)
{
    const mp_layer *ly = &m->layers[layer];
    swiglu(m, ws, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down, M, xn, out, false);
}

void mp_fwd_shared_expert(const mp_model *m, mp_workspace *ws, uint32_t layer, size_t M, const float *xn, float *out,
                          bool accumulate)
{
    const mp_layer *ly = &m->layers[layer];
    if (!m->d->n_shared_experts) {
        if (!accumulate)
            memset(out, 0, M * m->d->hidden_size * sizeof *out);
        return;
    }
    swiglu(m, ws, &ly->sh_gate, &ly->sh_up, &ly->sh_down, M, xn, out, accumulate);
}

void mp_fwd_layer(const mp_model *m, mp_workspace *ws, mp_kv_cache *kv, uint32_t layer, uint32_t pos0, size_t M,
                  float *x)
{
    const mp_layer *ly = &m->layers[layer];
    const uint32_t H = m->d->hidden_size;
    const size_t n = M * H;
    mp_layer_stats *st = ws->stats;
    /* t[0] start, then the end of each timed part */
    double t[5] = {0};
    if (st)
        t[0] = mp_fwd_clock();
    mp_fwd_attention(m, ws, kv, layer, pos0, M, x, ws->blk);
    if (st)
        t[1] = mp_fwd_clock();
    for (size_t i = 0; i < n; i++)
        x[i] += ws->blk[i];
    mp_rmsnorm_rows(m, M, x, H, ly->ffn_norm, H, ws->xn, H);
    if (ly->moe) {
        /* routed first, then the shared expert added, as the reference sums them */
        if (st)
            t[2] = mp_fwd_clock();
        mp_fwd_router(m, layer, M, ws->xn, ws->router_logits, ws->topk_ids, ws->topk_w);
        if (st)
            t[3] = mp_fwd_clock();
        mp_fwd_routed_experts(m, &ws->moe, layer, M, ws->xn, ws->topk_ids, ws->topk_w, ws->blk, false);
        if (st)
            t[4] = mp_fwd_clock();
        mp_fwd_shared_expert(m, ws, layer, M, ws->xn, ws->blk, true);
        if (st) {
            double end = mp_fwd_clock();
            st->part[MP_PART_ROUTER] += t[3] - t[2];
            st->part[MP_PART_ROUTED_EXPERTS] += t[4] - t[3];
            st->part[MP_PART_SHARED_EXPERT] += end - t[4];
            st->experts_run += ws->moe.n_active;
        }
    } else {
        if (st)
            t[2] = mp_fwd_clock();
        mp_fwd_dense_mlp(m, ws, layer, M, ws->xn, ws->blk);
        if (st)
            st->part[MP_PART_DENSE_MLP] += mp_fwd_clock() - t[2];
    }
    for (size_t i = 0; i < n; i++)
        x[i] += ws->blk[i];
    if (st) {
        st->part[MP_PART_ATTENTION] += t[1] - t[0];
        st->wall_seconds += mp_fwd_clock() - t[0];
    }
}

void mp_fwd_embed(const mp_model *m, const int32_t *ids, size_t M, float *x)
{
    const uint32_t H = m->d->hidden_size;
    for (size_t i = 0; i < M; i++) {
        const uint16_t *row = m->embed + (size_t)ids[i] * H;
        float *o = x + i * H;
        for (uint32_t j = 0; j < H; j++)
            o[j] = mp_bf16_to_f32(row[j]);
    }
}
