/* The routed experts' CPU throughput as the runner runs them, next to what
 * the machine can do, in one run:
 *   - AMX INT8 peak: a pure TDPBSSD loop (no loads) on one thread and on all;
 *   - memory read bandwidth with all threads (64-byte AVX-512 loads);
 *   - DeepSeek-V3 expert shapes (gate/up W[2048, 7168] one K-group, down
 *     W[7168, 2048] K-groups of 256) for M = 1 .. 1024 tokens per expert,
 *     E experts at once, multi-threaded the way mp_fwd_routed_experts cuts
 *     the work: gate/up items of (expert, 256-row slice) computing both
 *     matrices, down items of (expert, 256 hidden rows) over all K-groups;
 *     int8 tera-ops per second and the fraction of the all-thread AMX peak;
 *   - decode (M = 1): the weight bytes streamed per second as a fraction of
 *     the measured read bandwidth (the E experts' 3 matrices, far larger
 *     than the caches, are read once per step).
 *
 * --v1 also measures the first AMX kernel (kern_q8v1_amx.c, what
 * MOEPACK_AMX_KERNEL=v1 selects) in the same process, row by row after the
 * current one, against the same peak.
 *
 * --decode-active A: afterwards, decode steps of A experts each (a V3
 * token's 8) that rotate through all E, which is what the runner's decode
 * reads: A experts' weights once per step, none of them in the caches.
 * --active-m 1,16,...: the rows per expert of those steps (default 1). A
 * prompt step at V3 width gives each of (nearly) all 256 experts
 * steps x 8 / 256 rows (16 for 512 tokens) and reads every weight once:
 * the same streaming with more work per byte.
 * --tunes "ks=8;allkm=64": those steps for each MOEPACK_AMX_TUNE setting in
 * turn, three rounds, in this one process.
 *
 * The header also gives the kernel's 2x2 tile block fed from L1 (every
 * k-step's 4 tile loads, no operand from beyond L1): the ceiling below the
 * no-load peak that any kernel of that shape has. --tile-loads: that loop
 * with 0-4 of its tile loads per k-step, to time the loads.
 *
 * --per-cpu R: instead of the GEMMs, R rounds of the no-load peak and the
 * fed 2x2 loop on one thread pinned to each CPU of the process's affinity
 * mask in turn (no other thread of this process running). On the device
 * the fed loop on one vCPU ran mostly near 85% or near 25% of that vCPU's
 * peak, changing between vCPUs and from one run to the next while the peak
 * stayed put (docs/BENCHMARKS.md): this shows which state the machine is in.
 *
 * --ld-pad B: activation rows K + B bytes apart (default 64, as the runner
 * lays them out: a multiple of 1 KiB would put a tile's 16 rows in few L1
 * sets).
 *
 * --bf16: the same shapes with bf16 experts (amx_bf16, what `convert
 * --cpu-quant bf16` writes), run as the runner runs them: rows already split
 * in two bf16 (hi, lo) for the TDPBF16PS kernel from bf16_split_min_m rows
 * per expert, f32 rows into the AVX-512 kernel below that; flops against
 * the all-thread TDPBF16PS peak. The split kernel multiplies every weight
 * tile by both halves, so half that peak is its ceiling in useful flops.
 * Split rows are mp_bf16_split_ld apart, as the runner's (--ld-pad is for
 * the int8 rows). --bf16-activations (implies --bf16): hi halves only, one
 * tile product per weight tile, as `moepack run --bf16-activations` runs
 * them.
 *
 * usage: bench_amx [--threads N] [--experts E] [--m 1,4,16,...] [--min-time S] [--v1] [--ld-pad B]
 *                  [--decode-active A] [--active-m 1,16,...] [--tunes "SPEC;SPEC"] [--tile-loads] [--per-cpu R]
 *                  [--bf16] [--bf16-activations] */
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_internal.h"
#include "mp_kernels.h"
#include "mp_layout.h"
#include "mp_perf.h"

static double min_time = 0.5;

/* ---- peaks ---------------------------------------------------------------------------- */

/* The AMX peak and the read bandwidth probes are perf/mp_perf.h's (which
 * `moepack bench` runs too): best of 5 each. */

/* ---- experts ---------------------------------------------------------------------------- */

typedef struct expert {
    mp_amx_int8_view gate, up, down;
    mp_amx_bf16_view bgate, bup, bdown; /* --bf16 */
} expert;

static void fill_random(void *p, size_t n, uint64_t seed)
{
    /* int8 weights in [-64, 63]: values do not matter to the speed, but keep
     * the sums far from overflow like real data */
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t per = (n / 8 + nt - 1) / nt, a = per * t, b = a + per < n / 8 ? a + per : n / 8;
        uint64_t s = seed * 0x9e3779b97f4a7c15ull + (uint64_t)t * 0xbf58476d1ce4e5b9ull + 1;
        uint64_t *q = p;
        for (size_t i = a; i < b; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            q[i] = s & 0xbfbfbfbfbfbfbfbfull; /* clears bit 6 of each byte: |v| <= 127, mostly small */
        }
    }
}

/* bf16 values of magnitude 2^-7 .. 2^-6 with random signs and mantissas:
 * finite and normal, as the speed of the tile unit wants nothing else. */
static void fill_random_bf16(void *p, size_t n, uint64_t seed)
{
    fill_random(p, n, seed);
    uint64_t *q = p;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n / 8; i++)
        q[i] = (q[i] & 0x807f807f807f807full) | 0x3c003c003c003c00ull;
}

static void *alloc_bytes(uint64_t bytes)
{
    void *p = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void *alloc_matrix_bf16(const mp_amx_bf16_layout *l, mp_amx_bf16_view *v, uint64_t seed)
{
    void *p = alloc_bytes(l->total_bytes);
    fill_random_bf16(p, l->data_bytes, seed);
    mp_amx_bf16_view_init(l, p, v);
    return p;
}

static void *alloc_matrix(const mp_amx_int8_layout *l, mp_amx_int8_view *v, uint64_t seed)
{
    uint8_t *p = alloc_bytes(l->total_bytes);
    fill_random(p, l->data_bytes, seed);
    float *sc = (float *)(p + l->scale_offset);
    for (uint64_t i = 0; i < l->scale_bytes / 4; i++)
        sc[i] = 1e-3f;
    memset(p + l->wsum_offset, 0, l->wsum_bytes);
    mp_amx_int8_view_init(l, p, v);
    return p;
}

typedef void (*gemm_q8_fn)(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                           uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate);

typedef struct run_ctx {
    gemm_q8_fn gemm_q8;
    expert *ex;
    uint32_t E;
    size_t M;
    int8_t *xq;   /* [E][M][kp_in] */
    float *xs;    /* [E][M] */
    float *g, *u; /* [E][M][I] */
    int8_t *hq;   /* [E][M][kp_down] */
    float *hs;    /* [E][M][S] */
    float *y;     /* [E][M][H] */
    uint32_t H, I, S;
    size_t kp_in, kp_down; /* row strides of xq and hq */
    int threads;
    /* --decode-active: each step runs experts [rot, rot + E) of rot_all[rot_total] */
    expert *rot_all;
    uint32_t rot_total, rot;
    double t_gate_up, t_down; /* rotating steps: time in each phase */
    /* --bf16: the table, and the rows as the runner gives them to it */
    const mp_cpu_kernels *K;
    bool bf16, split;      /* bf16 experts; the split kernel (M >= bf16_split_min_m) */
    uint16_t *xb, *hb;     /* split rows [E][M][ld_xb] / [E][M][ld_hb], lo lo_x / lo_h after hi */
    float *xf;             /* f32 rows [E][M][H] (no split) */
    size_t ld_xb, ld_hb, lo_x, lo_h;
} run_ctx;

/* gate/up items: (expert, slice) computing both matrices' rows of the slice */
static void run_gate_up(run_ctx *c)
{
    const size_t items = (size_t)c->E * c->S;
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->threads)
    for (size_t it = 0; it < items; it++) {
        uint32_t e = (uint32_t)(it / c->S), s = (uint32_t)(it % c->S);
        uint32_t r0 = s * 256, r1 = r0 + 256 < c->I ? r0 + 256 : c->I;
        float *g = c->g + (size_t)e * c->M * c->I, *u = c->u + (size_t)e * c->M * c->I;
        if (c->bf16 && c->split) {
            const uint16_t *xb = c->xb + (size_t)e * c->M * c->ld_xb;
            c->K->gemm_bf16_split(&c->ex[e].bgate, c->M, xb, c->ld_xb, c->lo_x, r0, r1, g, c->I, false);
            c->K->gemm_bf16_split(&c->ex[e].bup, c->M, xb, c->ld_xb, c->lo_x, r0, r1, u, c->I, false);
        } else if (c->bf16) {
            const float *x = c->xf + (size_t)e * c->M * c->H;
            c->K->gemm_bf16_amx(&c->ex[e].bgate, c->M, x, c->H, r0, r1, g, c->I, false);
            c->K->gemm_bf16_amx(&c->ex[e].bup, c->M, x, c->H, r0, r1, u, c->I, false);
        } else {
            const int8_t *xq = c->xq + (size_t)e * c->M * c->kp_in;
            const float *xs = c->xs + (size_t)e * c->M;
            c->gemm_q8(&c->ex[e].gate, c->M, xq, c->kp_in, xs, r0, r1, g, c->I, false);
            c->gemm_q8(&c->ex[e].up, c->M, xq, c->kp_in, xs, r0, r1, u, c->I, false);
        }
    }
}

/* down items: (expert, 256 hidden rows) over all K-groups */
static void run_down(run_ctx *c)
{
    const uint32_t hb = (c->H + 255) / 256;
    const size_t items = (size_t)c->E * hb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->threads)
    for (size_t it = 0; it < items; it++) {
        uint32_t e = (uint32_t)(it / hb), b = (uint32_t)(it % hb);
        uint32_t n0 = b * 256, n1 = n0 + 256 < c->H ? n0 + 256 : c->H;
        float *y = c->y + (size_t)e * c->M * c->H;
        if (c->bf16 && c->split)
            c->K->gemm_bf16_split(&c->ex[e].bdown, c->M, c->hb + (size_t)e * c->M * c->ld_hb, c->ld_hb, c->lo_h, n0,
                                  n1, y, c->H, false);
        else if (c->bf16)
            c->K->gemm_bf16_amx(&c->ex[e].bdown, c->M, c->g + (size_t)e * c->M * c->I, c->I, n0, n1, y, c->H, false);
        else
            c->gemm_q8(&c->ex[e].down, c->M, c->hq + (size_t)e * c->M * c->kp_down, c->kp_down,
                       c->hs + (size_t)e * c->M * c->S, n0, n1, y, c->H, false);
    }
}

static double time_it(void (*fn)(run_ctx *), run_ctx *c)
{
    fn(c); /* warm-up */
    double best = 1e30, t0 = mp_perf_now();
    int reps = 0;
    do {
        double a = mp_perf_now();
        fn(c);
        double dt = mp_perf_now() - a;
        if (dt < best)
            best = dt;
        reps++;
    } while (mp_perf_now() - t0 < min_time || reps < 3);
    return best;
}

static void run_both(run_ctx *c)
{
    run_gate_up(c);
    run_down(c);
}

/* One step of the runner (decode at M = 1, a prompt step at larger M): E
 * experts, the next E of the rot_total at every call, so each step reads
 * weights no earlier step of the last rot_total / E read. */
static void run_both_rotating(run_ctx *c)
{
    c->ex = c->rot_all + c->rot;
    double t0 = mp_perf_now();
    run_gate_up(c);
    double t1 = mp_perf_now();
    run_down(c);
    c->t_gate_up += t1 - t0;
    c->t_down += mp_perf_now() - t1;
    c->rot = (c->rot + c->E) % c->rot_total;
}

/* c's activation and output buffers for c->E experts of c->M rows each,
 * filled as the runner leaves them for the kernels (random int8 rows,
 * scales 1e-2); false when out of memory (run_ctx_free still applies). */
static bool run_ctx_buffers(run_ctx *c)
{
    const size_t rows = (size_t)c->E * c->M;
    c->g = aligned_alloc(64, mp_align_up(rows * c->I * 4, 64));
    c->u = aligned_alloc(64, mp_align_up(rows * c->I * 4, 64));
    c->y = aligned_alloc(64, mp_align_up(rows * c->H * 4, 64));
    if (!c->g || !c->u || !c->y)
        return false;
    if (c->bf16) { /* random bf16 halves: their values do not matter to the speed */
        if (c->split) {
            c->xb = aligned_alloc(64, mp_align_up(rows * c->ld_xb * 2, 64));
            c->hb = aligned_alloc(64, mp_align_up(rows * c->ld_hb * 2, 64));
            if (!c->xb || !c->hb)
                return false;
            fill_random_bf16(c->xb, rows * c->ld_xb * 2, 77);
            fill_random_bf16(c->hb, rows * c->ld_hb * 2, 78);
        } else {
            c->xf = aligned_alloc(64, mp_align_up(rows * c->H * 4, 64));
            if (!c->xf)
                return false;
            for (size_t i = 0; i < rows * c->H; i++)
                c->xf[i] = (float)(i % 17) * 0.01f - 0.08f;
            for (size_t i = 0; i < rows * c->I; i++)
                c->g[i] = (float)(i % 13) * 0.01f - 0.06f;
        }
        return true;
    }
    c->xq = aligned_alloc(64, mp_align_up(rows * c->kp_in, 64));
    c->xs = aligned_alloc(64, mp_align_up(rows * 4 + 64, 64));
    c->hq = aligned_alloc(64, mp_align_up(rows * c->kp_down, 64));
    c->hs = aligned_alloc(64, mp_align_up(rows * c->S * 4 + 64, 64));
    if (!c->xq || !c->xs || !c->hq || !c->hs)
        return false;
    fill_random(c->xq, rows * c->kp_in, 77);
    fill_random(c->hq, rows * c->kp_down, 78);
    for (size_t i = 0; i < rows; i++)
        c->xs[i] = 1e-2f;
    for (size_t i = 0; i < rows * c->S; i++)
        c->hs[i] = 1e-2f;
    return true;
}

static void run_ctx_free(run_ctx *c)
{
    free(c->xq);
    free(c->xs);
    free(c->g);
    free(c->u);
    free(c->hq);
    free(c->hs);
    free(c->y);
    free(c->xb);
    free(c->hb);
    free(c->xf);
}

/* Bytes of the last-level cache (0 when unknown). */
static size_t llc_bytes(void)
{
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (!f)
        return 0;
    size_t v = 0;
    char unit = 0;
    if (fscanf(f, "%zu%c", &v, &unit) < 1)
        v = 0;
    fclose(f);
    return unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : v;
}

/* --per-cpu: the no-load peak and the fed loop of one thread pinned to each
 * CPU of the mask in turn, `rounds` times; the calling thread's mask is
 * restored afterwards. */
static int per_cpu_rounds(int rounds)
{
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask)) {
        perror("bench_amx: sched_getaffinity");
        return 1;
    }
    int n = 0, fast = 0;
    for (int round = 1; round <= rounds; round++) {
        printf("round %d, one thread per CPU: fed 2x2 loop TOPS (%% of that CPU's no-load peak)\n", round);
        int k = 0; /* this round's CPUs, four to a line */
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (!CPU_ISSET(cpu, &mask))
                continue;
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one))
                continue;
            /* one sample each (no best-of): the state is what is measured */
            double peak = mp_perf_amx_int8_peak(1, 1), fed = mp_perf_amx_int8_fed(1, 1, 0, 4);
            double frac = peak > 0 ? fed / peak : 0;
            n++;
            k++;
            fast += frac >= 0.6;
            printf("  cpu %3d: %.2f (%.0f%% of %.2f)%s", cpu, fed * 1e-12, 100 * frac, peak * 1e-12,
                   k % 4 ? "" : "\n");
            fflush(stdout);
        }
        if (k % 4)
            printf("\n");
    }
    sched_setaffinity(0, sizeof mask, &mask);
    printf("per-CPU fed loop at >= 60%% of that CPU's no-load peak in %d of %d samples\n", fast, n);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = omp_get_max_threads();
    const size_t llc = llc_bytes();
    uint32_t E = 0; /* --experts, else from the LLC below */
    size_t ms[16] = {1, 4, 16, 64, 256, 1024};
    int nms = 6;
    bool with_v1 = false, tile_loads = false, bf16 = false, hi_only = false;
    int per_cpu = 0; /* --per-cpu rounds */
    uint32_t active = 0; /* --decode-active */
    size_t ams[16] = {1}; /* --active-m */
    int nams = 1;
    const char *tunes[8]; /* --tunes */
    int ntunes = 0;
    size_t ld_pad = 64; /* activation row stride = K + 64, as the runner's */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--experts") && i + 1 < argc)
            E = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc)
            min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc) {
            nms = 0;
            for (char *s = strtok(argv[++i], ","); s && nms < 16; s = strtok(NULL, ","))
                ms[nms++] = (size_t)atol(s);
        } else if (!strcmp(argv[i], "--ld-pad") && i + 1 < argc) {
            ld_pad = (size_t)atol(argv[++i]);
            if (ld_pad % 64 || ld_pad > 4096)
                return 1;
        } else if (!strcmp(argv[i], "--v1")) {
            with_v1 = true;
        } else if (!strcmp(argv[i], "--per-cpu") && i + 1 < argc) {
            per_cpu = atoi(argv[++i]);
            if (per_cpu < 1 || per_cpu > 100) {
                fprintf(stderr, "bench_amx: --per-cpu takes 1 to 100 rounds\n");
                return 1;
            }
        } else if (!strcmp(argv[i], "--tile-loads")) {
            tile_loads = true;
        } else if (!strcmp(argv[i], "--bf16")) {
            bf16 = true;
        } else if (!strcmp(argv[i], "--bf16-activations")) {
            bf16 = hi_only = true;
        } else if (!strcmp(argv[i], "--decode-active") && i + 1 < argc) {
            active = (uint32_t)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--tunes") && i + 1 < argc) {
            for (char *s = strtok(argv[++i], ";"); s && ntunes < 8; s = strtok(NULL, ";"))
                tunes[ntunes++] = s;
        } else if (!strcmp(argv[i], "--active-m") && i + 1 < argc) {
            nams = 0;
            for (char *s = strtok(argv[++i], ","); s && nams < 16; s = strtok(NULL, ","))
                ams[nams++] = (size_t)atol(s);
        } else {
            fprintf(stderr,
                    "usage: bench_amx [--threads N] [--experts E] [--m 1,4,16,64,256,1024] [--min-time S] [--v1] "
                    "[--ld-pad B] [--decode-active A] [--active-m 1,16,...] [--tunes \"SPEC;SPEC\"] [--tile-loads] [--per-cpu R] [--bf16] [--bf16-activations]\n");
            return 1;
        }
    }
    if (!E) { /* enough that the weights are twice the last-level cache, so
               * decode reads them from memory (at least 8, a V3 token's top-8) */
        const size_t per_expert = bf16 ? (size_t)88 << 20 : (size_t)45 << 20;
        E = (uint32_t)((2 * llc + per_expert - 1) / per_expert);
        E = E < 8 ? 8 : E;
    }
    if (threads < 1 || E < 1 || E > 256 || (active && (active > E || E % active))) {
        fprintf(stderr, "bench_amx: need --threads >= 1, 1 <= --experts <= 256 and --decode-active dividing --experts\n");
        return 1;
    }
    if (bf16 && (with_v1 || active || tile_loads || per_cpu)) {
        fprintf(stderr, "bench_amx: --bf16 takes none of --v1, --decode-active, --tile-loads, --per-cpu\n");
        return 1;
    }
    mp_error err = {0};
    if (!mp_isa_available(MP_ISA_AMX)) {
        printf("SKIP: no AMX here\n");
        return 0;
    }
    const mp_cpu_kernels *K = mp_cpu_kernels_get(MP_ISA_AMX, &err);
    if (!K) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *pf = getenv("MOEPACK_AMX_PREFETCH");
    const char *kern = getenv("MOEPACK_AMX_KERNEL"), *tune = getenv("MOEPACK_AMX_TUNE");
    if (bf16)
        printf("bench_amx: %d threads, %u experts of DeepSeek-V3 shape per step, bf16 (amx_bf16): rows %s "
               "(TDPBF16PS kernel) from M = %u, f32 rows (AVX-512) below\n",
               threads, E, hi_only ? "rounded to bf16, one product per tile" : "split in two bf16",
               K->bf16_split_min_m);
    else
        printf("bench_amx: %d threads, %u experts of DeepSeek-V3 shape per step, int8 (amx_int8), activation rows K + "
               "%zu bytes apart; kernel %s%s%s%s\n",
               threads, E, ld_pad, kern && !strcmp(kern, "v1") ? "v1" : "current", tune ? ", MOEPACK_AMX_TUNE=" : "",
               tune ? tune : "", kern && !strcmp(kern, "v1") && pf && !strcmp(pf, "0") ? ", v1 B prefetch off" : "");

    double p1, pn;
    if (bf16) {
        p1 = mp_perf_amx_bf16_peak(1, 5), pn = mp_perf_amx_bf16_peak(threads, 5);
        printf("AMX BF16 peak (TDPBF16PS, no loads): 1 thread %.2f TFLOP/s, %d threads %.2f TFLOP/s (%.1fx)%s\n",
               p1 * 1e-12, threads, pn * 1e-12, pn / p1, hi_only ? "" : "; the split kernel's ceiling is half of it");
    } else {
        p1 = mp_perf_amx_int8_peak(1, 5), pn = mp_perf_amx_int8_peak(threads, 5);
        printf("AMX INT8 peak (TDPBSSD, no loads): 1 thread %.2f TOPS, %d threads %.2f TOPS (%.1fx)\n", p1 * 1e-12,
               threads, pn * 1e-12, pn / p1);
        /* what the kernel's 2x2 tile block can do when every operand is in L1:
         * the peak above has no tile loads at all */
        double f1 = mp_perf_amx_int8_fed(1, 5, 0, 4), fn = mp_perf_amx_int8_fed(threads, 5, 0, 4);
        double s1 = mp_perf_amx_int8_fed(1, 5, 8, 4), sn = mp_perf_amx_int8_fed(threads, 5, 8, 4);
        printf("AMX INT8 2x2 tile loop fed from L1 (2 A + 2 B tile loads per 4 TDPBSSD): 1 thread %.2f TOPS (%.1f%% "
               "of its peak), %d threads %.2f TOPS (%.1f%%); C also stored and reloaded every 8 k-steps (as "
               "split-K): %.2f (%.1f%%), %.2f (%.1f%%)\n",
               f1 * 1e-12, 100 * f1 / p1, threads, fn * 1e-12, 100 * fn / pn, s1 * 1e-12, 100 * s1 / p1,
               sn * 1e-12, 100 * sn / pn);
    }
    if (tile_loads) { /* what each tile load costs: fewer loads per k-step (not a GEMM) */
        for (int t = 1; t <= threads; t = t < threads ? threads : threads + 1) {
            printf("tile loads per 4 TDPBSSD, %2d thread%s:", t, t > 1 ? "s" : " ");
            for (int nl = 0; nl <= 4; nl++)
                printf("  %d: %.2f TOPS", nl, mp_perf_amx_int8_fed(t, 5, 0, nl) * 1e-12);
            printf("\n");
        }
    }
    fflush(stdout);
    if (per_cpu)
        return per_cpu_rounds(per_cpu);
    size_t bw_bytes = (size_t)1 << 30;
    while (bw_bytes < 4 * llc)
        bw_bytes *= 2;
    uint8_t *bwbuf = aligned_alloc(4096, bw_bytes);
    if (!bwbuf)
        return 2;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < bw_bytes; i += 4096) /* each thread touches what it reads: local pages */
        memset(bwbuf + i, 1, 4096);
    double bw1 = mp_perf_read_pass(bwbuf, bw_bytes, threads, 5, false),
           bw4 = mp_perf_read_pass(bwbuf, bw_bytes, threads, 5, true);
    double bw = bw4 > bw1 ? bw4 : bw1;
    printf("last-level cache %.0f MiB; memory read bandwidth, %d threads, %.1f GiB: %.1f GB/s (one stream per thread), "
           "%.1f GB/s (four per thread)\n",
           llc / 1048576.0, threads, bw_bytes / 1073741824.0, bw1 * 1e-9, bw4 * 1e-9);
    free(bwbuf);

    const uint32_t H = 7168, I = 2048;
    mp_amx_int8_layout gu, dn;
    if (mp_expert_layouts(H, I, 256, &gu, &dn, &err))
        return 1;
    mp_amx_bf16_layout bgu, bdn; /* gate/up one K-group, down K-groups of 256, as convert writes them */
    if (mp_amx_bf16_layout_init(I, H, mp_align_up(H, 32), &bgu, &err) ||
        mp_amx_bf16_layout_init(H, I, 256, &bdn, &err))
        return 1;
    const uint64_t gu_bytes = bf16 ? bgu.total_bytes : gu.total_bytes;
    const uint64_t dn_bytes = bf16 ? bdn.total_bytes : dn.total_bytes;
    expert *ex = calloc(E, sizeof *ex);
    void **bufs = calloc(3 * (size_t)E, sizeof *bufs);
    for (uint32_t e = 0; e < E; e++) {
        if (bf16) {
            bufs[3 * e] = alloc_matrix_bf16(&bgu, &ex[e].bgate, 3 * e + 1);
            bufs[3 * e + 1] = alloc_matrix_bf16(&bgu, &ex[e].bup, 3 * e + 2);
            bufs[3 * e + 2] = alloc_matrix_bf16(&bdn, &ex[e].bdown, 3 * e + 3);
        } else {
            bufs[3 * e] = alloc_matrix(&gu, &ex[e].gate, 3 * e + 1);
            bufs[3 * e + 1] = alloc_matrix(&gu, &ex[e].up, 3 * e + 2);
            bufs[3 * e + 2] = alloc_matrix(&dn, &ex[e].down, 3 * e + 3);
        }
    }
    const double wbytes = (double)E * (2.0 * gu_bytes + dn_bytes);
    printf("weights: %.1f MB (%u experts x (2 x %.1f + %.1f) MB)\n", wbytes * 1e-6, E, gu_bytes * 1e-6,
           dn_bytes * 1e-6);
    const char *rate = bf16 ? "TFLOP/s" : "TOPS";
    printf("\n%6s %10s %10s %8s %10s %10s %8s %7s %-7s %8s\n", with_v1 ? "M (kernel)" : "M", "gate/up ms", rate,
           "of peak", "down ms", rate, "of peak", "both", rate, "of peak");
    double decode_gbs = 0;
    for (int mi = 0; mi < nms; mi++) {
        size_t M = ms[mi];
        for (int kv = 0; kv < (with_v1 ? 2 : 1); kv++) {
            run_ctx c = {.gemm_q8 = kv ? mp_gemm_q8_amx_v1 : K->gemm_q8, .ex = ex, .E = E, .M = M, .H = H,
                         .I = I, .S = dn.groups, .kp_in = gu.kp + ld_pad, .kp_down = dn.kp + ld_pad,
                         .threads = threads, .K = K, .bf16 = bf16, .split = M >= K->bf16_split_min_m,
                         .ld_xb = mp_bf16_split_ld(bgu.kp), .ld_hb = mp_bf16_split_ld(bdn.kp),
                         .lo_x = hi_only ? 0 : bgu.kp, .lo_h = hi_only ? 0 : bdn.kp};
            if (!run_ctx_buffers(&c))
                return 2;
            double t_gu = time_it(run_gate_up, &c), t_dn = time_it(run_down, &c), t_all = time_it(run_both, &c);
            double ops_gu = 2.0 * 2 * (double)E * M * I * H, ops_dn = 2.0 * (double)E * M * H * I;
            if (with_v1)
                printf("%4zu %-5s", M, kv ? "v1" : "new");
            else
                printf("%6zu", M);
            printf(" %10.3f %10.2f %7.1f%% %10.3f %10.2f %7.1f%% %10.2f %7.1f%%\n", t_gu * 1e3,
                   ops_gu / t_gu * 1e-12, 100 * ops_gu / t_gu / pn, t_dn * 1e3, ops_dn / t_dn * 1e-12,
                   100 * ops_dn / t_dn / pn, (ops_gu + ops_dn) / t_all * 1e-12, 100 * (ops_gu + ops_dn) / t_all / pn);
            if (M == 1 && kv == 0)
                decode_gbs = wbytes / t_all;
            run_ctx_free(&c);
        }
    }
    if (decode_gbs > 0)
        printf("\ndecode (M = 1): weights streamed at %.1f GB/s = %.1f%% of the %.1f GB/s read bandwidth\n",
               decode_gbs * 1e-9, 100 * decode_gbs / bw, bw * 1e-9);
    for (int a = 0; active && a < nams; a++) {
        const size_t M = ams[a];
        if (M < 1 || M > 4096)
            continue;
        run_ctx c = {.gemm_q8 = K->gemm_q8, .ex = ex, .E = active, .M = M, .H = H, .I = I, .S = dn.groups,
                     .kp_in = gu.kp + ld_pad, .kp_down = dn.kp + ld_pad, .threads = threads, .rot_all = ex,
                     .rot_total = E, .K = K};
        if (!run_ctx_buffers(&c))
            return 2;
        /* --tunes: each setting in turn, three rounds, so that a machine
         * whose speed drifts affects them alike */
        for (int round = 0; round < (ntunes ? 3 : 1); round++)
            for (int ti = 0; ti < (ntunes ? ntunes : 1); ti++) {
                if (ntunes)
                    mp_amx_tune_set(tunes[ti]);
                /* every call is a new set of experts: the mean over whole rotations, not the best call */
                const uint32_t steps = E / active;
                run_both_rotating(&c);
                c.t_gate_up = c.t_down = 0;
                double t0 = mp_perf_now();
                uint32_t n = 0;
                do {
                    for (uint32_t i = 0; i < steps; i++)
                        run_both_rotating(&c);
                    n += steps;
                } while (mp_perf_now() - t0 < min_time || n < 3 * steps);
                double t = (mp_perf_now() - t0) / n, bytes = (double)active * (2.0 * gu.total_bytes + dn.total_bytes);
                double ops = 2.0 * 3 * (double)active * M * I * H;
                if (ntunes)
                    printf("[%s] ", tunes[ti]);
                printf("%u of %u experts per step (M = %zu, rotating): %.3f ms per step, %.1f GB/s = %.1f%% of the "
                       "%.1f GB/s read bandwidth, %.2f TOPS = %.1f%% of the AMX peak; gate/up %.1f GB/s, down %.1f "
                       "GB/s\n",
                       active, E, M, t * 1e3, bytes / t * 1e-9, 100 * bytes / t / bw, bw * 1e-9, ops / t * 1e-12,
                       100 * ops / t / pn, active * 2.0 * gu.total_bytes * n / c.t_gate_up * 1e-9,
                       active * (double)dn.total_bytes * n / c.t_down * 1e-9);
            }
        run_ctx_free(&c);
    }
    for (size_t i = 0; i < 3 * (size_t)E; i++)
        free(bufs[i]);
    free(bufs);
    free(ex);
    return 0;
}
