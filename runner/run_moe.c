/* Routed experts: tokens grouped by expert, so every active expert runs one
 * GEMM per matrix for the whole batch.
 *
 * Work is cut the way docs/LAYOUTS.md cuts an expert into NUMA slices (256
 * rows of the intermediate dimension): a gate/up work item is one (expert,
 * slice) — it computes that slice of silu(gate x) * up x and, for int8
 * experts, quantizes it per token as the down matrix's K-group of the same
 * slice; a down work item is one (expert, block of hidden rows) over all
 * slices. With a NUMA plan of several nodes (runner/mp_numa.h) node j's
 * items are those of its slices, taken from node j's queue by node j's
 * threads first (then by any thread that ran out of its own work); its down
 * items view only its K-groups of down (mp_amx_int8_view_groups) and write a
 * partial output; the partials are summed in node order. Each partial is
 * computed whole by one item, so the result does not depend on which thread
 * ran it; with one node the arithmetic is the single-node one.
 *
 * Per token the weighted expert outputs are summed in ascending expert
 * order, as the reference's loop over experts adds them: the result does not
 * depend on the thread count. */
#include <omp.h>
#include <string.h>

#include "mp_forward.h"
#include "mp_numa.h"
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
    const uint32_t nodes = m->numa ? m->numa->nodes : 1;
    w->next = mp_run_calloc64(nodes, sizeof *w->next);
    if (nodes > 1)
        w->y_part = mp_run_calloc64((nodes - 1) * slots * H, sizeof *w->y_part);
    bool ok = w->count && w->start && w->active && w->slot_token && w->slot_weight && w->token_slot && w->g && w->u &&
              w->y && w->next && (nodes == 1 || w->y_part);
    if (m->experts_q8) {
        const mp_amx_int8_layout *in = &ly->exp_gate[0].q8.lay, *dn = &ly->exp_down[0].q8.lay;
        /* rows one cache line longer than the padded K: with a stride that is a
         * multiple of 1 KiB (H = 7168, I = 2048) the 16 rows of an AMX tile
         * fall into a few L1 sets (mp_kernels.h) */
        w->ld_in = in->kp + 64;
        w->groups_in = in->groups;
        w->ld_down = dn->kp + 64;
        w->xq = mp_run_calloc64((size_t)max_batch, w->ld_in);
        w->xs = mp_run_calloc64((size_t)max_batch * w->groups_in, sizeof *w->xs);
        w->xq_slot = mp_run_calloc64(slots, w->ld_in);
        w->xs_slot = mp_run_calloc64(slots * w->groups_in, sizeof *w->xs_slot);
        w->hq = mp_run_calloc64(slots, w->ld_down);
        w->hs = mp_run_calloc64(slots * m->slices, sizeof *w->hs);
        ok = ok && w->xq && w->xs && w->xq_slot && w->xs_slot && w->hq && w->hs;
    } else {
        /* a slot row holds an f32 input row or the same row split in two
         * bf16 for the AMX kernel: 4 bytes a value either way */
        w->ld_x = H;
        if (m->kern->gemm_bf16_split) {
            const mp_amx_bf16_layout *in = &ly->exp_gate[0].amx_bf16.lay, *dn = &ly->exp_down[0].amx_bf16.lay;
            w->kp_xb = in->kp;
            /* mp_bf16_split_ld: 64-byte rows whose stride is no multiple of 1 KiB */
            w->ld_xb = mp_bf16_split_ld(in->kp);
            w->ld_x = w->ld_xb / 2;
            w->kp_hb = dn->kp;
            w->ld_hb = mp_bf16_split_ld(dn->kp);
            w->lo_xb = m->bf16_activations ? 0 : w->kp_xb;
            w->lo_hb = m->bf16_activations ? 0 : w->kp_hb;
            w->hb = mp_run_calloc64(slots, w->ld_hb * sizeof *w->hb);
            ok = ok && w->hb;
        }
        w->x_slot = mp_run_calloc64(slots * w->ld_x, sizeof *w->x_slot);
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
    free(w->hb);
    free(w->y);
    free(w->y_part);
    free(w->next);
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


/* What the work items of one call share. */
typedef struct expert_job {
    const mp_model *m;
    mp_moe_ws *w;
    const mp_layer *ly;
    size_t nslots;
    uint32_t hblock, hblocks;
} expert_job;

/* Whether bf16 expert e runs on split rows (the AMX BF16 kernel): with
 * enough rows to fill tiles. */
static inline bool bf16_split(const mp_model *m, const mp_moe_ws *w, uint32_t e)
{
    return !m->experts_q8 && m->kern->gemm_bf16_split && w->count[e] >= m->kern->bf16_split_min_m;
}

/* silu(gate x) * up x of slice s of expert e for its tokens; int8 experts
 * also quantize it as down's K-group s. s0/s1: the slices of the node that
 * owns s (their scales sit together: [slots][s1 - s0] at nslots * s0). */
static void gate_up_item(const expert_job *j, uint32_t e, uint32_t s, uint32_t s0, uint32_t s1)
{
    const mp_model *m = j->m;
    mp_moe_ws *w = j->w;
    const mp_cpu_kernels *K = m->kern;
    const uint32_t I = m->d->moe_intermediate_size, SW = m->slice_width;
    uint32_t r0 = s * SW, r1 = r0 + SW < I ? r0 + SW : I;
    size_t first = w->start[e], rows = w->count[e];
    float *g = w->g + first * I, *u = w->u + first * I;
    const bool split = bf16_split(m, w, e);
    if (m->experts_q8) {
        const int8_t *xq = w->xq_slot + first * w->ld_in;
        const float *xs = w->xs_slot + first * w->groups_in;
        K->gemm_q8(&j->ly->exp_gate[e].q8, rows, xq, w->ld_in, xs, r0, r1, g, I, false);
        K->gemm_q8(&j->ly->exp_up[e].q8, rows, xq, w->ld_in, xs, r0, r1, u, I, false);
    } else if (split) {
        const uint16_t *xb = (const uint16_t *)(const void *)(w->x_slot + first * w->ld_x);
        K->gemm_bf16_split(&j->ly->exp_gate[e].amx_bf16, rows, xb, w->ld_xb, w->lo_xb, r0, r1, g, I, false);
        K->gemm_bf16_split(&j->ly->exp_up[e].amx_bf16, rows, xb, w->ld_xb, w->lo_xb, r0, r1, u, I, false);
    } else {
        const float *x = w->x_slot + first * w->ld_x;
        K->gemm_bf16_amx(&j->ly->exp_gate[e].amx_bf16, rows, x, w->ld_x, r0, r1, g, I, false);
        K->gemm_bf16_amx(&j->ly->exp_up[e].amx_bf16, rows, x, w->ld_x, r0, r1, u, I, false);
    }
    const uint32_t ns = s1 - s0;
    float *hs = w->hs + j->nslots * s0;
    for (size_t r = 0; r < rows; r++) {
        float *gr = g + r * I + r0;
        K->silu_mul(r1 - r0, gr, u + r * I + r0, gr);
        if (m->experts_q8) /* this slice is exactly K-group s of down */
            K->quantize_act_q8(1, gr, I, r1 - r0, SW, w->hq + (first + r) * w->ld_down + r0, w->ld_down,
                               hs + (first + r) * ns + (s - s0));
        else if (split) /* the last slice also writes down's zero padding */
            K->split_act_bf16(1, gr, I, r1 - r0, r1 == I ? w->kp_hb - r0 : r1 - r0,
                              w->hb + (first + r) * w->ld_hb + r0, w->ld_hb, w->lo_hb);
    }
}

/* K-groups [g0, g1) of a bf16 down matrix as a matrix of its own. */
static void bf16_view_groups(const mp_amx_bf16_view *full, uint32_t g0, uint32_t g1, mp_amx_bf16_view *out)
{
    const mp_amx_bf16_layout *l = &full->lay;
    uint64_t k0 = (uint64_t)g0 * l->kg, k1 = (uint64_t)g1 * l->kg < l->k ? (uint64_t)g1 * l->kg : l->k;
    mp_amx_bf16_layout sub;
    mp_error ignored;
    /* cannot fail: a sub-range of a valid layout */
    mp_amx_bf16_layout_init(l->n, k1 - k0, l->kg, &sub, &ignored);
    mp_amx_bf16_view_init(&sub, full->data + (uint64_t)g0 * l->np * l->kg, out);
}

/* Rows [b*hblock, ..) of down(h) for expert e over slices [s0, s1), into y ([slots][H]). */
static void down_item(const expert_job *j, uint32_t e, uint32_t b, uint32_t s0, uint32_t s1, float *y)
{
    const mp_model *m = j->m;
    mp_moe_ws *w = j->w;
    const mp_cpu_kernels *K = m->kern;
    const uint32_t H = m->d->hidden_size, I = m->d->moe_intermediate_size, SW = m->slice_width;
    uint32_t n0 = b * j->hblock, n1 = n0 + j->hblock < H ? n0 + j->hblock : H;
    size_t first = w->start[e], rows = w->count[e];
    const bool whole = s0 == 0 && s1 == m->slices;
    y += first * H;
    if (m->experts_q8) {
        mp_amx_int8_view sub;
        const mp_amx_int8_view *v = &j->ly->exp_down[e].q8;
        mp_error ignored;
        if (!whole && mp_amx_int8_view_groups(v, s0, s1, &sub, &ignored) == MP_OK)
            v = &sub;
        K->gemm_q8(v, rows, w->hq + first * w->ld_down + (size_t)s0 * SW, w->ld_down,
                   w->hs + j->nslots * s0 + first * (s1 - s0), n0, n1, y, H, false);
    } else {
        mp_amx_bf16_view sub;
        const mp_amx_bf16_view *v = &j->ly->exp_down[e].amx_bf16;
        if (!whole) {
            bf16_view_groups(v, s0, s1, &sub);
            v = &sub;
        }
        if (bf16_split(m, w, e))
            K->gemm_bf16_split(v, rows, w->hb + first * w->ld_hb + (size_t)s0 * SW, w->ld_hb, w->lo_hb, n0, n1, y,
                               H, false);
        else
            K->gemm_bf16_amx(v, rows, w->g + first * I + (size_t)s0 * SW, I, n0, n1, y, H, false);
    }
}

/* Where node j's partial down products go: y itself for the first node
 * that owns slices, else its own buffer. */
static float *node_y(const expert_job *j, uint32_t node, uint32_t first)
{
    const size_t H = j->m->d->hidden_size, slots = (size_t)j->w->max_batch * j->w->top_k;
    if (node == first)
        return j->w->y;
    return j->w->y_part + (size_t)(node < first ? node : node - 1) * slots * H;
}

/* Every node's gate/up (down = false) or down items, from per-node queues:
 * a thread takes items of the nodes its own node computes, then helps with
 * the rest. */
static void run_by_node(const expert_job *j, int nt, bool down)
{
    const mp_numa_plan *p = j->m->numa;
    mp_moe_ws *w = j->w;
    const uint32_t nodes = p->nodes;
    uint32_t first = 0;
    while (first < nodes && p->slice0[first] == p->slice1[first])
        first++;
    memset(w->next, 0, nodes * sizeof *w->next);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num();
        uint32_t mine = (uint32_t)t < p->threads ? p->thread_node[t] : 0;
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t step = 0; step < nodes; step++) {
                uint32_t node = (mine + step) % nodes;
                if ((p->exec_node[node] == mine) != (pass == 0))
                    continue;
                const uint32_t s0 = p->slice0[node], s1 = p->slice1[node], ns = s1 - s0;
                const size_t per = down ? j->hblocks : ns;
                const size_t items = (size_t)w->n_active * per;
                if (!ns)
                    continue;
                for (;;) {
                    size_t it = __atomic_fetch_add(&w->next[node], 1, __ATOMIC_RELAXED);
                    if (it >= items)
                        break;
                    uint32_t e = w->active[it / per], r = (uint32_t)(it % per);
                    if (down)
                        down_item(j, e, r, s0, s1, node_y(j, node, first));
                    else
                        gate_up_item(j, e, s0 + r, s0, s1);
                }
            }
    }
}

void mp_fwd_routed_experts(const mp_model *m, mp_moe_ws *w, uint32_t layer, size_t M, const float *xn,
                           const uint32_t *ids, const float *weights, float *out, bool accumulate)
{
    const mp_model_desc *d = m->d;
    const mp_layer *ly = &m->layers[layer];
    const mp_cpu_kernels *K = m->kern;
    const uint32_t H = d->hidden_size, I = d->moe_intermediate_size, k = m->top_k;
    const uint32_t S = m->slices;
    const bool q8 = m->experts_q8;
    group_by_expert(m, w, M, ids, weights);
    const size_t nslots = M * k;

    /* inputs per slot: int8 rows quantized once per token, or f32 rows */
    if (q8) {
        const uint32_t kg = ly->exp_gate[0].q8.lay.kg;
        int nt = mp_threads_for(m, (uint64_t)M * H * 4, M);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (size_t t = 0; t < M; t++)
            K->quantize_act_q8(1, xn + t * H, H, H, kg, w->xq + t * w->ld_in, w->ld_in, w->xs + t * w->groups_in);
        for (size_t s = 0; s < nslots; s++) {
            uint32_t t = w->slot_token[s];
            memcpy(w->xq_slot + s * w->ld_in, w->xq + (size_t)t * w->ld_in, w->ld_in);
            memcpy(w->xs_slot + s * w->groups_in, w->xs + (size_t)t * w->groups_in, w->groups_in * sizeof(float));
        }
    } else {
        /* each expert's rows: f32, or split in two bf16 once for every
         * slice and both matrices when its kernel is the AMX one */
        int nt = mp_threads_for(m, (uint64_t)nslots * H * 4, w->n_active);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
        for (size_t a = 0; a < w->n_active; a++) {
            const uint32_t e = w->active[a];
            const bool split = bf16_split(m, w, e);
            for (size_t s = w->start[e]; s < (size_t)w->start[e] + w->count[e]; s++) {
                const float *src = xn + (size_t)w->slot_token[s] * H;
                if (split)
                    K->split_act_bf16(1, src, H, H, w->kp_xb, (uint16_t *)(void *)(w->x_slot + s * w->ld_x),
                                      w->ld_xb, w->lo_xb);
                else
                    memcpy(w->x_slot + s * w->ld_x, src, H * sizeof(float));
            }
        }
    }

    /* gate/up: one item per (expert, slice); down: one per (expert, block of
     * hidden rows) over a node's slices */
    const uint64_t work = (uint64_t)nslots * 3 * I * H; /* multiply-adds of the layer's experts */
    const mp_numa_plan *np = m->numa;
    const uint32_t nodes = np && np->nodes > 1 ? np->nodes : 1;
    const uint32_t hblock = H > 256 ? 256 : H;
    const uint32_t hblocks = (H + hblock - 1) / hblock;
    expert_job job = {m, w, ly, nslots, hblock, 0};
    if (nodes == 1) {
        const uint32_t s0 = 0, s1 = S;
        const size_t items_gu = (size_t)w->n_active * S;
        int nt_gu = mp_threads_for(m, work, items_gu);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_gu) if (nt_gu > 1)
        for (size_t it = 0; it < items_gu; it++)
            gate_up_item(&job, w->active[it / S], (uint32_t)(it % S), s0, s1);
        const size_t items_dn = (size_t)w->n_active * hblocks;
        int nt_dn = mp_threads_for(m, work, items_dn);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_dn) if (nt_dn > 1)
        for (size_t it = 0; it < items_dn; it++)
            down_item(&job, w->active[it / hblocks], (uint32_t)(it % hblocks), s0, s1, w->y);
    } else {
        int nt = mp_threads_for(m, work, (size_t)w->n_active * S);
        job.hblocks = hblocks;
        run_by_node(&job, nt, false);
        run_by_node(&job, nt, true);
        /* y = the first node's partial + the others', in node order */
        uint32_t first = 0;
        while (first < nodes && np->slice0[first] == np->slice1[first])
            first++;
        int nts = mp_threads_for(m, (uint64_t)nslots * H * nodes, nslots);
#pragma omp parallel for schedule(static) num_threads(nts) if (nts > 1)
        for (size_t sl = 0; sl < nslots; sl++)
            for (uint32_t j = first + 1; j < nodes; j++)
                if (np->slice0[j] < np->slice1[j])
                    K->axpy(H, 1.0f, node_y(&job, j, first) + sl * H, w->y + sl * H);
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
