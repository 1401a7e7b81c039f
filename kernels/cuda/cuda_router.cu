/* The MoE router after the logits: scoring (softmax or sigmoid), the
 * e_score_correction_bias, group-limited selection (noaux_tc: groups ranked
 * by the sum of their two best biased scores; group_limited_greedy: by their
 * best score), top-k, normalization and scaling, as in the reference
 * modeling code. One block per token, experts in shared memory; the top-k is
 * k rounds of a block-wide argmax (k <= 32, experts <= 1024: this is tiny). */
#include <math.h>

#include "mp_cuda_internal.h"

#define RT_MAXE MP_CUDA_ROUTER_MAX_EXPERTS
#define RT_MAXG MP_CUDA_ROUTER_MAX_GROUPS

/* (value, index) pairs: larger value wins, then the lower index */
__device__ __forceinline__ bool rt_better(float v, int i, float bv, int bi)
{
    if (i < 0)
        return false;
    if (bi < 0)
        return true;
    return v > bv || (v == bv && i < bi);
}

/* Block argmax over the candidates each thread offers; all threads get it. */
__device__ int rt_block_argmax(float v, int i, float *sv, int *si)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (rt_better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float bv = sv[0];
        int bi = si[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (rt_better(sv[w], si[w], bv, bi)) {
                bv = sv[w];
                bi = si[w];
            }
        si[32] = bi;
    }
    __syncthreads();
    const int r = si[32];
    __syncthreads(); /* si is reused by the next round */
    return r;
}

__device__ float rt_block_reduce(float v, bool is_max, float *sv)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, ov) : v + ov;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        sv[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float r = sv[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            r = is_max ? fmaxf(r, sv[w]) : r + sv[w];
        sv[32] = r;
    }
    __syncthreads();
    const float r = sv[32];
    __syncthreads();
    return r;
}

__global__ void __launch_bounds__(256)
    router_kernel(const float *__restrict__ logits, size_t ld, const float *__restrict__ bias, int E, int top_k,
                  int n_group, int topk_group, int scoring, int method, int norm, float rsf, float masked,
                  int32_t *ids, float *weights)
{
    __shared__ float score[RT_MAXE];
    __shared__ float choice[RT_MAXE];
    __shared__ unsigned char taken[RT_MAXE];
    __shared__ float gscore[RT_MAXG];
    __shared__ unsigned char gkeep[RT_MAXG];
    __shared__ float sv[33];
    __shared__ int si[33];
    __shared__ int sel[32];

    const int tok = blockIdx.x;
    const float *lg = logits + (size_t)tok * ld;

    float lmax = -INFINITY;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        lmax = fmaxf(lmax, lg[e]);
    if (scoring == 0)
        lmax = rt_block_reduce(lmax, true, sv);
    float lsum = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float l = lg[e];
        float s;
        if (scoring == 0) {
            s = expf(l - lmax);
            lsum += s;
        } else {
            s = 1.0f / (1.0f + expf(-l));
        }
        score[e] = s;
        taken[e] = 0;
    }
    if (scoring == 0) {
        lsum = rt_block_reduce(lsum, false, sv);
        for (int e = threadIdx.x; e < E; e += blockDim.x)
            score[e] = score[e] / lsum;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        choice[e] = score[e] + ((method == 2 && bias) ? bias[e] : 0.0f);
    __syncthreads();

    if (method != 0 && n_group > 1 && topk_group < n_group) {
        const int gs = E / n_group;
        for (int gi = threadIdx.x; gi < n_group; gi += blockDim.x) {
            const float *c = choice + gi * gs;
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int e = 0; e < gs; e++) {
                const float v = c[e];
                if (v > b1) {
                    b2 = b1;
                    b1 = v;
                } else if (v > b2) {
                    b2 = v;
                }
            }
            /* noaux_tc: sum of the top two; group_limited_greedy: the best */
            gscore[gi] = (method == 2 && gs >= 2) ? b1 + b2 : b1;
            gkeep[gi] = 0;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int k = 0; k < topk_group; k++) {
                int bi = -1;
                float bv = -INFINITY;
                for (int gi = 0; gi < n_group; gi++)
                    if (!gkeep[gi] && rt_better(gscore[gi], gi, bv, bi)) {
                        bv = gscore[gi];
                        bi = gi;
                    }
                if (bi >= 0)
                    gkeep[bi] = 1;
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < E; e += blockDim.x)
            if (!gkeep[e / gs])
                choice[e] = masked;
        __syncthreads();
    }

    for (int k = 0; k < top_k; k++) {
        float bv = -INFINITY;
        int bi = -1;
        for (int e = threadIdx.x; e < E; e += blockDim.x)
            if (!taken[e] && rt_better(choice[e], e, bv, bi)) {
                bv = choice[e];
                bi = e;
            }
        const int w = rt_block_argmax(bv, bi, sv, si);
        if (threadIdx.x == 0) {
            sel[k] = w;
            if (w >= 0)
                taken[w] = 1;
        }
        __syncthreads();
    }

    if (threadIdx.x == 0) {
        /* group_limited_greedy (V2) weighs by the masked scores (choice: no bias
         * there), noaux_tc (V3) by the unmasked ones */
        const float *wsrc = method == 1 ? choice : score;
        float sum = 0.0f;
        for (int k = 0; k < top_k; k++)
            sum += sel[k] >= 0 ? wsrc[sel[k]] : 0.0f;
        const float div = norm ? sum + 1e-20f : 1.0f;
        for (int k = 0; k < top_k; k++) {
            const int e = sel[k];
            ids[(size_t)tok * top_k + k] = e;
            weights[(size_t)tok * top_k + k] = e >= 0 ? wsrc[e] / div * rsf : 0.0f;
        }
    }
}

int mp_cuda_router(mp_cuda_ctx *ctx, const mp_cuda_router_params *p, const float *logits, size_t ld,
                   const float *bias, uint32_t m, int32_t *ids, float *weights, mp_error *err)
{
    if (m == 0)
        return MP_OK;
    const char *problem = mp_cuda_router_params_problem(p);
    if (problem)
        return mp_cuda_bad_arg(err, "router", problem);
    if (m > 0x7fffffffu)
        return mp_cuda_bad_arg(err, "router", "too many tokens");
    router_kernel<<<m, 256, 0, ctx->stream>>>(logits, ld, bias, (int)p->n_experts, (int)p->top_k, (int)p->n_group,
                                              (int)p->topk_group, p->scoring, p->topk_method,
                                              p->norm_topk_prob ? 1 : 0, p->routed_scaling_factor, p->masked_score,
                                              ids, weights);
    return mp_cuda_launch_check(err, "router");
}
