/* The MoE router: which routed experts each token uses, with what weight.
 *
 * logits = x . W_router^T in f32; scores = sigmoid (V3) or softmax (V2) of them.
 * Selection (topk_method):
 *   greedy                the top-k scores;
 *   group_limited_greedy  (V2) group score = the group's max score; keep the
 *                         topk_group best groups; top-k of the kept scores;
 *   noaux_tc              (V3) choice = score + e_score_correction_bias; group
 *                         score = sum of the group's two best choices; keep the
 *                         topk_group best groups; top-k of the kept choices.
 * As in the references, experts of dropped groups compete with the value 0
 * (masked_fill(..., 0.0)), not minus infinity. The weights are the unbiased
 * scores of the chosen experts (V2's group_limited_greedy takes them from the
 * masked scores: an expert of a dropped group, chosen only when k exceeds the
 * kept groups' experts, weighs 0), then
 *   deepseek_v3 (transformers): divided by their sum + 1e-20 when
 *                norm_topk_prob, then always times routed_scaling_factor;
 *   deepseek_v2 (DeepSeek's modeling_deepseek.py): divided by their sum +
 *                1e-20 when top_k > 1 and norm_topk_prob, otherwise times
 *                routed_scaling_factor.
 * Ties go to the lower index (torch.topk leaves them unspecified). */
#include <math.h>
#include <string.h>

#include "mp_forward.h"

/* Index of the largest v[i] among i with !taken[i] (the lowest on ties). */
static uint32_t argmax_free(const float *v, const uint8_t *taken, uint32_t n)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++)
        if (!taken[i] && (best == UINT32_MAX || v[i] > v[best]))
            best = i;
    return best;
}

static void route_token(const mp_model *m, const mp_layer *ly, float *s, uint32_t *ids, float *w)
{
    const mp_model_desc *d = m->d;
    const uint32_t E = d->n_routed_experts, k = m->top_k;
    if (d->scoring_func == MP_SCORING_SIGMOID) {
        for (uint32_t e = 0; e < E; e++)
            s[e] = 1.0f / (1.0f + expf(-s[e]));
    } else {
        m->kern->softmax(E, s);
    }
    /* choice values: in a local copy so the scores stay for the weights */
    float choice[MP_MAX_EXPERTS];
    uint8_t taken[MP_MAX_EXPERTS];
    for (uint32_t e = 0; e < E; e++)
        choice[e] = ly->router_bias ? s[e] + ly->router_bias[e] : s[e];
    bool grouped = d->topk_method != MP_TOPK_GREEDY && d->n_group > 1 && d->topk_group < d->n_group;
    uint8_t group_kept[MP_MAX_EXPERTS];
    if (grouped) {
        uint32_t G = d->n_group, per = E / G;
        float gscore[MP_MAX_EXPERTS];
        for (uint32_t g = 0; g < G; g++) {
            const float *c = choice + (size_t)g * per;
            float best = c[0], second = -INFINITY;
            for (uint32_t i = 1; i < per; i++) {
                if (c[i] > best) {
                    second = best;
                    best = c[i];
                } else if (c[i] > second) {
                    second = c[i];
                }
            }
            if (d->topk_method == MP_TOPK_NOAUX_TC)
                gscore[g] = per >= 2 ? best + second : best;
            else
                gscore[g] = best;
        }
        memset(group_kept, 0, G);
        for (uint32_t j = 0; j < d->topk_group; j++)
            group_kept[argmax_free(gscore, group_kept, G)] = 1;
        for (uint32_t e = 0; e < E; e++)
            if (!group_kept[e / per])
                choice[e] = 0.0f;
    }
    const bool masked_weights = grouped && d->topk_method == MP_TOPK_GROUP_LIMITED_GREEDY;
    memset(taken, 0, E);
    for (uint32_t j = 0; j < k; j++) {
        uint32_t e = argmax_free(choice, taken, E);
        taken[e] = 1;
        ids[j] = e;
        w[j] = masked_weights && !group_kept[e / (E / d->n_group)] ? 0.0f : s[e];
    }
    bool v3 = strcmp(d->model_type, "deepseek_v2") != 0;
    bool norm = v3 ? d->norm_topk_prob : (k > 1 && d->norm_topk_prob);
    if (norm) {
        float sum = 0.0f;
        for (uint32_t j = 0; j < k; j++)
            sum += w[j];
        sum += 1e-20f;
        for (uint32_t j = 0; j < k; j++)
            w[j] /= sum;
    }
    if (v3 || !norm)
        for (uint32_t j = 0; j < k; j++)
            w[j] *= d->routed_scaling_factor;
}

void mp_fwd_router(const mp_model *m, uint32_t layer, size_t M, const float *xn, float *logits, uint32_t *ids,
                   float *weights)
{
    const mp_layer *ly = &m->layers[layer];
    const uint32_t E = m->d->n_routed_experts, k = m->top_k;
    mp_linear_par(m, &ly->router, M, xn, m->d->hidden_size, logits, E, false);
    int nt = mp_threads_for(m, (uint64_t)M * E * (k + 4), M);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t t = 0; t < M; t++)
        route_token(m, ly, logits + t * E, ids + t * k, weights + t * k);
}
