/* bench_cuda: measures, in one run, the GPU's copy ceilings and the kernels of
 * kernels/cuda at DeepSeek-V3 shapes (and V2-Lite's q and kv_a, which it pairs).
 *   - device-to-device copy bandwidth (cudaMemcpy D2D) and pinned H2D,
 *   - the int4 GEMV (M = 1) on the attention / shared-expert projections, as
 *     effective weight-read bandwidth and its ratio to the D2D figure,
 *   - the int4 GEMM at M = 512 and 2048 in TFLOP/s (both paths),
 *   - MLA decode attention (128 heads, kv_lora 512, rope 64) at T = 1k/4k/16k,
 *   - one V3 layer's decode-step GPU work replayed as a CUDA Graph,
 *   - uploads from a MAP_SHARED file mapping in the page cache (how the
 *     runner uploads its GPU section) against pinned H2D.
 * Weights are rotated over enough copies to exceed the L2 cache; every timed
 * sequence is captured in a graph and replayed (median of the replays).
 * Usage: bench_cuda [--quick] */
#include <cuda_runtime.h> /* the raw calls of the one-range upload comparison only */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_cuda.h"
#include "mp_num.h"
#include "mp_perf.h"
#include "test_rand.h"

static mp_error err;
static mp_cuda_ctx *ctx;
static mp_cuda_timer *timer;
static bool quick;

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MP_OK) {                                                                        \
            fprintf(stderr, "bench_cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, err.msg);    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static mp_rng rng = {0x243f6a8885a308d3ull};

static uint64_t rng_u64(void)
{
    return mp_rng_u64(&rng);
}

static float rng_f(float lo, float hi)
{
    return lo + (hi - lo) * (float)mp_rng_unif(&rng);
}

static void *dalloc(size_t bytes)
{
    void *d;
    OK(mp_cuda_alloc(ctx, bytes, "bench buffer", &d, &err));
    return d;
}

static void *hmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_cuda: out of host memory\n");
        exit(1);
    }
    return p;
}

/* device buffer of n random f32 in [lo, hi) */
static float *drand_f32(size_t n, float lo, float hi)
{
    float *h = hmalloc(n * 4);
    for (size_t i = 0; i < n; i++)
        h[i] = rng_f(lo, hi);
    float *d = dalloc(n * 4);
    OK(mp_cuda_copy_async(ctx, d, h, n * 4, &err));
    OK(mp_cuda_sync(ctx, &err));
    free(h);
    return d;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* median ms of `reps` replays of g */
static float time_graph(mp_cuda_graph *g, int reps)
{
    float t[64];
    if (reps > 64)
        reps = 64;
    OK(mp_cuda_graph_launch(ctx, g, &err)); /* warm-up */
    OK(mp_cuda_sync(ctx, &err));
    for (int i = 0; i < reps; i++) {
        OK(mp_cuda_timer_start(ctx, timer, &err));
        OK(mp_cuda_graph_launch(ctx, g, &err));
        OK(mp_cuda_timer_stop(ctx, timer, &t[i], &err));
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_float);
    return t[reps / 2];
}

static void section_device(void)
{
    printf("device: %s, %d SMs\n", mp_cuda_device_name(ctx), mp_cuda_sm_count(ctx));
}

/* ---- copies ---------------------------------------------------------------- */

static double bench_copies(void)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = dalloc(bytes), *b = dalloc(bytes);
    OK(mp_cuda_memset_async(ctx, a, 0x3c, bytes, &err));
    mp_cuda_graph *g;
    OK(mp_cuda_graph_begin(ctx, &err));
    for (int i = 0; i < 4; i++)
        OK(mp_cuda_copy_async(ctx, (i & 1) ? a : b, (i & 1) ? b : a, bytes, &err));
    OK(mp_cuda_graph_end(ctx, &g, &err));
    float ms = time_graph(g, 9) / 4;
    mp_cuda_graph_destroy(g);
    mp_cuda_free(ctx, a);
    mp_cuda_free(ctx, b);
    double rw = 2.0 * bytes / (ms * 1e-3) / 1e9;
    printf("D2D copy, 1 GiB: %.3f ms = %.0f GB/s read+written (%.0f GB/s read)\n", ms, rw, rw / 2);

    const size_t hbytes = (size_t)256 << 20;
    void *h, *d = dalloc(hbytes);
    OK(mp_cuda_host_alloc(ctx, hbytes, "bench pinned", &h, &err));
    memset(h, 0x5a, hbytes);
    OK(mp_cuda_graph_begin(ctx, &err));
    OK(mp_cuda_copy_async(ctx, d, h, hbytes, &err));
    OK(mp_cuda_graph_end(ctx, &g, &err));
    float hms = time_graph(g, 7);
    printf("H2D copy from pinned memory, 256 MiB: %.3f ms = %.1f GB/s\n", hms, hbytes / (hms * 1e-3) / 1e9);
    mp_cuda_graph_destroy(g);
    mp_cuda_host_free(ctx, h);
    mp_cuda_free(ctx, d);
    return rw;
}

/* ---- int4 weights ------------------------------------------------------------ */

typedef struct shape {
    const char *name;
    uint32_t n, k;
} shape;

static const shape shapes[] = {
    {"q_a", 1536, 7168},         {"q_b", 24576, 1536},       {"kv_a", 576, 7168}, {"o", 7168, 16384},
    {"shexp gate/up", 2048, 7168}, {"shexp down", 7168, 2048},
    /* V2-Lite has no q_lora: q (16 heads x 192) and kv_a read the normed hidden state */
    {"V2-Lite q", 3072, 2048},     {"V2-Lite kv_a", 576, 2048},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

/* a valid gpu_int4 blob (random nibbles, f16 scales in a real range) on the device */
static void *make_gpu_int4(uint32_t n, uint32_t k, bool asym, size_t *bytes_out)
{
    size_t bytes = mp_cuda_int4_bytes(n, k, asym);
    uint8_t *h = hmalloc(bytes);
    size_t so = mp_cuda_int4_scale_offset(n, k);
    for (size_t i = 0; i < so; i += 8) {
        uint64_t r = rng_u64();
        memcpy(h + i, &r, so - i < 8 ? so - i : 8);
    }
    uint16_t *s = (uint16_t *)(h + so);
    size_t ns = (bytes - so) / 2;
    for (size_t i = 0; i < ns; i++)
        s[i] = mp_f32_to_f16(rng_f(0.002f, 0.03f));
    void *d = dalloc(bytes);
    OK(mp_cuda_copy_async(ctx, d, h, bytes, &err));
    OK(mp_cuda_sync(ctx, &err));
    free(h);
    *bytes_out = bytes;
    return d;
}

/* copies of one weight so that a rotation reads >= 256 MiB (5x the L2) */
typedef struct wset {
    mp_cuda_int4 w[64];
    int count;
    size_t bytes;
} wset;

/* copies of `bytes` that together read >= 256 MiB (2 to 64) */
static int rotation_count(size_t bytes)
{
    size_t count = ((size_t)256 << 20) / bytes + 1;
    return count > 64 ? 64 : count < 2 ? 2 : (int)count;
}

/* calls per timed graph over `count` rotating copies */
static int rotation_calls(int count)
{
    return count * (count < 8 ? 8 : 2);
}

static void wset_make(wset *s, uint32_t n, uint32_t k, bool asym)
{
    size_t bytes;
    void *first = make_gpu_int4(n, k, asym, &bytes);
    s->bytes = bytes;
    s->count = rotation_count(bytes);
    for (int i = 0; i < s->count; i++) {
        void *d = first;
        if (i) {
            d = dalloc(bytes);
            OK(mp_cuda_copy_async(ctx, d, first, bytes, &err));
        }
        s->w[i] = (mp_cuda_int4){d, n, k, asym};
    }
    OK(mp_cuda_sync(ctx, &err));
}

static void wset_free(wset *s)
{
    for (int i = 0; i < s->count; i++)
        mp_cuda_free(ctx, (void *)s->w[i].data);
}

/* µs per call of the int4 product (path -1 = GEMV; b: a second weight
 * sharing the launch, or NULL), rotating over the copies */
static double time_int4(wset *s, wset *b, const float *dx, uint32_t m, float *dy, int path, const mp_cuda_gemv_cfg *cfg,
                        int calls)
{
    mp_cuda_graph *g;
    float *dy1 = dy + (size_t)m * s->w[0].n;
    for (int i = -1; i < calls; i++) { /* i = -1: outside the graph, first-call work */
        if (i == 0)
            OK(mp_cuda_graph_begin(ctx, &err));
        const int c = i < 0 ? 0 : i % s->count;
        if (b)
            OK(mp_cuda_linear_int4_pair_variant(ctx, &s->w[c], dy, s->w[0].n, &b->w[c % b->count], dy1, b->w[0].n,
                                                dx, s->w[0].k, m, false, cfg, &err));
        else
            OK(mp_cuda_linear_int4_variant(ctx, &s->w[c], dx, s->w[0].k, m, dy, s->w[0].n, false, path, cfg, &err));
    }
    OK(mp_cuda_graph_end(ctx, &g, &err));
    float ms = time_graph(g, quick ? 5 : 11);
    mp_cuda_graph_destroy(g);
    return ms * 1e3 / calls;
}

/* µs per D2D copy of `bytes`, rotating over copies of >= 256 MiB in all:
 * the same-size reference for a GEMV that reads `bytes` of weights */
static double time_copy(size_t bytes)
{
    const int count = rotation_count(bytes);
    void *src[64], *dst[64];
    for (int i = 0; i < count; i++) {
        src[i] = dalloc(bytes);
        dst[i] = dalloc(bytes);
        OK(mp_cuda_memset_async(ctx, src[i], 0x3c, bytes, &err));
    }
    const int calls = rotation_calls(count);
    mp_cuda_graph *g;
    OK(mp_cuda_graph_begin(ctx, &err));
    for (int i = 0; i < calls; i++)
        OK(mp_cuda_copy_async(ctx, dst[i % count], src[i % count], bytes, &err));
    OK(mp_cuda_graph_end(ctx, &g, &err));
    float ms = time_graph(g, quick ? 5 : 11);
    mp_cuda_graph_destroy(g);
    for (int i = 0; i < count; i++) {
        mp_cuda_free(ctx, src[i]);
        mp_cuda_free(ctx, dst[i]);
    }
    return ms * 1e3 / calls;
}

/* whether a GEMV variant runs at all on this shape (the whole-tile kernel
 * has limits), without timing it */
static bool gemv_variant_ok(wset *s, wset *b, const float *dx, float *dy, const mp_cuda_gemv_cfg *cfg)
{
    mp_error e = {0};
    float *dy1 = dy + s->w[0].n;
    int rc = b ? mp_cuda_linear_int4_pair_variant(ctx, &s->w[0], dy, s->w[0].n, &b->w[0], dy1, b->w[0].n, dx,
                                                  s->w[0].k, 1, false, cfg, &e)
               : mp_cuda_linear_int4_variant(ctx, &s->w[0], dx, s->w[0].k, 1, dy, s->w[0].n, false, -1, cfg, &e);
    OK(mp_cuda_sync(ctx, &err));
    return rc == MP_OK;
}

static void gemv_row(const char *name, uint32_t n, uint32_t k, wset *s, wset *b, double d2d, const float *dx,
                     float *dy)
{
    const size_t bytes = s->bytes + (b ? b->bytes : 0);
    const int calls = rotation_calls(b && b->count < s->count ? b->count : s->count);
    const mp_cuda_gemv_cfg reg = {0, 0, 0, 0, -1}, reg_pdl = {0, 0, 0, 1, -1}, tile_warp = {0, 0, 0, 1, 1},
                           tile_block = {0, 0, 0, 1, 2}, heur = {0, 0, 0, -1, 0};
    const double t0 = time_int4(s, b, dx, 1, dy, -1, &reg, calls);
    const double t1 = time_int4(s, b, dx, 1, dy, -1, &reg_pdl, calls);
    const bool tile_ok = gemv_variant_ok(s, b, dx, dy, &tile_warp);
    const double t3 = tile_ok ? time_int4(s, b, dx, 1, dy, -1, &tile_warp, calls) : 0;
    const double t4 = tile_ok ? time_int4(s, b, dx, 1, dy, -1, &tile_block, calls) : 0;
    const double th = time_int4(s, b, dx, 1, dy, -1, &heur, calls);
    const double tc = time_copy(bytes);
    double t2 = 0; /* the same products as two launches (pairs only) */
    if (b)
        t2 = time_int4(s, NULL, dx, 1, dy, -1, &heur, calls) + time_int4(b, NULL, dx, 1, dy, -1, &heur, calls);
    const double gbs = bytes / (th * 1e-6) / 1e9;
    char tile[40] = "      -       -";
    if (t3 > 0)
        snprintf(tile, sizeof tile, "%7.2f %7.2f", t3, t4);
    printf("%-15s %6u %6u %8.2f | %7.2f %7.2f %s | %7.2f %7.0f %6.0f%% | %7.2f %6.0f%%\n", name, n, k, bytes / 1e6, t0,
           t1, tile, th, gbs, 100.0 * gbs / d2d, tc, 100.0 * tc / th);
    if (b)
        printf("%-15s (as two launches, heuristic: %.2f us)\n", "", t2);
}

static void bench_gemv(double d2d)
{
    printf("\nint4 GEMV (gpu_int4, sym), M = 1, weights rotated over >= 256 MiB of copies, graph replay. Kernels: reg = "
           "the register-loading GEMV\n(its heuristic shape) without and with programmatic dependent launch (PDL: each "
           "GEMV's weight loads overlap the end\nof the one before); tile = the whole-tile prefetch GEMV (cp.async.bulk into "
           "shared memory) with PDL, copies per warp / per block,\n'-' where it does not fit; heur = what the heuristic picks (timed again), its GB/s "
           "and %% of the D2D bandwidth; copy = a D2D cudaMemcpy of the same byte count\nin the same kind of graph (its "
           "time as a %% of heur's):\n");
    printf("%-15s %6s %6s %8s | %-23s | %-22s | %-14s\n", "shape", "N", "K", "MB", "us: reg / reg PDL / tile warp / block",
           "heur us  GB/s  of D2D", "copy us  of GEMV");
    float *dx = drand_f32(16384 * 32, -1, 1);
    float *dy = dalloc((size_t)32768 * 32 * 4);
    for (size_t i = 0; i < NSHAPES; i++) {
        wset s;
        wset_make(&s, shapes[i].n, shapes[i].k, false);
        gemv_row(shapes[i].name, shapes[i].n, shapes[i].k, &s, NULL, d2d, dx, dy);
        if (!quick && (i == 1 || i == 3)) {
            const uint32_t ms[] = {2, 4, 8, 16, 32};
            const int calls = rotation_calls(s.count);
            printf("    %s at M =", shapes[i].name);
            for (size_t j = 0; j < 5; j++)
                printf(" %u: %.1f us;", ms[j], time_int4(&s, NULL, dx, ms[j], dy, -1, NULL, calls));
            printf("\n");
        }
        if (i == 3) { /* asym costs the same bytes plus the mins */
            wset a;
            wset_make(&a, shapes[i].n, shapes[i].k, true);
            const int calls = rotation_calls(a.count);
            double tasym = time_int4(&a, NULL, dx, 1, dy, -1, NULL, calls);
            printf("    %s int4_asym M=1: %.2f us = %.0f GB/s\n", shapes[i].name, tasym,
                   a.bytes / (tasym * 1e-6) / 1e9);
            wset_free(&a);
        }
        wset_free(&s);
    }
    /* the pairs the runner launches together */
    const struct { const char *name; uint32_t n0, n1, k; } pairs[] = {
        {"q_a | kv_a", 1536, 576, 7168}, {"shexp gate|up", 2048, 2048, 7168}, {"V2L q | kv_a", 3072, 576, 2048}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        wset a, b;
        wset_make(&a, pairs[i].n0, pairs[i].k, false);
        wset_make(&b, pairs[i].n1, pairs[i].k, false);
        gemv_row(pairs[i].name, pairs[i].n0 + pairs[i].n1, pairs[i].k, &a, &b, d2d, dx, dy);
        if (!quick && i == 0) {
            const uint32_t ms[] = {2, 4, 8, 16, 32};
            const int calls = rotation_calls(a.count < b.count ? a.count : b.count);
            printf("    %s at M =", pairs[i].name);
            for (size_t j = 0; j < 5; j++)
                printf(" %u: %.1f us;", ms[j], time_int4(&a, &b, dx, ms[j], dy, -1, NULL, calls));
            printf("\n");
        }
        wset_free(&a);
        wset_free(&b);
    }
    mp_cuda_free(ctx, dx);
    mp_cuda_free(ctx, dy);
}

static void bench_gemm(void)
{
    printf("\nint4 GEMM (sym), TFLOP/s = 2*M*N*K / time; cublas = dequantize to bf16 + cuBLAS, fused = mma.sync kernel:\n");
    printf("%-14s %6s %6s | %-19s | %-19s\n", "shape", "N", "K", "M=512 cublas/fused", "M=2048 cublas/fused");
    float *dx = drand_f32((size_t)2048 * 16384, -1, 1);
    float *dy = dalloc((size_t)2048 * 24576 * 4);
    for (size_t i = 0; i < NSHAPES; i++) {
        wset s;
        wset_make(&s, shapes[i].n, shapes[i].k, false);
        printf("%-14s %6u %6u |", shapes[i].name, shapes[i].n, shapes[i].k);
        const uint32_t ms[] = {512, 2048};
        for (int j = 0; j < 2; j++) {
            for (int path = 0; path <= 1; path++) {
                double us = time_int4(&s, NULL, dx, ms[j], dy, path, NULL, 2);
                printf(" %8.1f", 2.0 * ms[j] * shapes[i].n * shapes[i].k / (us * 1e-6) / 1e12);
            }
            printf(" |");
        }
        printf("\n");
        wset_free(&s);
    }
    /* the ceiling: a bf16 weight through cuBLAS (x conversion included) */
    const uint32_t n = 7168, k = 16384, m = 2048;
    uint16_t *dw = dalloc((size_t)n * k * 2);
    float *tmp = drand_f32((size_t)n * k / 2, -0.05f, 0.05f);
    OK(mp_cuda_f32_to_bf16(ctx, tmp, dw, (size_t)n * k / 2, &err));
    OK(mp_cuda_f32_to_bf16(ctx, tmp, dw + (size_t)n * k / 2, (size_t)n * k / 2, &err));
    mp_cuda_graph *g;
    OK(mp_cuda_graph_begin(ctx, &err));
    OK(mp_cuda_linear_bf16(ctx, dw, n, k, dx, k, m, dy, n, false, &err));
    OK(mp_cuda_graph_end(ctx, &g, &err));
    float ms = time_graph(g, 5);
    printf("bf16 weights + cuBLAS (o shape, M=2048): %.1f TFLOP/s\n", 2.0 * m * n * k / (ms * 1e-3) / 1e12);
    mp_cuda_graph_destroy(g);
    mp_cuda_free(ctx, tmp);
    mp_cuda_free(ctx, dw);
    mp_cuda_free(ctx, dx);
    mp_cuda_free(ctx, dy);
}

/* ---- MLA decode ---------------------------------------------------------------- */

static void bench_mla(void)
{
    printf("\nMLA decode attention, 128 heads, kv_lora 512 + rope 64, bf16 cache (8 layers' caches rotated):\n");
    const uint32_t H = 128, L = 512, P = 64, cap = 16384, layers = 8;
    const size_t cache_elems = (size_t)cap * (L + P);
    float *rnd = drand_f32(cache_elems, -1, 1);
    uint16_t *caches[8];
    for (uint32_t i = 0; i < layers; i++) {
        caches[i] = dalloc(cache_elems * 2);
        OK(mp_cuda_f32_to_bf16(ctx, rnd, caches[i], cache_elems, &err));
    }
    mp_cuda_free(ctx, rnd);
    float *ql = drand_f32(H * L, -2, 2), *qp = drand_f32(H * P, -2, 2), *out = dalloc(H * L * 4);
    int32_t *dpos = dalloc(4);
    const uint32_t Ts[] = {1024, 4096, 16384};
    const uint32_t chunks[] = {0, 32, 64, 256};
    for (int i = 0; i < 3; i++) {
        int32_t pos = (int32_t)Ts[i] - 1;
        OK(mp_cuda_copy_async(ctx, dpos, &pos, 4, &err));
        OK(mp_cuda_sync(ctx, &err));
        for (int v = 0; v < 4; v++) {
            mp_cuda_graph *g;
            OK(mp_cuda_graph_begin(ctx, &err));
            for (uint32_t c = 0; c < 2 * layers; c++) {
                mp_cuda_mla_args a = {H,   L,    P,     1,   ql,    H * L, L, qp, H * P, P, caches[c % layers],
                                      cap, dpos, 0.07f, out, H * L, L};
                OK(mp_cuda_mla_attention_variant(ctx, &a, chunks[v], &err));
            }
            OK(mp_cuda_graph_end(ctx, &g, &err));
            double us = time_graph(g, quick ? 5 : 11) * 1e3 / (2 * layers);
            mp_cuda_graph_destroy(g);
            if (v == 0) {
                double bytes = (double)Ts[i] * (L + P) * 2;
                double flops = 2.0 * H * Ts[i] * (L + P + L);
                printf("T = %5u: %7.1f us  (cache %.1f MB -> %.0f GB/s; %.0f TFLOP/s)", Ts[i], us, bytes / 1e6,
                       bytes / (us * 1e-6) / 1e9, flops / (us * 1e-6) / 1e12);
            } else {
                printf("%s min_chunk %u: %.1f us", v == 1 ? "  | " : "; ", chunks[v], us);
            }
        }
        printf("\n");
    }
    for (uint32_t i = 0; i < layers; i++)
        mp_cuda_free(ctx, caches[i]);
    mp_cuda_free(ctx, ql);
    mp_cuda_free(ctx, qp);
    mp_cuda_free(ctx, out);
    mp_cuda_free(ctx, dpos);
}

/* ---- one V3 layer's decode-step GPU work ------------------------------------------ */

static void bench_layer(void)
{
    const uint32_t hid = 7168, ql = 1536, H = 128, nope = 128, rope = 64, L = 512, vh = 128, E = 256, I = 2048;
    const uint32_t T = 4096, layers = 4;
    printf("\nOne DeepSeek-V3 MoE layer, decode step (M = 1, T = %u), GPU part, %u layers' weights rotated:\n", T,
           layers);
    size_t b;
    mp_cuda_int4 qa[4], qb[4], kva[4], o[4], sg[4], su[4], sd[4];
    uint16_t *wuk[4], *wuv[4], *router[4], *cache[4];
    float *tmp = drand_f32((size_t)H * L * nope, -0.05f, 0.05f);
    for (uint32_t l = 0; l < layers; l++) {
        qa[l] = (mp_cuda_int4){make_gpu_int4(ql, hid, false, &b), ql, hid, false};
        qb[l] = (mp_cuda_int4){make_gpu_int4(H * (nope + rope), ql, false, &b), H * (nope + rope), ql, false};
        kva[l] = (mp_cuda_int4){make_gpu_int4(L + rope, hid, false, &b), L + rope, hid, false};
        o[l] = (mp_cuda_int4){make_gpu_int4(hid, H * vh, false, &b), hid, H * vh, false};
        sg[l] = (mp_cuda_int4){make_gpu_int4(I, hid, false, &b), I, hid, false};
        su[l] = (mp_cuda_int4){make_gpu_int4(I, hid, false, &b), I, hid, false};
        sd[l] = (mp_cuda_int4){make_gpu_int4(hid, I, false, &b), hid, I, false};
        wuk[l] = dalloc((size_t)H * L * nope * 2);
        wuv[l] = dalloc((size_t)H * vh * L * 2);
        router[l] = dalloc((size_t)E * hid * 2);
        cache[l] = dalloc((size_t)T * (L + rope) * 2);
        OK(mp_cuda_f32_to_bf16(ctx, tmp, wuk[l], (size_t)H * L * nope, &err));
        OK(mp_cuda_f32_to_bf16(ctx, tmp, wuv[l], (size_t)H * vh * L, &err));
        OK(mp_cuda_f32_to_bf16(ctx, tmp, router[l], (size_t)E * hid, &err));
        OK(mp_cuda_f32_to_bf16(ctx, tmp, cache[l], (size_t)T * (L + rope), &err));
    }
    mp_cuda_free(ctx, tmp);
    float *norm = drand_f32(hid, 0.5f, 1.5f), *bias = drand_f32(E, -0.1f, 0.1f);
    float *cs = drand_f32((size_t)T * rope / 2, -1, 1), *sn = drand_f32((size_t)T * rope / 2, -1, 1);
    float *res = drand_f32(hid, -1, 1), *xn = dalloc(hid * 4), *qa_o = dalloc(ql * 4);
    float *q = dalloc((size_t)H * (nope + rope) * 4), *kv = dalloc((L + rope) * 4), *qlat = dalloc((size_t)H * L * 4);
    float *olat = dalloc((size_t)H * L * 4), *ov = dalloc((size_t)H * vh * 4), *logits = dalloc(E * 4);
    float *gate = dalloc(I * 4), *up = dalloc(I * 4), *act = dalloc(I * 4), *wts = dalloc(8 * 4);
    int32_t *ids = dalloc(8 * 4), *dpos = dalloc(4);
    int32_t pos = (int32_t)T - 1;
    OK(mp_cuda_copy_async(ctx, dpos, &pos, 4, &err));
    OK(mp_cuda_sync(ctx, &err));
    void *hbuf;
    OK(mp_cuda_host_alloc(ctx, hid * 4 + 64, "bench pinned", &hbuf, &err));
    mp_cuda_router_params rp = {E, 8, 8, 4, 1, 2, true, 2.5f, 0.0f};

    mp_cuda_graph *g;
    OK(mp_cuda_graph_begin(ctx, &err));
    for (uint32_t rep = 0; rep < 2 * layers; rep++) {
        const uint32_t l = rep % layers;
        OK(mp_cuda_rmsnorm(ctx, res, hid, xn, hid, 1, hid, norm, MP_CUDA_F32, 1e-6f, &err));
        OK(mp_cuda_linear_int4_pair(ctx, &qa[l], qa_o, ql, &kva[l], kv, L + rope, xn, hid, 1, false, &err));
        OK(mp_cuda_rmsnorm(ctx, qa_o, ql, qa_o, ql, 1, ql, norm, MP_CUDA_F32, 1e-6f, &err));
        OK(mp_cuda_rmsnorm(ctx, kv, L, kv, L, 1, L, norm, MP_CUDA_F32, 1e-6f, &err));
        OK(mp_cuda_linear_int4(ctx, &qb[l], qa_o, ql, 1, q, H * (nope + rope), false, &err));
        OK(mp_cuda_rope(ctx, q + nope, 1, H, H * (nope + rope), nope + rope, rope, cs, sn, dpos, &err));
        OK(mp_cuda_rope(ctx, kv + L, 1, 1, L + rope, 0, rope, cs, sn, dpos, &err));
        OK(mp_cuda_kv_append(ctx, cache[l], L, rope, kv, L + rope, kv + L, L + rope, 1, dpos, &err));
        OK(mp_cuda_heads_bf16(ctx, wuk[l], H, L, nope, q, H * (nope + rope), nope + rope, 1, qlat, H * L, L, &err));
        mp_cuda_mla_args a = {H, L, rope, 1, qlat, H * L, L, q + nope, H * (nope + rope), nope + rope, cache[l], T,
                              dpos, 0.07f, olat, H * L, L};
        OK(mp_cuda_mla_attention(ctx, &a, &err));
        OK(mp_cuda_heads_bf16(ctx, wuv[l], H, vh, L, olat, H * L, L, 1, ov, H * vh, vh, &err));
        OK(mp_cuda_linear_int4(ctx, &o[l], ov, H * vh, 1, res, hid, true, &err));
        OK(mp_cuda_rmsnorm(ctx, res, hid, xn, hid, 1, hid, norm, MP_CUDA_F32, 1e-6f, &err));
        OK(mp_cuda_gemv_rowmajor(ctx, router[l], MP_CUDA_BF16, E, hid, xn, hid, 1, logits, E, false, &err));
        OK(mp_cuda_router(ctx, &rp, logits, E, bias, 1, ids, wts, &err));
        OK(mp_cuda_copy_async(ctx, hbuf, xn, hid * 4, &err));
        OK(mp_cuda_copy_async(ctx, (char *)hbuf + hid * 4, ids, 32, &err));
        OK(mp_cuda_linear_int4_pair(ctx, &sg[l], gate, I, &su[l], up, I, xn, hid, 1, false, &err));
        OK(mp_cuda_silu_mul(ctx, gate, I, up, I, act, I, 1, I, &err));
        OK(mp_cuda_linear_int4(ctx, &sd[l], act, I, 1, res, hid, true, &err));
    }
    OK(mp_cuda_graph_end(ctx, &g, &err));
    double us = time_graph(g, quick ? 5 : 11) * 1e3 / (2 * layers);
    double wbytes = mp_cuda_int4_bytes(ql, hid, 0) + mp_cuda_int4_bytes(H * (nope + rope), ql, 0) +
                    mp_cuda_int4_bytes(L + rope, hid, 0) + mp_cuda_int4_bytes(hid, H * vh, 0) +
                    2 * mp_cuda_int4_bytes(I, hid, 0) + mp_cuda_int4_bytes(hid, I, 0) +
                    2.0 * H * L * nope * 2 + (double)E * hid * 2 + (double)T * (L + rope) * 2;
    printf("%.1f us per layer (23 launches + 2 D2H copies); %.1f MB read -> %.0f GB/s; x61 layers = %.2f ms/token\n",
           us, wbytes / 1e6, wbytes / (us * 1e-6) / 1e9, us * 61 / 1e3);
    mp_cuda_graph_destroy(g);
    /* the per-head bf16 products and the router logits alone */
    OK(mp_cuda_graph_begin(ctx, &err));
    for (uint32_t rep = 0; rep < 2 * layers; rep++) {
        OK(mp_cuda_heads_bf16(ctx, wuk[rep % layers], H, L, nope, q, H * (nope + rope), nope + rope, 1, qlat, H * L,
                              L, &err));
        OK(mp_cuda_heads_bf16(ctx, wuv[rep % layers], H, vh, L, olat, H * L, L, 1, ov, H * vh, vh, &err));
    }
    OK(mp_cuda_graph_end(ctx, &g, &err));
    us = time_graph(g, quick ? 5 : 11) * 1e3 / (2 * layers);
    printf("  W_UK + W_UV per-head bf16 GEMVs: %.1f us for %.1f MB = %.0f GB/s\n", us, 4.0 * H * L * nope / 1e6,
           4.0 * H * L * nope / (us * 1e-6) / 1e9);
    mp_cuda_graph_destroy(g);
    OK(mp_cuda_graph_begin(ctx, &err));
    for (uint32_t rep = 0; rep < 2 * layers; rep++) {
        OK(mp_cuda_gemv_rowmajor(ctx, router[rep % layers], MP_CUDA_BF16, E, hid, xn, hid, 1, logits, E, false,
                                 &err));
        OK(mp_cuda_router(ctx, &rp, logits, E, bias, 1, ids, wts, &err));
    }
    OK(mp_cuda_graph_end(ctx, &g, &err));
    us = time_graph(g, quick ? 5 : 11) * 1e3 / (2 * layers);
    printf("  router logits (bf16 GEMV %ux%u) + top-k: %.1f us\n", E, hid, us);
    mp_cuda_graph_destroy(g);
    mp_cuda_host_free(ctx, hbuf);
    for (uint32_t l = 0; l < layers; l++) {
        const void *ws[] = {qa[l].data, qb[l].data, kva[l].data, o[l].data, sg[l].data, su[l].data, sd[l].data,
                            wuk[l],     wuv[l],     router[l],   cache[l]};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            mp_cuda_free(ctx, (void *)ws[i]);
    }
    void *bufs[] = {norm, bias, cs, sn, res, xn, qa_o, q, kv, qlat, olat, ov, logits, gate, up, act, wts, ids, dpos};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        mp_cuda_free(ctx, bufs[i]);
}

/* ---- uploads ---------------------------------------------------------------- */

/* A fresh MAP_SHARED read-only mapping of the file, as the runner maps a
 * container: its page-table entries are made by the upload itself. */
static const void *map_file(int fd, size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("bench_cuda: mmap");
        exit(1);
    }
    return p;
}

/* mp_cuda_upload (chunked registration; staged) against registering the
 * whole range at once, which is what mp_cuda_upload did before, and against
 * the pinned H2D rate, from a file in the page cache. */
static void bench_upload(void)
{
    const size_t bytes = quick ? (size_t)512 << 20 : (size_t)2 << 30, block = (size_t)16 << 20;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/bench_cuda_upload.%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    unlink(path); /* the open descriptor keeps it until the process ends */
    uint8_t *h = hmalloc(block);
    for (size_t i = 0; i < block; i++)
        h[i] = (uint8_t)rng_u64();
    for (size_t off = 0; off < bytes; off += block)
        if (write(fd, h, block) != (ssize_t)block) {
            perror("bench_cuda: write");
            exit(1);
        }
    free(h);
    void *d = dalloc(bytes), *pinned = NULL;
    const size_t pbytes = (size_t)256 << 20;
    OK(mp_cuda_host_alloc(ctx, pbytes, "bench pinned", &pinned, &err));
    memset(pinned, 1, pbytes);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = mp_perf_now();
        OK(mp_cuda_copy_async(ctx, d, pinned, pbytes, &err));
        OK(mp_cuda_sync(ctx, &err));
        double gbs = pbytes / (mp_perf_now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    mp_cuda_host_free(ctx, pinned);
    printf("\nUploads of %.2f GiB from a MAP_SHARED file mapping (page cache warm; a fresh mapping each time), "
           "against pinned H2D %.1f GB/s (best of 3, 256 MiB):\n",
           bytes / 1073741824.0, best);
    for (int r = 0; r < (quick ? 1 : 3); r++) {
        mp_cuda_upload_stats st;
        const void *m = map_file(fd, bytes);
        OK(mp_cuda_upload(ctx, d, m, bytes, 0, &st, &err));
        munmap((void *)m, bytes);
        printf("  mp_cuda_upload, %s in %u chunks: %.3f s = %.1f GB/s (%.0f%% of pinned), pinning %.3f s\n",
               st.registered ? "registered" : "staged", st.chunks, st.seconds, bytes / st.seconds / 1e9,
               100.0 * bytes / st.seconds / 1e9 / best, st.pin_seconds);
        m = map_file(fd, bytes);
        double t0 = mp_perf_now();
        cudaError_t e = cudaHostRegister((void *)m, bytes, cudaHostRegisterReadOnly);
        double t1 = mp_perf_now(), t2 = t1, t3 = t1;
        if (e == cudaSuccess) {
            e = cudaMemcpy(d, m, bytes, cudaMemcpyHostToDevice);
            t2 = mp_perf_now();
            cudaHostUnregister((void *)m);
            t3 = mp_perf_now();
        }
        munmap((void *)m, bytes);
        if (e != cudaSuccess)
            printf("  whole range registered at once: %s\n", cudaGetErrorString(e));
        else
            printf("  whole range registered at once: %.3f s = %.1f GB/s (%.0f%% of pinned): register %.3f, copy %.3f, "
                   "unregister %.3f\n",
                   t3 - t0, bytes / (t3 - t0) / 1e9, 100.0 * bytes / (t3 - t0) / 1e9 / best, t1 - t0, t2 - t1, t3 - t2);
        m = map_file(fd, bytes);
        OK(mp_cuda_upload(ctx, d, m, bytes, MP_CUDA_UPLOAD_NO_REGISTER, &st, &err));
        munmap((void *)m, bytes);
        printf("  mp_cuda_upload, staged (forced) in %u chunks: %.3f s = %.1f GB/s (%.0f%% of pinned)\n", st.chunks,
               st.seconds, bytes / st.seconds / 1e9, 100.0 * bytes / st.seconds / 1e9 / best);
    }
    close(fd);
    mp_cuda_free(ctx, d);
}

/* Each section runs in its own process (own CUDA context), under an alarm:
 * one that fails or hangs costs its own numbers only. The parent never
 * touches CUDA (a context does not survive fork). */
static double d2d_gbs;

static void section_copies_gemv(void)
{
    d2d_gbs = bench_copies();
    bench_gemv(d2d_gbs);
}

static void run_section(const char *name, void (*fn)(void), unsigned seconds)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_cuda: fork");
        exit(1);
    }
    if (pid == 0) {
        alarm(seconds);
        OK(mp_cuda_ctx_create(0, (size_t)512 << 20, &ctx, &err));
        OK(mp_cuda_timer_create(ctx, &timer, &err));
        fn();
        mp_cuda_timer_destroy(timer);
        mp_cuda_ctx_destroy(ctx);
        fflush(stdout);
        _exit(0);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFSIGNALED(st))
            printf("[section %s: killed by signal %d%s]\n", name, WTERMSIG(st),
                   WTERMSIG(st) == SIGALRM ? " (time limit)" : "");
        else
            printf("[section %s: failed, exit %d]\n", name, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else {
            fprintf(stderr, "usage: bench_cuda [--quick]\n");
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_section("device", section_device, 30);
    run_section("copies+gemv", section_copies_gemv, 120);
    run_section("mla", bench_mla, 60);
    run_section("layer", bench_layer, 90);
    run_section("gemm", bench_gemm, 120);
    run_section("upload", bench_upload, 120);
    return 0;
}
