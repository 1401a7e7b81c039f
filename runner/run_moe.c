/* Routed experts: tokens grouped by expert, so every active expert runs one
 * GEMM per matrix for the whole batch.
 *
 * Work is cut the way docs/LAYOUTS.md cuts an expert into NUMA slices (256
 * rows of the intermediate dimension): a gate/up work item is one (expert,
 * slice) — it computes that slice of silu(gate x) * up x and, for int8
 * experts, quantizes it per token as the down matrix's K-group of the same
 * slice; a down work item is one (expert, block of hidden rows) over all
 * slices. A later NUMA split keeps the items of the slices a node owns (and
 * views only those K-groups of down, mp_amx_int8_view_groups) and sums the
 * nodes' partial outputs; nothing else changes.
 *
 * Per token the weighted expert outputs are summed in ascending expert
 * order, as the reference's loop over experts adds them: the result does not
 * depend on the thread count. */
#include <omp.h>
#include <string.h>

#include "mp_forward.h"
#include "run_internal.h"

/* The first routed expert's matrices: every other has the same layout (checked at load). */
static const mp_layer *first_moe_layer(const mp_model *m)
{
    for (uint32_t L = 0; L < m->d->num_hidden_layers; L++)
        if (m->layers[L].moe)
            return &m->layers[L];
    return NULL;
}

int mp_moe_ws_init(mp_moe_ws *w, const mp_model *m, uint32_t max_batch, mp_error *err)
{
    memset(w, 0, sizeof *w);
    const mp_layer *ly = first_moe_layer(m);
    if (!ly)
        return MP_OK;
    const mp_model_desc *d = m->d;
    size_t E = d->n_routed_experts, slots = (size_t)max_batch * m->top_k, H = d->hidden_size;
    size_t I = d->moe_intermediate_size;
    w->max_batch = max_batch;
    w->top_k = m->top_k;
    w->count = mp_run_calloc64(E, sizeof *w->count);
    w->start = mp_run_calloc64(E, sizeof *w->start);
    w->active = mp_run_calloc64(E, sizeof *w->active);
    w->slot_token = mp_run_calloc64(slots, sizeof *w->slot_token);
    w->slot_weight = mp_run_calloc64(slots, sizeof *w->slot_weight);
    w->token_slot = mp_run_calloc64(slots, sizeof *w->token_slot);
    w->g = mp_run_calloc64(slots * I, sizeof *w->g);
    w->u = mp_run_calloc64(slots * I, sizeof *w->u);
    w->y = mp_run_calloc64(slots * H, sizeof *w->y);
    bool ok = w->count && w->start && w->active && w->slot_token && w->slot_weight && w->token_slot && w->g && w->u &&
              w->y;
    if (m->experts_q8) {
        const mp_amx_int8_layout *in = &ly->exp_gate[0].q8.lay, *dn = &ly->exp_down[0].q8.lay;
        w->kp_in = in->kp;
        w->groups_in = in->groups;
        w->kp_down = dn->kp;
        w->xq = mp_run_calloc64((size_t)max_batch, w->kp_in);
        w->xs = mp_run_calloc64((size_t)max_batch * w->groups_in, sizeof *w->xs);
        w->xq_slot = mp_run_calloc64(slots, w->kp_in);
        w->xs_slot = mp_run_calloc64(slots * w->groups_in, sizeof *w->xs_slot);
        w->hq = mp_run_calloc64(slots, w->kp_down);
        w->hs = mp_run_calloc64(slots * m->slices, sizeof *w->hs);
        ok = ok && w->xq && w->xs && w->xq_slot && w->xs_slot && w->hq && w->hs;
    } else {
        w->x_slot = mp_run_calloc64(slots * H, sizeof *w->x_slot);
        ok = ok && w->x_slot;
    }
    if (!ok) {
        mp_moe_ws_free(w);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory for the expert scratch (%u tokens per batch)",
                       max_batch);
    }
    return MP_OK;
}

void mp_moe_ws_free(mp_moe_ws *w)
{
    free(w->count);
    free(w->start);
    free(w->active);
    free(w->slot_token);
    free(w->slot_weight);
    free(w->token_slot);
    free(w->xq);
    free(w->xs);
    free(w->xq_slot);
    free(w->xs_slot);
    free(w->x_slot);
    free(w->g);
    free(w->u);
    free(w->hq);
    free(w->hs);
    free(w->y);
    memset(w, 0, sizeof *w);
}

/* Slots grouped by expert (experts ascending, tokens ascending within one). */
static void group_by_expert(const mp_model *m, mp_moe_ws *w, size_t M, const uint32_t *ids, const float *weights)
{
    const uint32_t E = m->d->n_routed_experts, k = m->top_k;
    memset(w->count, 0, E * sizeof *w->count);
    for (size_t i = 0; i < M * k; i++)
        w->count[ids[i]]++;
    uint32_t at = 0;
    w->n_active = 0;
    for (uint32_t e = 0; e < E; e++) {
        w->start[e] = at;
        at += w->count[e];
        if (w->count[e])
            w->active[w->n_active++] = e;
    }
    for (size_t t = 0; t < M; t++)
        for (uint32_t j = 0; j < k; j++) {
            uint32_t e = ids[t * k + j], slot = w->start[e]++;
            w->slot_token[slot] = (uint32_t)t;
            w->slot_weight[slot] = weights[t * k + j];
            w->token_slot[t * k + j] = slot;
        }
    for (uint32_t e = 0; e < E; e++)
        w->start[e] -= w->count[e];
}


void mp_fwd_routed_experts(const mp_model *m, mp_moe_ws *w, uint32_t layer, size_t M, const float *xn,
                           const uint32_t *ids, const float *weights, float *out, bool accumulate)
{
    const mp_model_desc *d = m->d;
    const mp_layer *ly = &m->layers[layer];
    const mp_cpu_kernels *K = m->kern;
    const uint32_t H = d->hidden_size, I = d->moe_intermediate_size, k = m->top_k;
    const uint32_t SW = m->slice_width, S = m->slices;
    const bool q8 = m->experts_q8;
    group_by_expert(m, w, M, ids, weights);
    const size_t nslots = M * k;

    /* inputs per slot: int8 rows quantized once per token, or f32 rows */
    if (q8) {
        const uint32_t kg = ly->exp_gate[0].q8.lay.kg;
        int nt = mp_threads_for(m, (uint64_t)M * H * 4, M);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (size_t t = 0; t < M; t++)
            K->quantize_act_q8(1, xn + t * H, H, H, kg, w->xq + t * w->kp_in, w->kp_in, w->xs + t * w->groups_in);
        for (size_t s = 0; s < nslots; s++) {
            uint32_t t = w->slot_token[s];
            memcpy(w->xq_slot + s * w->kp_in, w->xq + (size_t)t * w->kp_in, w->kp_in);
            memcpy(w->xs_slot + s * w->groups_in, w->xs + (size_t)t * w->groups_in, w->groups_in * sizeof(float));
        }
    } else {
        for (size_t s = 0; s < nslots; s++)
            memcpy(w->x_slot + s * H, xn + (size_t)w->slot_token[s] * H, H * sizeof(float));
    }

    /* gate/up: one item per (expert, slice) */
    const size_t items_gu = (size_t)w->n_active * S;
    /* multiply-adds of the whole layer's experts: slots x (2 I H + H I) */
    const uint64_t work = (uint64_t)nslots * 3 * I * H;
    int nt_gu = mp_threads_for(m, work, items_gu);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_gu) if (nt_gu > 1)
    for (size_t it = 0; it < items_gu; it++) {
        uint32_t e = w->active[it / S], s = (uint32_t)(it % S);
        uint32_t r0 = s * SW, r1 = r0 + SW < I ? r0 + SW : I;
        size_t first = w->start[e], rows = w->count[e];
        float *g = w->g + first * I, *u = w->u + first * I;
        if (q8) {
            const int8_t *xq = w->xq_slot + first * w->kp_in;
            const float *xs = w->xs_slot + first * w->groups_in;
            K->gemm_q8(&ly->exp_gate[e].q8, rows, xq, w->kp_in, xs, r0, r1, g, I, false);
            K->gemm_q8(&ly->exp_up[e].q8, rows, xq, w->kp_in, xs, r0, r1, u, I, false);
        } else {
            const float *x = w->x_slot + first * H;
            K->gemm_bf16_amx(&ly->exp_gate[e].amx_bf16, rows, x, H, r0, r1, g, I, false);
            K->gemm_bf16_amx(&ly->exp_up[e].amx_bf16, rows, x, H, r0, r1, u, I, false);
        }
        for (size_t r = 0; r < rows; r++) {
            float *gr = g + r * I + r0;
            K->silu_mul(r1 - r0, gr, u + r * I + r0, gr);
            if (q8) /* this slice is exactly K-group s of down */
                K->quantize_act_q8(1, gr, I, r1 - r0, SW, w->hq + (first + r) * w->kp_down + r0, w->kp_down,
                                   w->hs + (first + r) * S + s);
        }
    }

    /* down: one item per (expert, block of hidden rows), all slices */
    const uint32_t hblock = H > 256 ? 256 : H;
    const uint32_t hblocks = (H + hblock - 1) / hblock;
    const size_t items_dn = (size_t)w->n_active * hblocks;
    int nt_dn = mp_threads_for(m, work, items_dn);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_dn) if (nt_dn > 1)
    for (size_t it = 0; it < items_dn; it++) {
        uint32_t e = w->active[it / hblocks], b = (uint32_t)(it % hblocks);
        uint32_t n0 = b * hblock, n1 = n0 + hblock < H ? n0 + hblock : H;
        size_t first = w->start[e], rows = w->count[e];
        float *y = w->y + first * H;
        if (q8)
            K->gemm_q8(&ly->exp_down[e].q8, rows, w->hq + first * w->kp_down, w->kp_down, w->hs + first * S, n0, n1,
                       y, H, false);
        else
            K->gemm_bf16_amx(&ly->exp_down[e].amx_bf16, rows, w->g + first * I, I, n0, n1, y, H, false);
    }

    /* per token: the weighted sum in ascending expert order (= ascending slot) */
    int nt = mp_threads_for(m, (uint64_t)M * k * H * 4, M);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t t = 0; t < M; t++) {
        uint32_t order[64];
        const uint32_t *sl = w->token_slot + t * k;
        float *o = out + t * H;
        if (!accumulate)
            memset(o, 0, H * sizeof *o);
        if (k <= 64) {
            for (uint32_t j = 0; j < k; j++) {
                uint32_t v = sl[j], i = j;
                for (; i > 0 && order[i - 1] > v; i--)
                    order[i] = order[i - 1];
                order[i] = v;
            }
            for (uint32_t j = 0; j < k; j++)
                K->axpy(H, w->slot_weight[order[j]], w->y + (size_t)order[j] * H, o);
        } else { /* an absurd top-k: no sort, any order is still the same math */
            for (uint32_t j = 0; j < k; j++)
                K->axpy(H, w->slot_weight[sl[j]], w->y + (size_t)sl[j] * H, o);
        }
    }
}
