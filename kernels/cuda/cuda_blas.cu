/* Row-major (layout 1) and per-head (layout 2) weights: an f32-activation
 * GEMV kernel for few tokens, cuBLAS bf16 GEMMs for many. */
#include "mp_cuda_internal.h"

/* ---- GEMV: y[t][h][i] = Σ_k W[h*R + i][k] · x[t][h][k] -------------------- */

__device__ __forceinline__ void load8(const float *p, float v[8])
{
    float4 a = __ldcs((const float4 *)p);
    float4 b = __ldcs((const float4 *)p + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float v[8])
{
    uint4 u = __ldcs((const uint4 *)p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

#define GEMV_MAXT 8

/* LPR lanes share one row (each takes 8 k values per step); KS warps of the
 * block split k for the same rows (KS = 8 when there are few rows, so the
 * GPU still gets enough loads in flight). blockIdx.y picks MT tokens (MT = 1
 * for decode keeps the register count, hence occupancy, low). */
template <typename WT, int LPR, int KS, int MT>
__global__ void __launch_bounds__(256) gemv_rm_kernel(const WT *__restrict__ w, int rows_total, int rows_per_head,
                                                      int K, const float *__restrict__ x, size_t ldx_tok,
                                                      size_t ldx_head, int M, float *y, size_t ldy_tok,
                                                      size_t ldy_head, int accumulate)
{
    constexpr int RPW = 32 / LPR;          /* rows per warp per step */
    constexpr int RPB = RPW * (8 / KS);    /* rows per block per step */
    __shared__ float red[KS > 1 ? 8 : 1][RPW][MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kw = warp % KS, rw = warp / KS;
    const int sub = lane % LPR, rsub = lane / LPR;
    const int t0 = blockIdx.y * MT;
    const int mt = min(MT, M - t0);
    const int kc = K / 8;
    for (int rb = blockIdx.x * RPB; rb < rows_total; rb += gridDim.x * RPB) {
        const int r = rb + rw * RPW + rsub;
        const bool valid = r < rows_total;
        const int h = valid ? r / rows_per_head : 0;
        float acc[MT];
#pragma unroll
        for (int t = 0; t < MT; t++)
            acc[t] = 0.0f;
        if (valid) {
            const WT *wr = w + (size_t)r * K;
            const float *xh = x + (size_t)t0 * ldx_tok + (size_t)h * ldx_head;
#pragma unroll 4
            for (int c = sub + kw * LPR; c < kc; c += LPR * KS) {
                float wv[8];
                load8(wr + (size_t)c * 8, wv);
#pragma unroll
                for (int t = 0; t < MT; t++) {
                    if (t < mt) {
                        const float4 *xp = (const float4 *)(xh + (size_t)t * ldx_tok + (size_t)c * 8);
                        float4 a = __ldg(xp), b = __ldg(xp + 1);
                        acc[t] = fmaf(wv[0], a.x, acc[t]);
                        acc[t] = fmaf(wv[1], a.y, acc[t]);
                        acc[t] = fmaf(wv[2], a.z, acc[t]);
                        acc[t] = fmaf(wv[3], a.w, acc[t]);
                        acc[t] = fmaf(wv[4], b.x, acc[t]);
                        acc[t] = fmaf(wv[5], b.y, acc[t]);
                        acc[t] = fmaf(wv[6], b.z, acc[t]);
                        acc[t] = fmaf(wv[7], b.w, acc[t]);
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < MT; t++)
#pragma unroll
            for (int o = LPR / 2; o > 0; o >>= 1)
                acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
        if (KS > 1) {
            if (sub == 0)
#pragma unroll
                for (int t = 0; t < MT; t++)
                    red[kw][rsub][t] = acc[t];
            __syncthreads();
            if (kw == 0 && sub == 0)
#pragma unroll
                for (int t = 0; t < MT; t++) {
                    float s = 0.0f;
                    for (int q = 0; q < KS; q++)
                        s += red[q][rsub][t];
                    acc[t] = s;
                }
            __syncthreads();
        }
        if (valid && kw == 0 && sub == 0) {
            const int i = r - h * rows_per_head;
            for (int t = 0; t < mt; t++) {
                float *yp = y + (size_t)(t0 + t) * ldy_tok + (size_t)h * ldy_head + i;
                *yp = accumulate ? *yp + acc[t] : acc[t];
            }
        }
    }
}

template <typename WT, int LPR, int KS>
static void launch_gemv_rm(mp_cuda_ctx *ctx, const WT *w, int rows_total, int rows_per_head, int K, const float *x,
                           size_t ldx_tok, size_t ldx_head, int M, float *y, size_t ldy_tok, size_t ldy_head,
                           int accumulate)
{
    const int rpb = (32 / LPR) * (8 / KS);
    int blocks = (rows_total + rpb - 1) / rpb;
    if (blocks > ctx->sm_count * 16)
        blocks = ctx->sm_count * 16;
    if (M == 1) {
        gemv_rm_kernel<WT, LPR, KS, 1><<<dim3((unsigned)blocks, 1), 256, 0, ctx->stream>>>(
            w, rows_total, rows_per_head, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, accumulate);
    } else {
        dim3 grid((unsigned)blocks, (unsigned)((M + GEMV_MAXT - 1) / GEMV_MAXT));
        gemv_rm_kernel<WT, LPR, KS, GEMV_MAXT><<<grid, 256, 0, ctx->stream>>>(
            w, rows_total, rows_per_head, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, accumulate);
    }
}

template <typename WT>
static int gemv_rm(mp_cuda_ctx *ctx, const WT *w, uint32_t rows_total, uint32_t rows_per_head, uint32_t k,
                   const float *x, size_t ldx_tok, size_t ldx_head, uint32_t m, float *y, size_t ldy_tok,
                   size_t ldy_head, bool accumulate, mp_error *err)
{
    if (m == 0 || rows_total == 0)
        return MP_OK;
    if (k == 0 || k % 8 || rows_total > 0x7fffffffu || k > 0x7fffffffu || m > 65535u * GEMV_MAXT)
        return mp_cuda_bad_arg(err, "gemv", "k must be a positive multiple of 8 (and shapes below 2^31)");
    if (!mp_cuda_aligned(w, 16) || !mp_cuda_aligned(x, 16) || ldx_tok % 4 || ldx_head % 4)
        return mp_cuda_bad_arg(err, "gemv", "w and x must be 16-byte aligned, x strides multiples of 4");
    const uint32_t kc = k / 8;
    /* few rows: split k over the 8 warps of a block */
    const bool split = rows_total < (uint32_t)ctx->sm_count * 64u;
    const int R = (int)rows_total, H = (int)rows_per_head, K = (int)k, M = (int)m, A = accumulate ? 1 : 0;
    if (kc >= 32) {
        if (split)
            launch_gemv_rm<WT, 32, 8>(ctx, w, R, H, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, A);
        else
            launch_gemv_rm<WT, 32, 1>(ctx, w, R, H, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, A);
    } else if (kc >= 16) {
        launch_gemv_rm<WT, 16, 1>(ctx, w, R, H, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, A);
    } else {
        launch_gemv_rm<WT, 8, 1>(ctx, w, R, H, K, x, ldx_tok, ldx_head, M, y, ldy_tok, ldy_head, A);
    }
    return mp_cuda_launch_check(err, "gemv_rowmajor");
}

int mp_cuda_gemv_rowmajor(mp_cuda_ctx *ctx, const void *w, mp_cuda_dtype wtype, uint32_t n, uint32_t k,
                          const float *x, size_t ldx, uint32_t m, float *y, size_t ldy, bool accumulate,
                          mp_error *err)
{
    if (wtype == MP_CUDA_F32)
        return gemv_rm<float>(ctx, (const float *)w, n, n, k, x, ldx, 0, m, y, ldy, 0, accumulate, err);
    return gemv_rm<__nv_bfloat16>(ctx, (const __nv_bfloat16 *)w, n, n, k, x, ldx, 0, m, y, ldy, 0, accumulate, err);
}

/* ---- cuBLAS ---------------------------------------------------------------- */

static bool fits_int(size_t v)
{
    return v <= 0x7fffffffu;
}

int mp_cuda_blas_gemm_bf16(mp_cuda_ctx *ctx, const __nv_bfloat16 *w, size_t ldw, uint32_t n, uint32_t k,
                           const __nv_bfloat16 *x, size_t ldx, uint32_t m, float *y, size_t ldy, bool accumulate,
                           mp_error *err)
{
    if (!fits_int(ldw) || !fits_int(ldx) || !fits_int(ldy) || !fits_int(n) || !fits_int(m) || !fits_int(k))
        return mp_cuda_bad_arg(err, "cuBLAS GEMM", "dimension above 2^31");
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    /* row-major y[m][n] = x[m][k]·Wᵀ is column-major yᵀ (n×m) = W (n×k, stored
     * as the column-major k×n matrix Wᵀ, hence OP_T) · xᵀ (k×m) */
    MP_BLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, w, CUDA_R_16BF,
                             (int)ldw, x, CUDA_R_16BF, (int)ldx, &beta, y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT),
                "cublasGemmEx (bf16)");
    return MP_OK;
}

int mp_cuda_linear_bf16(mp_cuda_ctx *ctx, const uint16_t *w, uint32_t n, uint32_t k, const float *x, size_t ldx,
                        uint32_t m, float *y, size_t ldy, bool accumulate, mp_error *err)
{
    if (m <= GEMV_MAXT)
        return gemv_rm<__nv_bfloat16>(ctx, (const __nv_bfloat16 *)w, n, n, k, x, ldx, 0, m, y, ldy, 0, accumulate,
                                      err);
    if (k == 0)
        return mp_cuda_bad_arg(err, "linear_bf16", "k must be > 0");
    /* x to bf16 in the workspace, in chunks of tokens that fit */
    size_t row_bytes = (size_t)k * 2;
    size_t chunk = ctx->ws_bytes / row_bytes;
    if (chunk == 0)
        return mp_fail(err, MP_ERR_INPUT, "cuda", NULL, "linear_bf16: workspace of %zu bytes is too small for k=%u",
                       ctx->ws_bytes, k);
    __nv_bfloat16 *xb = (__nv_bfloat16 *)ctx->ws;
    for (uint32_t t0 = 0; t0 < m; t0 += (uint32_t)chunk) {
        uint32_t mt = m - t0 < chunk ? m - t0 : (uint32_t)chunk;
        int rc = mp_cuda_convert_rows(ctx, x + (size_t)t0 * ldx, ldx, xb, k, mt, k, k, err);
        if (!rc)
            rc = mp_cuda_blas_gemm_bf16(ctx, (const __nv_bfloat16 *)w, k, n, k, xb, k, mt, y + (size_t)t0 * ldy, ldy,
                                        accumulate, err);
        if (rc)
            return rc;
    }
    return MP_OK;
}

/* x (t, h, c) strided f32 -> contiguous bf16 [t][h][c] */
__global__ void gather_heads_kernel(const float *x, size_t ldx_tok, size_t ldx_head, int heads, int c, int m,
                                    __nv_bfloat16 *out)
{
    size_t total = (size_t)m * heads * c;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t j = idx % c, row = idx / c;
        size_t h = row % heads, t = row / heads;
        out[idx] = __float2bfloat16_rn(x[t * ldx_tok + h * ldx_head + j]);
    }
}

int mp_cuda_heads_bf16(mp_cuda_ctx *ctx, const uint16_t *w, uint32_t heads, uint32_t r, uint32_t c, const float *x,
                       size_t ldx_tok, size_t ldx_head, uint32_t m, float *y, size_t ldy_tok, size_t ldy_head,
                       mp_error *err)
{
    if (m == 0 || heads == 0 || r == 0)
        return MP_OK;
    if ((uint64_t)heads * r > 0x7fffffffu)
        return mp_cuda_bad_arg(err, "heads_bf16", "heads*r above 2^31");
    if (m <= GEMV_MAXT)
        return gemv_rm<__nv_bfloat16>(ctx, (const __nv_bfloat16 *)w, heads * r, r, c, x, ldx_tok, ldx_head, m, y,
                                      ldy_tok, ldy_head, false, err);
    if (c == 0 || !fits_int(ldy_tok) || !fits_int(ldy_head) || !fits_int((size_t)heads * c))
        return mp_cuda_bad_arg(err, "heads_bf16", "bad shape");
    size_t tok_bytes = (size_t)heads * c * 2;
    size_t chunk = ctx->ws_bytes / tok_bytes;
    if (chunk == 0)
        return mp_fail(err, MP_ERR_INPUT, "cuda", NULL, "heads_bf16: workspace of %zu bytes is too small",
                       ctx->ws_bytes);
    __nv_bfloat16 *xb = (__nv_bfloat16 *)ctx->ws;
    const float alpha = 1.0f, beta = 0.0f;
    for (uint32_t t0 = 0; t0 < m; t0 += (uint32_t)chunk) {
        uint32_t mt = m - t0 < chunk ? m - t0 : (uint32_t)chunk;
        size_t total = (size_t)mt * heads * c;
        size_t blocks = (total + 255) / 256;
        if (blocks > 65535u * 16u)
            blocks = 65535u * 16u;
        gather_heads_kernel<<<(unsigned)blocks, 256, 0, ctx->stream>>>(x + (size_t)t0 * ldx_tok, ldx_tok, ldx_head,
                                                                      (int)heads, (int)c, (int)mt, xb);
        int rc = mp_cuda_launch_check(err, "heads_bf16 gather");
        if (rc)
            return rc;
        /* per head: column-major y_h (r×mt, ldc = ldy_tok) = W_h (OP_T of the
         * column-major c×r buffer) · x_h (c×mt, ldb = heads*c) */
        MP_BLAS_TRY(cublasGemmStridedBatchedEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)r, (int)mt, (int)c, &alpha,
                                               w, CUDA_R_16BF, (int)c, (long long)r * c, xb, CUDA_R_16BF,
                                               (int)(heads * c), (long long)c, &beta, y + (size_t)t0 * ldy_tok,
                                               CUDA_R_32F, (int)ldy_tok, (long long)ldy_head, (int)heads,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "cublasGemmStridedBatchedEx (heads)");
    }
    return MP_OK;
}
