/* int4 weights in the gpu_int4 layout (docs/LAYOUTS.md section 5):
 *  - a tensor-core GEMV for 1..32 tokens (decode),
 *  - a GEMM for more tokens: dequantize to bf16 + cuBLAS, or a fused
 *    kernel that dequantizes tiles in shared memory and runs mma.sync.
 * Activations come in as f32 and are rounded to bf16 for the tensor cores;
 * products accumulate in f32; the output is f32. */
#include "mp_cuda_internal.h"

/* ---- shared helpers -------------------------------------------------------- */

__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x = lo = low 16 bits */
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ void mma_bf16_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Nibbles i and i+4 of a 32-bit word (k = 8w+i and 8w+i+4 of the word's 8
 * values) as a bf16 pair: OR-ing a nibble into the mantissa of 128.0 (0x4300)
 * gives 128 + q exactly; subtracting 136 (sym) or 128 (asym) gives q - 8 or q,
 * still exact. No integer-to-float conversion needed. */
template <bool ASYM>
__device__ __forceinline__ uint32_t dequant_pair(uint32_t w, int i)
{
    uint32_t v = ((w >> (4 * i)) & 0x000F000Fu) | 0x43004300u;
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162 *>(&v);
    const float off = ASYM ? 128.0f : 136.0f;
    h = __hsub2(h, __floats2bfloat162_rn(off, off));
    return *reinterpret_cast<uint32_t *>(&h);
}

/* ---- GEMV (tensor cores, 1..32 tokens) --------------------------------------
 *
 * A warp owns a 16-row tile; lane (g = lane/4, t = lane%4) loads 16 bytes
 * (32 k values) of rows g and g+8 at byte t*16 of each 64-byte group, so the
 * four lanes of a row read one whole 128-value quantization group (one scale
 * per row and group). The weights are the mma A operand (m16 = rows) and the
 * tokens the B operand (n8 = 8 tokens per tile). Since a dot product does
 * not care about the order of k, the k slots of the m16n8k16 fragments are
 * filled in the order the nibbles come out of the loaded word (pairs
 * (8w+i, 8w+i+4)), and each lane packs its own token's x values in the same
 * order: lane (g, t) supplies x[token g][group*128 + t*32 + ...].
 * Per group and token tile, 8 mma steps give Σ q·x for rows g, g+8 and
 * tokens 2t, 2t+1; the f32 accumulator adds scale·that (+ min·Σx for asym). */

#define I4_GU 4 /* groups per warp per iteration: 8 16-byte loads in flight per lane */

template <bool ASYM>
__device__ __forceinline__ void load_x_pairs(const float *__restrict__ x, size_t ldx, int M, int K, int tok, int kbase,
                                             uint32_t xb[16], float *xs)
{
    float s = 0.0f;
    if (tok < M) {
        const float *xp = x + (size_t)tok * ldx + kbase;
        float v[32];
        if (kbase + 32 <= K) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                float4 f = __ldg((const float4 *)xp + e);
                v[4 * e] = f.x, v[4 * e + 1] = f.y, v[4 * e + 2] = f.z, v[4 * e + 3] = f.w;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++)
                v[e] = kbase + e < K ? xp[e] : 0.0f;
        }
#pragma unroll
        for (int w = 0; w < 4; w++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                xb[w * 4 + i] = bf16x2_bits(v[8 * w + i], v[8 * w + i + 4]);
        if (ASYM) {
#pragma unroll
            for (int e = 0; e < 16; e++)
                s += __uint_as_float(xb[e] << 16) + __uint_as_float(xb[e] & 0xffff0000u);
        }
    } else {
#pragma unroll
        for (int e = 0; e < 16; e++)
            xb[e] = 0;
    }
    if (ASYM) {
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
    }
    *xs = s;
}

template <int WK, int NT, bool ASYM>
__global__ void __launch_bounds__(256) gemv_int4_kernel(const uint8_t *__restrict__ q, const __half *__restrict__ scale,
                                                        const __half *__restrict__ minv, int N, int Np, int K,
                                                        int ngroups, const float *__restrict__ x, size_t ldx, int M,
                                                        float *y, size_t ldy, int accumulate)
{
    constexpr int WR = 8 / WK;
    __shared__ float red[WK > 1 ? 8 : 1][NT][4][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wk = warp % WK, wr = warp / WK;
    const int g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x * WR + wr;
    const bool active = tile * 16 < Np;
    const int rowA = tile * 16 + g, rowB = rowA + 8;
    const size_t rowbytes = (size_t)ngroups * 64;

    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[j][e] = 0.0f;

    if (active) {
        const uint8_t *pa = q + (size_t)rowA * rowbytes + t * 16;
        const uint8_t *pb = q + (size_t)rowB * rowbytes + t * 16;
        const __half *sa = scale + (size_t)rowA * ngroups, *sb = scale + (size_t)rowB * ngroups;
        const __half *ma = ASYM ? minv + (size_t)rowA * ngroups : nullptr;
        const __half *mb = ASYM ? minv + (size_t)rowB * ngroups : nullptr;
        for (int g0 = wk * I4_GU; g0 < ngroups; g0 += WK * I4_GU) {
            uint4 wa[I4_GU], wb[I4_GU];
#pragma unroll
            for (int u = 0; u < I4_GU; u++) {
                if (g0 + u < ngroups) {
                    wa[u] = __ldcs((const uint4 *)(pa + (size_t)(g0 + u) * 64));
                    wb[u] = __ldcs((const uint4 *)(pb + (size_t)(g0 + u) * 64));
                } else {
                    wa[u] = make_uint4(0, 0, 0, 0);
                    wb[u] = make_uint4(0, 0, 0, 0);
                }
            }
#pragma unroll
            for (int u = 0; u < I4_GU; u++) {
                const int grp = g0 + u;
                if (grp >= ngroups)
                    break;
                const float scA = __half2float(sa[grp]), scB = __half2float(sb[grp]);
                uint32_t xb[NT][16];
                float xs[NT];
#pragma unroll
                for (int j = 0; j < NT; j++)
                    load_x_pairs<ASYM>(x, ldx, M, K, j * 8 + g, grp * 128 + t * 32, xb[j], &xs[j]);
                float c[NT][4];
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        c[j][e] = 0.0f;
                const uint32_t wA[4] = {wa[u].x, wa[u].y, wa[u].z, wa[u].w};
                const uint32_t wB[4] = {wb[u].x, wb[u].y, wb[u].z, wb[u].w};
#pragma unroll
                for (int s = 0; s < 8; s++) {
                    const int w = s >> 1, i0 = (s & 1) * 2;
                    /* a0: row g, k slots 2t..2t+1 <- pair i0; a1: row g+8;
                     * a2/a3: k slots 2t+8..2t+9 <- pair i0+1 */
                    const uint32_t a0 = dequant_pair<ASYM>(wA[w], i0), a1 = dequant_pair<ASYM>(wB[w], i0);
                    const uint32_t a2 = dequant_pair<ASYM>(wA[w], i0 + 1), a3 = dequant_pair<ASYM>(wB[w], i0 + 1);
#pragma unroll
                    for (int j = 0; j < NT; j++)
                        mma_bf16_16816(c[j], a0, a1, a2, a3, xb[j][w * 4 + i0], xb[j][w * 4 + i0 + 1]);
                }
                if (ASYM) {
                    const float mnA = __half2float(ma[grp]), mnB = __half2float(mb[grp]);
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        /* Σx of tokens 2t and 2t+1 sits in lanes (2t)*4 and (2t+1)*4 */
                        const float x0 = __shfl_sync(0xffffffffu, xs[j], (2 * t) * 4);
                        const float x1 = __shfl_sync(0xffffffffu, xs[j], (2 * t + 1) * 4);
                        acc[j][0] += scA * c[j][0] + mnA * x0;
                        acc[j][1] += scA * c[j][1] + mnA * x1;
                        acc[j][2] += scB * c[j][2] + mnB * x0;
                        acc[j][3] += scB * c[j][3] + mnB * x1;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        acc[j][0] = fmaf(scA, c[j][0], acc[j][0]);
                        acc[j][1] = fmaf(scA, c[j][1], acc[j][1]);
                        acc[j][2] = fmaf(scB, c[j][2], acc[j][2]);
                        acc[j][3] = fmaf(scB, c[j][3], acc[j][3]);
                    }
                }
            }
        }
    }

    if (WK > 1) {
        if (wk != 0)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    red[warp][j][e][lane] = acc[j][e];
        __syncthreads();
        if (wk == 0)
            for (int o = 1; o < WK; o++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[j][e] += red[warp + o][j][e][lane];
    }
    if (wk == 0 && active) {
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = e < 2 ? rowA : rowB;
                const int tok = j * 8 + 2 * t + (e & 1);
                if (row < N && tok < M) {
                    float *yp = y + (size_t)tok * ldy + row;
                    *yp = accumulate ? *yp + acc[j][e] : acc[j][e];
                }
            }
    }
}

template <int WK, int NT>
static void launch_gemv_int4(mp_cuda_ctx *ctx, bool asym, const uint8_t *q, const __half *sc, const __half *mn, int N,
                             int Np, int K, int ngroups, const float *x, size_t ldx, int M, float *y, size_t ldy,
                             int acc)
{
    const int tiles = Np / 16, wr = 8 / WK;
    const unsigned blocks = (unsigned)((tiles + wr - 1) / wr);
    if (asym)
        gemv_int4_kernel<WK, NT, true><<<blocks, 256, 0, ctx->stream>>>(q, sc, mn, N, Np, K, ngroups, x, ldx, M, y,
                                                                        ldy, acc);
    else
        gemv_int4_kernel<WK, NT, false><<<blocks, 256, 0, ctx->stream>>>(q, sc, mn, N, Np, K, ngroups, x, ldx, M, y,
                                                                         ldy, acc);
}

template <int NT>
static void launch_gemv_int4_nt(mp_cuda_ctx *ctx, int wk, bool asym, const uint8_t *q, const __half *sc,
                                const __half *mn, int N, int Np, int K, int ngroups, const float *x, size_t ldx, int M,
                                float *y, size_t ldy, int acc)
{
    switch (wk) {
    case 1: launch_gemv_int4<1, NT>(ctx, asym, q, sc, mn, N, Np, K, ngroups, x, ldx, M, y, ldy, acc); break;
    case 2: launch_gemv_int4<2, NT>(ctx, asym, q, sc, mn, N, Np, K, ngroups, x, ldx, M, y, ldy, acc); break;
    case 4: launch_gemv_int4<4, NT>(ctx, asym, q, sc, mn, N, Np, K, ngroups, x, ldx, M, y, ldy, acc); break;
    default: launch_gemv_int4<8, NT>(ctx, asym, q, sc, mn, N, Np, K, ngroups, x, ldx, M, y, ldy, acc); break;
    }
}

/* k-split warps per block: as few as possible (more rows per block share the
 * activations in L1) while keeping >= 1 block per SM, and no more than leaves
 * each warp I4_GU groups. On the H100 this picked the fastest of wk = 1, 2, 4,
 * 8 for each of the six DeepSeek-V3 shapes measured (docs/CUDA.md). */
static int gemv_pick_wk(const mp_cuda_ctx *ctx, int Np, int ngroups)
{
    const int tiles = Np / 16;
    int wk_max = 1;
    while (wk_max < 8 && wk_max * 2 * I4_GU <= ngroups)
        wk_max *= 2;
    int wk = 1;
    while (wk < wk_max && (tiles * wk + 7) / 8 < ctx->sm_count)
        wk *= 2;
    return wk;
}

/* ---- GEMM path 1: dequantize to bf16, then cuBLAS ---------------------------- */

template <bool ASYM>
__global__ void dequant_int4_kernel(const uint8_t *__restrict__ q, const __half *__restrict__ scale,
                                    const __half *__restrict__ minv, int ngroups, int row0, int rows,
                                    __nv_bfloat16 *__restrict__ out)
{
    const int chunks_per_row = ngroups * 4; /* 16 bytes = 32 values each */
    const size_t total = (size_t)rows * chunks_per_row;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(idx / chunks_per_row), c = (int)(idx % chunks_per_row);
        const size_t row = (size_t)row0 + r;
        const int grp = c >> 2;
        const float s = __half2float(scale[row * ngroups + grp]);
        const float mn = ASYM ? __half2float(minv[row * ngroups + grp]) : -8.0f * s;
        const uint4 u = __ldcs((const uint4 *)(q + row * ((size_t)ngroups * 64) + (size_t)c * 16));
        const uint32_t wv[4] = {u.x, u.y, u.z, u.w};
        uint32_t o[16];
#pragma unroll
        for (int e = 0; e < 4; e++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const uint32_t byte = (wv[e] >> (8 * b)) & 0xffu;
                /* (q-8)*s computed as q*s + (-8s): exact in f32 for these magnitudes */
                o[e * 4 + b] = bf16x2_bits(fmaf((float)(byte & 15u), s, mn), fmaf((float)(byte >> 4), s, mn));
            }
        uint4 *dst = (uint4 *)(out + (size_t)r * ngroups * 128 + (size_t)c * 32);
#pragma unroll
        for (int e = 0; e < 4; e++)
            dst[e] = make_uint4(o[4 * e], o[4 * e + 1], o[4 * e + 2], o[4 * e + 3]);
    }
}

/* ---- GEMM path 2: fused dequantize + mma.sync -------------------------------
 *
 * Block tile 128 tokens × 128 rows × 64 k, 8 warps as 2 (tokens) × 4 (rows),
 * warp tile 64 × 32 = 4 × 4 m16n8k16 tiles. A (activations, bf16, zero-padded
 * to Kp) and the packed weights arrive by cp.async in a 3-stage ring; each
 * k step the block dequantizes its 128×64 weight slice into one bf16 tile
 * (rows padded to 72 values so ldmatrix rows fall in distinct banks). */

#define FG_BM 128
#define FG_BN 128
#define FG_BK 64
#define FG_STAGES 3
#define FG_LDS 72
#define FG_A_BYTES (FG_BM * FG_LDS * 2)
#define FG_W_BYTES (FG_BN * FG_BK / 2)
#define FG_SMEM (FG_STAGES * (FG_A_BYTES + FG_W_BYTES) + FG_BN * FG_LDS * 2)

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

template <bool ASYM>
__global__ void __launch_bounds__(256, 2) gemm_int4_kernel(const uint8_t *__restrict__ q,
                                                           const __half *__restrict__ scale,
                                                           const __half *__restrict__ minv, int N, int Np, int Kp,
                                                           const __nv_bfloat16 *__restrict__ xb, int M, float *y,
                                                           size_t ldy, int accumulate)
{
    extern __shared__ __align__(16) uint8_t smem[];
    uint8_t *As = smem;
    uint8_t *Wq = smem + FG_STAGES * FG_A_BYTES;
    uint8_t *Bs = Wq + FG_STAGES * FG_W_BYTES;
    const uint32_t as_base = (uint32_t)__cvta_generic_to_shared(As);
    const uint32_t wq_base = (uint32_t)__cvta_generic_to_shared(Wq);
    const uint32_t bs_base = (uint32_t)__cvta_generic_to_shared(Bs);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int n0 = blockIdx.x * FG_BN, m0 = blockIdx.y * FG_BM;
    const int KT = Kp / FG_BK, ngroups = Kp / 128;
    const size_t rowbytes = (size_t)Kp / 2;

    auto load_tile = [&](int kt, int stage) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int ch = tid + i * 256, r = ch >> 3, cc = ch & 7;
            const int gm = m0 + r;
            const __nv_bfloat16 *src = xb + (size_t)(gm < M ? gm : M - 1) * Kp + kt * FG_BK + cc * 8;
            cp_async16(as_base + stage * FG_A_BYTES + (r * FG_LDS + cc * 8) * 2, src, gm < M ? 16 : 0);
        }
        {
            const int r = tid >> 1, cc = tid & 1;
            const int gn = n0 + r;
            const uint8_t *src = q + (size_t)(gn < Np ? gn : Np - 1) * rowbytes + kt * (FG_BK / 2) + cc * 16;
            cp_async16(wq_base + stage * FG_W_BYTES + r * (FG_BK / 2) + cc * 16, src, gn < Np ? 16 : 0);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < FG_STAGES - 1; s++) {
        if (s < KT)
            load_tile(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; kt++) {
        const int stage = kt % FG_STAGES;
        cp_async_wait<FG_STAGES - 2>();
        __syncthreads();
        {
            const int nk = kt + FG_STAGES - 1;
            if (nk < KT)
                load_tile(nk, nk % FG_STAGES);
            cp_async_commit();
        }
        { /* dequantize: thread = (row r, half h) -> 32 values */
            const int r = tid >> 1, h = tid & 1;
            const int gn = n0 + r;
            const int grp = kt >> 1; /* FG_BK = 64: two k tiles per 128-group */
            float s = 0.0f, mn = 0.0f;
            if (gn < Np) {
                s = __half2float(scale[(size_t)gn * ngroups + grp]);
                mn = ASYM ? __half2float(minv[(size_t)gn * ngroups + grp]) : -8.0f * s;
            }
            const uint4 u = *(const uint4 *)(Wq + stage * FG_W_BYTES + r * (FG_BK / 2) + h * 16);
            const uint32_t wv[4] = {u.x, u.y, u.z, u.w};
            uint32_t o[16];
#pragma unroll
            for (int e = 0; e < 4; e++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    const uint32_t byte = (wv[e] >> (8 * b)) & 0xffu;
                    o[e * 4 + b] = bf16x2_bits(fmaf((float)(byte & 15u), s, mn), fmaf((float)(byte >> 4), s, mn));
                }
            uint4 *dst = (uint4 *)(Bs + (r * FG_LDS + h * 32) * 2);
#pragma unroll
            for (int e = 0; e < 4; e++)
                dst[e] = make_uint4(o[4 * e], o[4 * e + 1], o[4 * e + 2], o[4 * e + 3]);
        }
        __syncthreads();
        const uint32_t a_stage = as_base + stage * FG_A_BYTES;
#pragma unroll
        for (int ks = 0; ks < FG_BK / 16; ks++) {
            uint32_t af[4][4], bfr[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = wm * 64 + i * 16 + (lane & 15);
                const int col = ks * 16 + (lane >> 4) * 8;
                ldmatrix_x4(a_stage + (row * FG_LDS + col) * 2, af[i][0], af[i][1], af[i][2], af[i][3]);
            }
#pragma unroll
            for (int jj = 0; jj < 2; jj++) {
                const int row = wn * 32 + jj * 16 + (lane & 7) + (lane >> 4) * 8;
                const int col = ks * 16 + ((lane >> 3) & 1) * 8;
                ldmatrix_x4(bs_base + (row * FG_LDS + col) * 2, bfr[2 * jj][0], bfr[2 * jj][1], bfr[2 * jj + 1][0],
                            bfr[2 * jj + 1][1]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    mma_bf16_16816(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bfr[j][0], bfr[j][1]);
        }
    }
    cp_async_wait<0>();

    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int tok = m0 + wm * 64 + i * 16 + g + (e >> 1) * 8;
                const int n = n0 + wn * 32 + j * 8 + 2 * t + (e & 1);
                if (tok < M && n < N) {
                    float *yp = y + (size_t)tok * ldy + n;
                    *yp = accumulate ? *yp + acc[i][j][e] : acc[i][j][e];
                }
            }
}

int mp_cuda_int4_init(mp_cuda_ctx *ctx, mp_error *err)
{
    (void)ctx;
    MP_CUDA_TRY(cudaFuncSetAttribute(gemm_int4_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, FG_SMEM),
                "cudaFuncSetAttribute(gemm_int4)");
    MP_CUDA_TRY(cudaFuncSetAttribute(gemm_int4_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, FG_SMEM),
                "cudaFuncSetAttribute(gemm_int4)");
    return MP_OK;
}

void mp_cuda_set_int4_gemm(mp_cuda_ctx *ctx, mp_cuda_gemm_path path)
{
    ctx->gemm_path = path;
}

/* ---- dispatch ---------------------------------------------------------------- */

typedef struct int4_view {
    const uint8_t *q;
    const __half *scale, *minv;
    int N, Np, K, Kp, ngroups;
} int4_view;

static int int4_view_make(const mp_cuda_int4 *w, int4_view *v, mp_error *err)
{
    if (!w || !w->data || w->n == 0 || w->k == 0)
        return mp_cuda_bad_arg(err, "linear_int4", "empty weight");
    if (!mp_cuda_aligned(w->data, 64))
        return mp_cuda_bad_arg(err, "linear_int4", "weight data must be 64-byte aligned");
    if (mp_cuda_int4_np(w->n) > 0x7fffffffu || mp_cuda_int4_kp(w->k) > 0x7fffffffu)
        return mp_cuda_bad_arg(err, "linear_int4", "shape above 2^31");
    v->q = (const uint8_t *)w->data;
    v->scale = (const __half *)(v->q + mp_cuda_int4_scale_offset(w->n, w->k));
    v->minv = w->asym ? (const __half *)(v->q + mp_cuda_int4_min_offset(w->n, w->k)) : NULL;
    v->N = (int)w->n;
    v->Np = (int)mp_cuda_int4_np(w->n);
    v->K = (int)w->k;
    v->Kp = (int)mp_cuda_int4_kp(w->k);
    v->ngroups = v->Kp / 128;
    return MP_OK;
}

static int run_gemv(mp_cuda_ctx *ctx, const mp_cuda_int4 *w, const int4_view *v, const float *x, size_t ldx,
                    uint32_t m, float *y, size_t ldy, bool accumulate, int wk, mp_error *err)
{
    if (!mp_cuda_aligned(x, 16) || ldx % 4)
        return mp_cuda_bad_arg(err, "linear_int4", "x must be 16-byte aligned with a stride that is a multiple of 4");
    if (wk != 1 && wk != 2 && wk != 4 && wk != 8)
        wk = gemv_pick_wk(ctx, v->Np, v->ngroups);
    const int M = (int)m, A = accumulate ? 1 : 0;
    if (m <= 8)
        launch_gemv_int4_nt<1>(ctx, wk, w->asym, v->q, v->scale, v->minv, v->N, v->Np, v->K, v->ngroups, x, ldx, M,
                               y, ldy, A);
    else if (m <= 16)
        launch_gemv_int4_nt<2>(ctx, wk, w->asym, v->q, v->scale, v->minv, v->N, v->Np, v->K, v->ngroups, x, ldx, M,
                               y, ldy, A);
    else
        launch_gemv_int4_nt<4>(ctx, wk, w->asym, v->q, v->scale, v->minv, v->N, v->Np, v->K, v->ngroups, x, ldx, M,
                               y, ldy, A);
    return mp_cuda_launch_check(err, "linear_int4 (gemv)");
}

/* Workspace: x as bf16 [mc][Kp] first, then (cuBLAS path) a bf16 copy of
 * as many weight rows as fit. Tokens go in chunks of mc. */
static int run_gemm(mp_cuda_ctx *ctx, const mp_cuda_int4 *w, const int4_view *v, const float *x, size_t ldx,
                    uint32_t m, float *y, size_t ldy, bool accumulate, bool fused, mp_error *err)
{
    const size_t xrow = (size_t)v->Kp * 2;
    size_t mc = (ctx->ws_bytes / 2) / xrow / 128 * 128;
    if (mc == 0 || ctx->ws_bytes < (size_t)v->Kp * 2 * 256)
        return mp_fail(err, MP_ERR_INPUT, "cuda", NULL,
                       "linear_int4: workspace of %zu bytes is too small for k=%d (need at least %zu)",
                       ctx->ws_bytes, v->K, (size_t)v->Kp * 2 * 256);
    if (mc > m)
        mc = m;
    __nv_bfloat16 *xb = (__nv_bfloat16 *)ctx->ws;
    const size_t xb_bytes = (mc * xrow + 255) / 256 * 256;
    __nv_bfloat16 *wb = (__nv_bfloat16 *)((uint8_t *)ctx->ws + xb_bytes);
    size_t wrows = (ctx->ws_bytes - xb_bytes) / xrow / 16 * 16;
    if (!fused && wrows == 0)
        return mp_fail(err, MP_ERR_INPUT, "cuda", NULL, "linear_int4: workspace too small for the dequantized weights");
    if (wrows > (size_t)v->Np)
        wrows = (size_t)v->Np;
    for (uint32_t t0 = 0; t0 < m; t0 += (uint32_t)mc) {
        const uint32_t mt = m - t0 < mc ? m - t0 : (uint32_t)mc;
        int rc = mp_cuda_convert_rows(ctx, x + (size_t)t0 * ldx, ldx, xb, (size_t)v->Kp, mt, (uint32_t)v->K,
                                      (uint32_t)v->Kp, err);
        if (rc)
            return rc;
        float *yt = y + (size_t)t0 * ldy;
        if (fused) {
            dim3 grid((unsigned)((v->Np + FG_BN - 1) / FG_BN), (unsigned)((mt + FG_BM - 1) / FG_BM));
            if (w->asym)
                gemm_int4_kernel<true><<<grid, 256, FG_SMEM, ctx->stream>>>(v->q, v->scale, v->minv, v->N, v->Np,
                                                                             v->Kp, xb, (int)mt, yt, ldy,
                                                                             accumulate ? 1 : 0);
            else
                gemm_int4_kernel<false><<<grid, 256, FG_SMEM, ctx->stream>>>(v->q, v->scale, v->minv, v->N, v->Np,
                                                                              v->Kp, xb, (int)mt, yt, ldy,
                                                                              accumulate ? 1 : 0);
            rc = mp_cuda_launch_check(err, "linear_int4 (fused gemm)");
            if (rc)
                return rc;
            continue;
        }
        for (size_t r0 = 0; r0 < (size_t)v->N; r0 += wrows) {
            const size_t rows = (size_t)v->N - r0 < wrows ? (size_t)v->N - r0 : wrows;
            const size_t total = rows * (size_t)v->ngroups * 4;
            size_t blocks = (total + 255) / 256;
            if (blocks > (size_t)ctx->sm_count * 32)
                blocks = (size_t)ctx->sm_count * 32;
            if (w->asym)
                dequant_int4_kernel<true><<<(unsigned)blocks, 256, 0, ctx->stream>>>(v->q, v->scale, v->minv,
                                                                                     v->ngroups, (int)r0, (int)rows, wb);
            else
                dequant_int4_kernel<false><<<(unsigned)blocks, 256, 0, ctx->stream>>>(v->q, v->scale, v->minv,
                                                                                      v->ngroups, (int)r0, (int)rows,
                                                                                      wb);
            rc = mp_cuda_launch_check(err, "linear_int4 (dequantize)");
            if (!rc)
                rc = mp_cuda_blas_gemm_bf16(ctx, wb, (size_t)v->Kp, (uint32_t)rows, (uint32_t)v->K, xb,
                                            (size_t)v->Kp, mt, yt + r0, ldy, accumulate, err);
            if (rc)
                return rc;
        }
    }
    return MP_OK;
}

static bool auto_fused(const mp_cuda_ctx *ctx, const int4_view *v, uint32_t m)
{
    /* Measured on the H100 (docs/CUDA.md), the fused mma.sync kernel reached
     * 40-80% of dequantize + cuBLAS at every V3 shape for M = 512 and 2048,
     * so AUTO means cuBLAS until the fused kernel gets wgmma. */
    (void)ctx;
    (void)v;
    (void)m;
    return false;
}

int mp_cuda_linear_int4_variant(mp_cuda_ctx *ctx, const mp_cuda_int4 *w, const float *x, size_t ldx, uint32_t m,
                                float *y, size_t ldy, bool accumulate, int path, int gemv_wk, mp_error *err)
{
    if (m == 0)
        return MP_OK;
    int4_view v = {};
    int rc = int4_view_make(w, &v, err);
    if (rc)
        return rc;
    if (m > 0x7fffffffu)
        return mp_cuda_bad_arg(err, "linear_int4", "too many tokens");
    if (path < 0) {
        if (m > 32)
            return mp_cuda_bad_arg(err, "linear_int4", "the GEMV takes at most 32 tokens");
        return run_gemv(ctx, w, &v, x, ldx, m, y, ldy, accumulate, gemv_wk, err);
    }
    bool fused = path == MP_CUDA_GEMM_FUSED || (path == MP_CUDA_GEMM_AUTO && auto_fused(ctx, &v, m));
    return run_gemm(ctx, w, &v, x, ldx, m, y, ldy, accumulate, fused, err);
}

int mp_cuda_linear_int4(mp_cuda_ctx *ctx, const mp_cuda_int4 *w, const float *x, size_t ldx, uint32_t m, float *y,
                        size_t ldy, bool accumulate, mp_error *err)
{
    return mp_cuda_linear_int4_variant(ctx, w, x, ldx, m, y, ldy, accumulate, m <= 32 ? -1 : (int)ctx->gemm_path, 0,
                                       err);
}
