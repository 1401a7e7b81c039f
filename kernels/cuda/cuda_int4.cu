/* int4 weights in the gpu_int4 layout (docs/LAYOUTS.md section 5):
 *  - a tensor-core GEMV for 1..32 tokens (decode),
 *  - a GEMM for more tokens: dequantize to bf16 + cuBLAS, or a fused
 *    kernel that dequantizes tiles in shared memory and runs mma.sync.
 * Activations come in as f32 and are rounded to bf16 for the tensor cores;
 * products accumulate in f32; the output is f32. */
#include "mp_cuda_internal.h"

#include <cooperative_groups.h>
namespace cg = cooperative_groups;

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
 * (8w+i, 8w+i+4)), and x is staged in shared memory as bf16 pairs in the
 * same order: lane (g, t) reads token g's words for k = group*128 + t*32 ...
 * Per group and token tile, 8 mma steps give Σ q·x for rows g, g+8 and
 * tokens 2t, 2t+1; the f32 accumulator adds scale·that (+ min·Σx for asym).
 *
 * The work of one launch: tiles x groups. A block of 8 warps holds 8/wk
 * tiles, the wk warps of a tile split its K, and (Hopper) up to 8 blocks of
 * a thread-block cluster split K again; each warp loads all GPW groups of a
 * pass before using any, so one launch keeps the whole of a small matrix in
 * flight. Partial sums are added in a fixed order (warps in wk order, then
 * the cluster's blocks in rank order through distributed shared memory): the
 * result does not depend on timing. Two weights that read the same x (q_a and
 * kv_a, gate and up) can share one launch: their tiles are numbered one after
 * the other.
 *
 * Launched with programmatic dependent launch (PDL, Hopper), a GEMV starts
 * while the kernel before it finishes: it loads its weights, which no kernel
 * writes, and waits (griddepcontrol.wait) before it reads x or touches y. */

#define XS_WORDS 20 /* one (group, token, t) row of x words: 16 + 4 of padding, no bank conflicts */
#define GEMV_XS_MAX 32768 /* bytes of staged x per block */

typedef struct gemv_seg {
    const uint8_t *q;
    const __half *scale, *minv;
    float *y;
    size_t ldy;
    int N, tiles;
} gemv_seg;

typedef struct gemv_args {
    gemv_seg s0, s1;
    int tiles; /* s0.tiles + s1.tiles */
    int K, ngroups;
    int wk;  /* warps splitting a tile's K in a block: 1, 2, 4, 8 */
    int gpb; /* groups per block along K (ceil(ngroups / k_blocks)) */
    const float *x;
    size_t ldx;
    int M, accumulate;
} gemv_args;

template <int GPW, int NT, bool ASYM>
__global__ void __launch_bounds__(256, 2) gemv_int4_kernel(const gemv_args a)
{
    extern __shared__ uint4 xs_raw[];
    uint32_t *xs = (uint32_t *)xs_raw; /* [pass groups][M][4][XS_WORDS] */
    __shared__ float red[8][NT][4][32];
    const int WK = a.wk, WR = 8 / WK;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wk = warp % WK, wr = warp / WK;
    const int g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x * WR + wr;
    const bool active = tile < a.tiles, second = active && tile >= a.s0.tiles;
    const int lt = second ? tile - a.s0.tiles : tile;
    const uint8_t *q = second ? a.s1.q : a.s0.q;
    const __half *scale = second ? a.s1.scale : a.s0.scale;
    const __half *minv = second ? a.s1.minv : a.s0.minv;
    const int ng = a.ngroups, M = a.M;
    const int rowA = (active ? lt : 0) * 16 + g, rowB = rowA + 8;
    const size_t rowbytes = (size_t)ng * 64;
    const int gb0 = blockIdx.y * a.gpb, gb1 = min(ng, gb0 + a.gpb), PG = WK * GPW;
    const uint8_t *pa = q + (size_t)rowA * rowbytes + t * 16, *pb = pa + 8 * rowbytes;
    const __half *sa = scale + (size_t)rowA * ng, *sb = sa + 8 * ng;
    const __half *ma = ASYM ? minv + (size_t)rowA * ng : nullptr, *mb = ASYM ? ma + 8 * ng : nullptr;
    float acc[NT][4] = {};
    pdl_launch_dependents();

    for (int p0 = gb0; p0 < gb1; p0 += PG) {
        const int my0 = p0 + wk * GPW, myn = max(0, min(GPW, gb1 - my0));
        uint4 wa[GPW], wb[GPW];
        __half2 hs[GPW], hm[GPW];
#pragma unroll
        for (int u = 0; u < GPW; u++) {
            if (active && u < myn) {
                wa[u] = __ldcs((const uint4 *)(pa + (size_t)(my0 + u) * 64));
                wb[u] = __ldcs((const uint4 *)(pb + (size_t)(my0 + u) * 64));
                hs[u] = __halves2half2(sa[my0 + u], sb[my0 + u]);
                if (ASYM)
                    hm[u] = __halves2half2(ma[my0 + u], mb[my0 + u]);
            }
        }
        if (p0 == gb0)
            pdl_wait(); /* x and y belong to the kernels before this one */
        else
            __syncthreads(); /* the previous pass's x is no longer read */
        const int pg = min(PG, gb1 - p0);
        for (int idx = threadIdx.x; idx < pg * M * 64; idx += 256) {
            const int gl = idx / (M * 64), rem = idx - gl * (M * 64);
            const int tok = rem >> 6, wd = rem & 63, tt = wd >> 4, e = wd & 15;
            const int kk = (p0 + gl) * 128 + tt * 32 + 8 * (e >> 2) + (e & 3);
            const float *xr = a.x + (size_t)tok * a.ldx;
            const float lo = kk < a.K ? xr[kk] : 0.0f, hi = kk + 4 < a.K ? xr[kk + 4] : 0.0f;
            xs[((gl * M + tok) * 4 + tt) * XS_WORDS + e] = bf16x2_bits(lo, hi);
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < GPW; u++) {
            if (u >= myn)
                break;
            const int gl = wk * GPW + u;
            uint32_t xb[NT][16];
            float xsum[NT];
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int tok = j * 8 + g;
                xsum[j] = 0.0f;
                if (tok < M) {
                    const uint4 *src = (const uint4 *)(xs + ((gl * M + tok) * 4 + t) * XS_WORDS);
#pragma unroll
                    for (int v = 0; v < 4; v++) {
                        const uint4 w4 = src[v];
                        xb[j][4 * v] = w4.x, xb[j][4 * v + 1] = w4.y, xb[j][4 * v + 2] = w4.z, xb[j][4 * v + 3] = w4.w;
                    }
                    if (ASYM)
#pragma unroll
                        for (int e = 0; e < 16; e++)
                            xsum[j] += __uint_as_float(xb[j][e] << 16) + __uint_as_float(xb[j][e] & 0xffff0000u);
                } else {
#pragma unroll
                    for (int e = 0; e < 16; e++)
                        xb[j][e] = 0;
                }
                if (ASYM) {
                    xsum[j] += __shfl_xor_sync(0xffffffffu, xsum[j], 1);
                    xsum[j] += __shfl_xor_sync(0xffffffffu, xsum[j], 2);
                }
            }
            float c[NT][4] = {};
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
            const float2 sc = __half22float2(hs[u]);
#pragma unroll
            for (int j = 0; j < NT; j++) {
                if (ASYM) {
                    /* Σx of tokens 2t and 2t+1 sits in lanes (2t)*4 and (2t+1)*4 */
                    const float2 mn = __half22float2(hm[u]);
                    const float x0 = __shfl_sync(0xffffffffu, xsum[j], (2 * t) * 4);
                    const float x1 = __shfl_sync(0xffffffffu, xsum[j], (2 * t + 1) * 4);
                    acc[j][0] += sc.x * c[j][0] + mn.x * x0;
                    acc[j][1] += sc.x * c[j][1] + mn.x * x1;
                    acc[j][2] += sc.y * c[j][2] + mn.y * x0;
                    acc[j][3] += sc.y * c[j][3] + mn.y * x1;
                } else {
                    acc[j][0] = fmaf(sc.x, c[j][0], acc[j][0]);
                    acc[j][1] = fmaf(sc.x, c[j][1], acc[j][1]);
                    acc[j][2] = fmaf(sc.y, c[j][2], acc[j][2]);
                    acc[j][3] = fmaf(sc.y, c[j][3], acc[j][3]);
                }
            }
        }
    }

    /* the wk warps of a tile, summed in wk order */
    if (WK > 1) {
        if (wk != 0)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    red[warp][j][e][lane] = acc[j][e];
        __syncthreads();
        if (wk == 0)
#pragma unroll 1
            for (int o = 1; o < WK; o++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[j][e] += red[warp + o][j][e][lane];
    }
#if __CUDA_ARCH__ >= 900
    /* the cluster's blocks (K ranges), summed by rank 0 in rank order; a
     * warp with wk == 0 puts its sum in its own red slot, which no warp of
     * the block reads */
    if (gridDim.y > 1) {
        cg::cluster_group cl = cg::this_cluster();
        if (wk == 0)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    red[warp][j][e][lane] = acc[j][e];
        cl.sync();
        const unsigned rank = cl.block_rank();
        if (rank == 0 && wk == 0)
#pragma unroll 1
            for (unsigned r = 1; r < cl.num_blocks(); r++) {
                const float *other = cl.map_shared_rank(&red[warp][0][0][0], r);
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[j][e] += other[(j * 4 + e) * 32 + lane];
            }
        cl.sync(); /* the other blocks' shared memory must outlive rank 0's reads */
        if (rank != 0)
            return;
    }
#endif
    if (wk == 0 && active) {
        const int N = second ? a.s1.N : a.s0.N;
        float *y = second ? a.s1.y : a.s0.y;
        const size_t ldy = second ? a.s1.ldy : a.s0.ldy;
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = e < 2 ? rowA : rowB;
                const int tok = j * 8 + 2 * t + (e & 1);
                if (row < N && tok < M) {
                    float *yp = y + (size_t)tok * ldy + row;
                    *yp = a.accumulate ? *yp + acc[j][e] : acc[j][e];
                }
            }
    }
}

static size_t gemv_xs_bytes(int wk, int gpw, int M)
{
    return (size_t)wk * gpw * M * 4 * XS_WORDS * 4;
}

/* The launch shape for `tiles` x `ngroups` of work and M tokens. Measured
 * on the H100 (docs/CUDA.md) over every (wk, groups per warp, k_blocks):
 * for one token, aim at 2 blocks of 8 warps per SM (1 for large matrices,
 * where fewer, longer warps won) and split K (in the block first, then over
 * a cluster) only as far as that needs; for more tokens, one warp per tile
 * with 4 groups at a time and K split over the cluster while the blocks do
 * not cover the SMs. Without clusters (before Hopper) K stays in the block. */
static void gemv_pick(const mp_cuda_ctx *ctx, int tiles, int ngroups, int M, mp_cuda_gemv_cfg *c)
{
    const long S = ctx->sm_count;
    const long units = (long)tiles * ngroups;
    int wk, gpw, kb;
    if (M == 1) {
        const long warps = (units > 16 * 8 * S ? 1 : 2) * 8 * S, want = (units + warps - 1) / warps;
        gpw = want <= 2 ? 2 : want <= 4 ? 4 : 8;
        const long fneed = (ngroups + gpw - 1) / gpw, fwant = (warps + tiles - 1) / tiles;
        const int f = (int)(fneed < fwant ? fneed : fwant);
        wk = 1;
        while (wk * 2 <= (f < 8 ? f : 8))
            wk *= 2;
        kb = (f + wk - 1) / wk;
    } else {
        wk = 1, gpw = 4;
        const long bx = (tiles + 7) / 8;
        kb = bx >= S ? 1 : (int)((4 * S + bx - 1) / bx);
    }
    if (kb > (ngroups + gpw * wk - 1) / (gpw * wk))
        kb = (ngroups + gpw * wk - 1) / (gpw * wk);
    if (kb > 8)
        kb = 8;
    if (kb < 1 || !mp_cuda_is_hopper(ctx))
        kb = 1;
    while (gemv_xs_bytes(wk, gpw, M) > GEMV_XS_MAX && (gpw > 2 || wk > 1)) {
        if (gpw > 2)
            gpw /= 2;
        else
            wk /= 2;
    }
    c->k_warps = wk, c->groups_per_warp = gpw, c->k_blocks = kb, c->pdl = -1;
}

template <int GPW, int NT>
static cudaError_t gemv_launch_t(mp_cuda_ctx *ctx, const gemv_args &a, bool asym, int kb, bool pdl)
{
    const int WR = 8 / a.wk;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((a.tiles + WR - 1) / WR), (unsigned)kb, 1);
    cfg.blockDim = dim3(256, 1, 1);
    cfg.dynamicSmemBytes = gemv_xs_bytes(a.wk, GPW, a.M);
    cfg.stream = ctx->stream;
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (kb > 1) {
        at[n].id = cudaLaunchAttributeClusterDimension;
        at[n].val.clusterDim.x = 1;
        at[n].val.clusterDim.y = (unsigned)kb;
        at[n].val.clusterDim.z = 1;
        n++;
    }
    if (pdl) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    cfg.attrs = at;
    cfg.numAttrs = n;
    if (asym)
        return cudaLaunchKernelEx(&cfg, gemv_int4_kernel<GPW, NT, true>, a);
    return cudaLaunchKernelEx(&cfg, gemv_int4_kernel<GPW, NT, false>, a);
}

template <int NT>
static cudaError_t gemv_launch_nt(mp_cuda_ctx *ctx, const gemv_args &a, bool asym, int gpw, int kb, bool pdl)
{
    switch (gpw) {
    case 2: return gemv_launch_t<2, NT>(ctx, a, asym, kb, pdl);
    case 4: return gemv_launch_t<4, NT>(ctx, a, asym, kb, pdl);
    default: return gemv_launch_t<8, NT>(ctx, a, asym, kb, pdl);
    }
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

static void gemv_seg_make(const int4_view *v, float *y, size_t ldy, gemv_seg *s)
{
    s->q = v->q;
    s->scale = v->scale;
    s->minv = v->minv;
    s->y = y;
    s->ldy = ldy;
    s->N = v->N;
    s->tiles = v->Np / 16;
}

/* One GEMV launch over one weight (v1 == NULL) or two that share x and k. */
static int run_gemv(mp_cuda_ctx *ctx, const mp_cuda_int4 *w0, const int4_view *v0, float *y0, size_t ldy0,
                    const int4_view *v1, float *y1, size_t ldy1, const float *x, size_t ldx,
                    uint32_t m, bool accumulate, const mp_cuda_gemv_cfg *cfg, mp_error *err)
{
    if (!mp_cuda_aligned(x, 16) || ldx % 4)
        return mp_cuda_bad_arg(err, "linear_int4", "x must be 16-byte aligned with a stride that is a multiple of 4");
    gemv_args a = {};
    gemv_seg_make(v0, y0, ldy0, &a.s0);
    if (v1)
        gemv_seg_make(v1, y1, ldy1, &a.s1);
    a.tiles = a.s0.tiles + (v1 ? a.s1.tiles : 0);
    a.K = v0->K;
    a.ngroups = v0->ngroups;
    a.x = x;
    a.ldx = ldx;
    a.M = (int)m;
    a.accumulate = accumulate ? 1 : 0;
    mp_cuda_gemv_cfg c;
    gemv_pick(ctx, a.tiles, a.ngroups, a.M, &c);
    if (cfg) {
        if (cfg->k_warps)
            c.k_warps = cfg->k_warps;
        if (cfg->groups_per_warp)
            c.groups_per_warp = cfg->groups_per_warp;
        if (cfg->k_blocks)
            c.k_blocks = cfg->k_blocks;
        c.pdl = cfg->pdl;
    }
    if ((c.k_warps != 1 && c.k_warps != 2 && c.k_warps != 4 && c.k_warps != 8) ||
        (c.groups_per_warp != 2 && c.groups_per_warp != 4 && c.groups_per_warp != 8) || c.k_blocks < 1 ||
        c.k_blocks > 8 || (c.k_blocks > 1 && !mp_cuda_is_hopper(ctx)))
        return mp_cuda_bad_arg(err, "linear_int4", "GEMV configuration out of range");
    if (gemv_xs_bytes(c.k_warps, c.groups_per_warp, a.M) > GEMV_XS_MAX)
        return mp_cuda_bad_arg(err, "linear_int4", "GEMV configuration stages too much x for its token count");
    a.wk = c.k_warps;
    a.gpb = (a.ngroups + c.k_blocks - 1) / c.k_blocks;
    const int kb = (a.ngroups + a.gpb - 1) / a.gpb; /* no block without groups */
    const bool pdl = c.pdl < 0 ? ctx->pdl : c.pdl > 0 && mp_cuda_is_hopper(ctx);
    const bool asym = w0->asym;
    cudaError_t e;
    if (m <= 8)
        e = gemv_launch_nt<1>(ctx, a, asym, c.groups_per_warp, kb, pdl);
    else if (m <= 16)
        e = gemv_launch_nt<2>(ctx, a, asym, c.groups_per_warp, kb, pdl);
    else
        e = gemv_launch_nt<4>(ctx, a, asym, c.groups_per_warp, kb, pdl);
    if (e != cudaSuccess)
        return mp_cuda_fail(err, e, "linear_int4 (gemv)");
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
                                float *y, size_t ldy, bool accumulate, int path, const mp_cuda_gemv_cfg *gemv,
                                mp_error *err)
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
        return run_gemv(ctx, w, &v, y, ldy, NULL, NULL, 0, x, ldx, m, accumulate, gemv, err);
    }
    bool fused = path == MP_CUDA_GEMM_FUSED || (path == MP_CUDA_GEMM_AUTO && auto_fused(ctx, &v, m));
    return run_gemm(ctx, w, &v, x, ldx, m, y, ldy, accumulate, fused, err);
}

int mp_cuda_linear_int4(mp_cuda_ctx *ctx, const mp_cuda_int4 *w, const float *x, size_t ldx, uint32_t m, float *y,
                        size_t ldy, bool accumulate, mp_error *err)
{
    return mp_cuda_linear_int4_variant(ctx, w, x, ldx, m, y, ldy, accumulate, m <= 32 ? -1 : (int)ctx->gemm_path,
                                       NULL, err);
}

int mp_cuda_linear_int4_pair_variant(mp_cuda_ctx *ctx, const mp_cuda_int4 *w0, float *y0, size_t ldy0,
                                     const mp_cuda_int4 *w1, float *y1, size_t ldy1, const float *x, size_t ldx,
                                     uint32_t m, bool accumulate, const mp_cuda_gemv_cfg *gemv, mp_error *err)
{
    if (m == 0)
        return MP_OK;
    int4_view v0 = {}, v1 = {};
    int rc = int4_view_make(w0, &v0, err);
    if (!rc)
        rc = int4_view_make(w1, &v1, err);
    if (rc)
        return rc;
    if (m > 32 || w0->k != w1->k || w0->asym != w1->asym) {
        if ((rc = mp_cuda_linear_int4(ctx, w0, x, ldx, m, y0, ldy0, accumulate, err)))
            return rc;
        return mp_cuda_linear_int4(ctx, w1, x, ldx, m, y1, ldy1, accumulate, err);
    }
    return run_gemv(ctx, w0, &v0, y0, ldy0, &v1, y1, ldy1, x, ldx, m, accumulate, gemv, err);
}

int mp_cuda_linear_int4_pair(mp_cuda_ctx *ctx, const mp_cuda_int4 *w0, float *y0, size_t ldy0, const mp_cuda_int4 *w1,
                             float *y1, size_t ldy1, const float *x, size_t ldx, uint32_t m, bool accumulate,
                             mp_error *err)
{
    return mp_cuda_linear_int4_pair_variant(ctx, w0, y0, ldy0, w1, y1, ldy1, x, ldx, m, accumulate, NULL, err);
}

void mp_cuda_set_pdl(mp_cuda_ctx *ctx, bool on)
{
    ctx->pdl = on && mp_cuda_is_hopper(ctx);
}
