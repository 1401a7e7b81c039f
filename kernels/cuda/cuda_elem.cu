/* Small kernels: RMSNorm, rope, silu·mul, add, conversions, embedding
 * gather, KV-cache append. All memory-bound and simple: one thread per
 * element (grid-stride) or one block per row. */
#include "mp_cuda_internal.h"

static unsigned grid_for(size_t total, unsigned block)
{
    size_t g = (total + block - 1) / block;
    if (g > 65535u * 16u) /* grid-stride loops cover the rest */
        g = 65535u * 16u;
    return g ? (unsigned)g : 1u;
}

__device__ __forceinline__ float load_w(const float *w, int i)
{
    return w[i];
}

__device__ __forceinline__ float load_w(const __nv_bfloat16 *w, int i)
{
    return __bfloat162float(w[i]);
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread
 * gets the result. */
__device__ float block_sum(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        float s = lane < nw ? part[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            total = s;
    }
    __syncthreads();
    return total;
}

template <typename WT>
__global__ void __launch_bounds__(256) rmsnorm_kernel(const float *x, size_t ldx, float *y, size_t ldy, int n,
                                                      const WT *w, float eps)
{
    pdl_launch_dependents(); /* the GEMV after a norm may load its weights already */
    const float *xr = x + (size_t)blockIdx.x * ldx;
    float *yr = y + (size_t)blockIdx.x * ldy;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss);
    float r = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = xr[i] * r * load_w(w, i);
}

int mp_cuda_rmsnorm(mp_cuda_ctx *ctx, const float *x, size_t ldx, float *y, size_t ldy, uint32_t m, uint32_t n,
                    const void *w, mp_cuda_dtype wtype, float eps, mp_error *err)
{
    if (m == 0)
        return MP_OK;
    if (n == 0 || m > 0x7fffffffu)
        return mp_cuda_bad_arg(err, "rmsnorm", "bad shape");
    if (wtype == MP_CUDA_F32)
        rmsnorm_kernel<float><<<m, 256, 0, ctx->stream>>>(x, ldx, y, ldy, (int)n, (const float *)w, eps);
    else
        rmsnorm_kernel<__nv_bfloat16><<<m, 256, 0, ctx->stream>>>(x, ldx, y, ldy, (int)n, (const __nv_bfloat16 *)w,
                                                                   eps);
    return mp_cuda_launch_check(err, "rmsnorm");
}

__global__ void rope_kernel(float *x, int m, int heads, size_t ld_tok, size_t ld_head, int half,
                            const float *cos_tab, const float *sin_tab, const int32_t *d_pos0)
{
    const int pos0 = *d_pos0;
    size_t total = (size_t)m * heads * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(idx % half);
        size_t row = idx / half;
        int h = (int)(row % heads);
        int t = (int)(row / heads);
        float *v = x + (size_t)t * ld_tok + (size_t)h * ld_head + 2 * j;
        size_t tab = (size_t)(pos0 + t) * half + j;
        float c = cos_tab[tab], s = sin_tab[tab];
        float a = v[0], b = v[1];
        v[0] = a * c - b * s;
        v[1] = b * c + a * s;
    }
}

int mp_cuda_rope(mp_cuda_ctx *ctx, float *x, uint32_t m, uint32_t heads, size_t ld_tok, size_t ld_head,
                 uint32_t rope_dim, const float *cos_tab, const float *sin_tab, const int32_t *d_pos0, mp_error *err)
{
    if (m == 0 || heads == 0)
        return MP_OK;
    if (rope_dim == 0 || rope_dim % 2)
        return mp_cuda_bad_arg(err, "rope", "rope_dim must be even and > 0");
    size_t total = (size_t)m * heads * (rope_dim / 2);
    rope_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>(x, (int)m, (int)heads, ld_tok, ld_head,
                                                              (int)(rope_dim / 2), cos_tab, sin_tab, d_pos0);
    return mp_cuda_launch_check(err, "rope");
}

__global__ void silu_mul_kernel(const float *gate, size_t ldg, const float *up, size_t ldu, float *out, size_t ldo,
                                int m, int n)
{
    pdl_launch_dependents(); /* as in rmsnorm: the down GEMV follows */
    size_t total = (size_t)m * n;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t i = idx / n, j = idx % n;
        float g = gate[i * ldg + j];
        out[i * ldo + j] = g / (1.0f + __expf(-g)) * up[i * ldu + j];
    }
}

int mp_cuda_silu_mul(mp_cuda_ctx *ctx, const float *gate, size_t ldg, const float *up, size_t ldu, float *out,
                     size_t ldo, uint32_t m, uint32_t n, mp_error *err)
{
    if (m == 0 || n == 0)
        return MP_OK;
    size_t total = (size_t)m * n;
    silu_mul_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>(gate, ldg, up, ldu, out, ldo, (int)m, (int)n);
    return mp_cuda_launch_check(err, "silu_mul");
}

__global__ void add_kernel(float *y, const float *x, size_t count)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

int mp_cuda_add(mp_cuda_ctx *ctx, float *y, const float *x, size_t count, mp_error *err)
{
    if (!count)
        return MP_OK;
    add_kernel<<<grid_for(count, 256), 256, 0, ctx->stream>>>(y, x, count);
    return mp_cuda_launch_check(err, "add");
}

__global__ void f32_to_bf16_kernel(const float *x, __nv_bfloat16 *y, size_t count)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16 *x, float *y, size_t count)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

int mp_cuda_f32_to_bf16(mp_cuda_ctx *ctx, const float *x, uint16_t *y, size_t count, mp_error *err)
{
    if (!count)
        return MP_OK;
    f32_to_bf16_kernel<<<grid_for(count, 256), 256, 0, ctx->stream>>>(x, (__nv_bfloat16 *)y, count);
    return mp_cuda_launch_check(err, "f32_to_bf16");
}

int mp_cuda_bf16_to_f32(mp_cuda_ctx *ctx, const uint16_t *x, float *y, size_t count, mp_error *err)
{
    if (!count)
        return MP_OK;
    bf16_to_f32_kernel<<<grid_for(count, 256), 256, 0, ctx->stream>>>((const __nv_bfloat16 *)x, y, count);
    return mp_cuda_launch_check(err, "bf16_to_f32");
}

__global__ void convert_rows_kernel(const float *x, size_t ldx, __nv_bfloat16 *y, size_t ldy, int rows, int cols,
                                    int cols_pad)
{
    size_t total = (size_t)rows * cols_pad;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t i = idx / cols_pad, j = idx % cols_pad;
        y[i * ldy + j] = __float2bfloat16_rn(j < (size_t)cols ? x[i * ldx + j] : 0.0f);
    }
}

int mp_cuda_convert_rows(mp_cuda_ctx *ctx, const float *x, size_t ldx, __nv_bfloat16 *y, size_t ldy,
                         uint32_t rows, uint32_t cols, uint32_t cols_pad, mp_error *err)
{
    size_t total = (size_t)rows * cols_pad;
    if (!total)
        return MP_OK;
    convert_rows_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>(x, ldx, y, ldy, (int)rows, (int)cols,
                                                                      (int)cols_pad);
    return mp_cuda_launch_check(err, "convert_rows");
}

__global__ void embed_kernel(const __nv_bfloat16 *table, int rows, int n, const int32_t *ids, int m, float *out,
                             size_t ldo)
{
    size_t total = (size_t)m * n;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t i = idx / n, j = idx % n;
        int id = ids[i];
        /* an id outside the table gives zeros rather than a wild read */
        out[i * ldo + j] = (id >= 0 && id < rows) ? __bfloat162float(table[(size_t)id * n + j]) : 0.0f;
    }
}

int mp_cuda_embed_bf16(mp_cuda_ctx *ctx, const uint16_t *table, uint32_t rows, uint32_t n, const int32_t *d_ids,
                       uint32_t m, float *out, size_t ldo, mp_error *err)
{
    size_t total = (size_t)m * n;
    if (!total)
        return MP_OK;
    embed_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>((const __nv_bfloat16 *)table, (int)rows, (int)n,
                                                               d_ids, (int)m, out, ldo);
    return mp_cuda_launch_check(err, "embed");
}

__global__ void kv_append_kernel(__nv_bfloat16 *cache, int kv_lora, int rope, const float *latent, size_t ld_lat,
                                 const float *k_pe, size_t ld_pe, int m, const int32_t *d_pos0)
{
    const int pos0 = *d_pos0;
    const int width = kv_lora + rope;
    size_t total = (size_t)m * width;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(idx % width);
        size_t t = idx / width;
        float v = j < kv_lora ? latent[t * ld_lat + j] : k_pe[t * ld_pe + (j - kv_lora)];
        cache[((size_t)pos0 + t) * width + j] = __float2bfloat16_rn(v);
    }
}

int mp_cuda_kv_append(mp_cuda_ctx *ctx, uint16_t *cache, uint32_t kv_lora, uint32_t rope, const float *latent,
                      size_t ld_lat, const float *k_pe, size_t ld_pe, uint32_t m, const int32_t *d_pos0,
                      mp_error *err)
{
    size_t total = (size_t)m * (kv_lora + rope);
    if (!total)
        return MP_OK;
    kv_append_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>((__nv_bfloat16 *)cache, (int)kv_lora, (int)rope,
                                                                   latent, ld_lat, k_pe, ld_pe, (int)m, d_pos0);
    return mp_cuda_launch_check(err, "kv_append");
}
