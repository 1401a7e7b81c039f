/* The rules of mp_cuda_router (kernels/cuda/mp_cuda.h), one token at a time on
 * the host: the oracle test_cuda_kernels checks the kernel against, and what
 * tests/cuda_mock.c runs in its place for test_hybrid_mock. Softmax sums in
 * double; ties go to the lower index, for groups and experts alike. */
#ifndef MP_REF_ROUTER_H
#define MP_REF_ROUTER_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "mp_cuda.h"

#define REF_ROUTER_MAX_EXPERTS MP_CUDA_ROUTER_MAX_EXPERTS
#define REF_ROUTER_MAX_GROUPS MP_CUDA_ROUTER_MAX_GROUPS

/* Index of the largest v[i] among i < n with !taken[i] (the lowest on ties). */
static inline int ref_router_argmax_free(const float *v, const bool *taken, uint32_t n)
{
    int best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best]))
            best = (int)i;
    return best;
}

/* One token: logits [n_experts] and the optional bias give ids [top_k] and
 * wts [top_k]. p must pass mp_cuda_router_params_problem. */
static inline void ref_router_token(const mp_cuda_router_params *p, const float *logits, const float *bias,
                                    int32_t *ids, float *wts)
{
    const uint32_t E = p->n_experts;
    float score[REF_ROUTER_MAX_EXPERTS], choice[REF_ROUTER_MAX_EXPERTS];
    bool taken[REF_ROUTER_MAX_EXPERTS] = {false};
    if (p->scoring == 0) {
        float mx = -INFINITY;
        for (uint32_t e = 0; e < E; e++)
            mx = fmaxf(mx, logits[e]);
        double sum = 0;
        for (uint32_t e = 0; e < E; e++)
            sum += exp((double)logits[e] - mx);
        for (uint32_t e = 0; e < E; e++)
            score[e] = (float)(exp((double)logits[e] - mx) / sum);
    } else {
        for (uint32_t e = 0; e < E; e++)
            score[e] = (float)(1.0 / (1.0 + exp(-(double)logits[e])));
    }
    for (uint32_t e = 0; e < E; e++)
        choice[e] = score[e] + ((p->topk_method == 2 && bias) ? bias[e] : 0.0f);
    if (p->topk_method != 0 && p->n_group > 1 && p->topk_group < p->n_group) {
        const uint32_t gs = E / p->n_group;
        float gsc[REF_ROUTER_MAX_GROUPS];
        bool keep[REF_ROUTER_MAX_GROUPS] = {false};
        for (uint32_t g = 0; g < p->n_group; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (uint32_t e = 0; e < gs; e++) {
                float v = choice[g * gs + e];
                if (v > b1) {
                    b2 = b1;
                    b1 = v;
                } else if (v > b2) {
                    b2 = v;
                }
            }
            gsc[g] = (p->topk_method == 2 && gs >= 2) ? b1 + b2 : b1;
        }
        for (uint32_t k = 0; k < p->topk_group; k++)
            keep[ref_router_argmax_free(gsc, keep, p->n_group)] = true;
        for (uint32_t e = 0; e < E; e++)
            if (!keep[e / gs])
                choice[e] = p->masked_score;
    }
    /* group_limited_greedy (V2) weighs by the masked scores, noaux_tc (V3) by the unmasked ones */
    const float *wsrc = p->topk_method == 1 ? choice : score;
    double sum = 0;
    for (uint32_t k = 0; k < p->top_k; k++) {
        int best = ref_router_argmax_free(choice, taken, E);
        taken[best] = true;
        ids[k] = best;
        sum += wsrc[best];
    }
    for (uint32_t k = 0; k < p->top_k; k++)
        wts[k] = (float)(wsrc[ids[k]] / (p->norm_topk_prob ? sum + 1e-20 : 1.0) * p->routed_scaling_factor);
}

#endif
