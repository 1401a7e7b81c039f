/* kernels/cpu: every path this machine supports against the scalar
 * reference, the scalar reference against independent math, MOEPACK_ISA
 * forcing, determinism, and NUMA-split expert compute. Paths the machine
 * lacks are skipped with a note. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kern_internal.h"
#include "mp_kernels.h"
#include "mp_test.h"
#include "test_rand.h"

static const mp_cpu_kernels *tabs[MP_ISA_COUNT];
static const mp_cpu_kernels *scalar;

static const size_t ms[] = {1, 3, 5, 8, 16, 17, 40, 64, 150};
#define NMS (sizeof ms / sizeof ms[0])
#define SENTINEL 12345.0f

static void fill_gauss(mp_rng *r, float *v, size_t n, double sigma)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(sigma * mp_rng_gauss(r));
}

/* Output ranges tried: all of [0, N), and an unaligned inner one. */
static int ranges(uint32_t n, uint32_t r[2][2])
{
    r[0][0] = 0;
    r[0][1] = n;
    if (n < 24)
        return 1;
    r[1][0] = 5;
    r[1][1] = n - 3;
    return 2;
}

/* y starts as: random values (accumulate) or sentinels (overwrite); after the
 * call, the columns outside [n0, n1) must still hold what they held. */
static void prefill(mp_rng *r, float *y, size_t m, size_t ldy, bool accumulate)
{
    for (size_t i = 0; i < m * ldy; i++)
        y[i] = accumulate ? (float)mp_rng_gauss(r) : SENTINEL;
}

static int outside_changed(const float *y, const float *y0, size_t m, size_t ldy, uint32_t n0, uint32_t n1)
{
    int bad = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t n = 0; n < ldy; n++)
            if ((n < n0 || n >= n1) && memcmp(&y[i * ldy + n], &y0[i * ldy + n], sizeof *y))
                bad++;
    return bad;
}

/* ---- int8 ------------------------------------------------------------------------- */
static void test_q8_shape(mp_rng *r, uint32_t n, uint32_t k, uint32_t kg, size_t max_m)
{
    mp_error err = {0};
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(n, k, kg, &l, &err) == MP_OK);
    float *w = malloc((size_t)n * k * sizeof *w);
    fill_gauss(r, w, (size_t)n * k, 0.05);
    uint8_t *packed = aligned_alloc(64, mp_align_up(l.total_bytes, 64));
    REQUIRE(mp_amx_int8_quantize_pack_rows(&l, 0, n, w, k, packed, l.total_bytes, &err) == MP_OK);
    mp_amx_int8_view v;
    mp_amx_int8_view_init(&l, packed, &v);
    /* the row-major quantized weights, for the independent references */
    int8_t *q = malloc((size_t)n * k);
    float *ws = malloc((size_t)n * l.groups * sizeof *ws);
    for (uint32_t i = 0; i < n; i++)
        REQUIRE(mp_quant_int8_row(w + (size_t)i * k, k, kg, q + (size_t)i * k, ws + (size_t)i * l.groups, &err) ==
                MP_OK);

    size_t mmax = ms[NMS - 1] < max_m ? ms[NMS - 1] : max_m;
    size_t ldx = k + 3, ldxq = l.kp + 64, ldy = n + 5;
    float *x = malloc(mmax * ldx * sizeof *x);
    int8_t *xq = malloc(mmax * ldxq);
    float *xs = malloc(mmax * l.groups * sizeof *xs);
    fill_gauss(r, x, mmax * ldx, 1.0);
    mp_quant_act_int8(mmax, x, ldx, k, kg, xq, ldxq, xs);

    float *y0 = malloc(mmax * ldy * sizeof *y0), *want = malloc(mmax * ldy * sizeof *want);
    float *y = malloc(mmax * ldy * sizeof *y);
    for (size_t mi = 0; mi < NMS && ms[mi] <= mmax; mi++) {
        size_t m = ms[mi];
        uint32_t rg[2][2];
        int nr = ranges(n, rg);
        for (int ri = 0; ri < nr; ri++)
            for (int acc = 0; acc < 2; acc++) {
                uint32_t n0 = rg[ri][0], n1 = rg[ri][1];
                prefill(r, y0, m, ldy, acc);
                /* reference: exact integer dots per group, then the
                 * documented f32 operations in group order */
                memcpy(want, y0, m * ldy * sizeof *y0);
                double max_rel = 0.0;
                for (size_t i = 0; i < m; i++)
                    for (uint32_t nn = n0; nn < n1; nn++) {
                        float a = acc ? y0[i * ldy + nn] : 0.0f;
                        double dref = acc ? y0[i * ldy + nn] : 0.0, dabs = 0.0;
                        for (uint32_t g = 0; g < l.groups; g++) {
                            int64_t isum = 0;
                            for (uint32_t kk = g * kg; kk < k && kk < (g + 1) * kg; kk++) {
                                isum += (int64_t)q[(size_t)nn * k + kk] * xq[i * ldxq + kk];
                                double t = (double)q[(size_t)nn * k + kk] * ws[(size_t)nn * l.groups + g] *
                                           xq[i * ldxq + kk] * xs[i * l.groups + g];
                                dref += t;
                                dabs += fabs(t);
                            }
                            a = fmaf((float)(int32_t)isum, xs[i * l.groups + g] * ws[(size_t)nn * l.groups + g], a);
                        }
                        want[i * ldy + nn] = a;
                        double rel = fabs((double)a - dref) / (dabs + 1e-30);
                        if (rel > max_rel)
                            max_rel = rel;
                    }
                CHECKF(max_rel < 1e-5, "q8 %ux%u/%u m=%zu: f32 formula vs double %.3g", n, k, kg, m, max_rel);
                for (int t = 0; t < MP_ISA_COUNT; t++) {
                    if (!tabs[t])
                        continue;
                    memcpy(y, y0, m * ldy * sizeof *y);
                    tabs[t]->gemm_q8(&v, m, xq, ldxq, xs, n0, n1, y, ldy, acc);
                    int diff = 0;
                    for (size_t i = 0; i < m; i++)
                        for (uint32_t nn = n0; nn < n1; nn++)
                            diff += memcmp(&y[i * ldy + nn], &want[i * ldy + nn], sizeof *y) != 0;
                    CHECKF(diff == 0, "q8 %s %ux%u/%u m=%zu [%u,%u) acc=%d: %d outputs differ from the integer reference",
                           mp_isa_name((mp_isa)t), n, k, kg, m, n0, n1, acc, diff);
                    CHECKF(outside_changed(y, y0, m, ldy, n0, n1) == 0, "q8 %s wrote outside its range",
                           mp_isa_name((mp_isa)t));
                }
            }
    }
    free(x), free(xq), free(xs), free(y0), free(want), free(y);
    free(q), free(ws), free(w), free(packed);
}

static void test_q8(void)
{
    mp_rng r = {21};
    test_q8_shape(&r, 1, 64, 64, 150);
    test_q8_shape(&r, 17, 100, 64, 150);
    test_q8_shape(&r, 50, 320, 128, 64);
    test_q8_shape(&r, 40, 1280, 1280, 150); /* 3 K-chunks, 2 row passes */
    test_q8_shape(&r, 33, 1408, 256, 64);
    test_q8_shape(&r, 40, 2048, 256, 64); /* down-like: 8 groups */
    test_q8_shape(&r, 35, 7168, 7168, 17);  /* gate/up-like: one group */
    test_q8_shape(&r, 20, 10944, 256, 3);   /* short last group (192) */
}

/* Shapes that reach the AMX kernel's block boundaries (more than 256 rows,
 * more than 256 outputs, odd 16-output blocks, long groups cut into
 * superchunks, several long groups): every path against the scalar one,
 * bit for bit (the scalar one is checked against independent math above). */
static void test_q8_big(void)
{
    static const struct {
        uint32_t n, k, kg;
        size_t m;
    } cases[] = {
        {136, 3200, 3200, 270}, /* one long group: split-K; 9 blocks, odd */
        {296, 3200, 3200, 37},  /* few rows: all-K (split-K in the allkm=0 child), 19 blocks = 2 of 256 */
        {72, 3584, 1024, 45},   /* 4 groups of 1024: all-K, and split-K with a running f32 sum in the child */
        {72, 3584, 1024, 150},  /* the same, more rows than all-K takes: split-K */
        {40, 2048, 256, 290},   /* down-like: all-K, 2 row blocks, the last of 34 rows */
    };
    mp_rng r = {91};
    mp_error err = {0};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const uint32_t n = cases[ci].n, k = cases[ci].k, kg = cases[ci].kg;
        const size_t m = cases[ci].m;
        mp_amx_int8_layout l;
        REQUIRE(mp_amx_int8_layout_init(n, k, kg, &l, &err) == MP_OK);
        float *w = malloc((size_t)n * k * sizeof *w), *x = malloc(m * k * sizeof *x);
        fill_gauss(&r, w, (size_t)n * k, 0.05);
        fill_gauss(&r, x, m * k, 1.0);
        uint8_t *packed = aligned_alloc(64, mp_align_up(l.total_bytes, 64));
        REQUIRE(mp_amx_int8_quantize_pack_rows(&l, 0, n, w, k, packed, l.total_bytes, &err) == MP_OK);
        mp_amx_int8_view v;
        mp_amx_int8_view_init(&l, packed, &v);
        const size_t ldxq = l.kp, ldy = n + 3;
        int8_t *xq = aligned_alloc(64, m * ldxq);
        float *xs = malloc(m * l.groups * sizeof *xs);
        mp_quant_act_int8(m, x, k, k, kg, xq, ldxq, xs);
        float *y0 = malloc(m * ldy * sizeof *y0), *want = malloc(m * ldy * sizeof *want);
        float *y = malloc(m * ldy * sizeof *y);
        for (int acc = 0; acc < 2; acc++) {
            const uint32_t n0 = acc ? 5 : 0, n1 = acc ? n - 3 : n;
            prefill(&r, y0, m, ldy, acc);
            memcpy(want, y0, m * ldy * sizeof *y0);
            scalar->gemm_q8(&v, m, xq, ldxq, xs, n0, n1, want, ldy, acc);
            for (int t = 1; t < MP_ISA_COUNT; t++) {
                if (!tabs[t])
                    continue;
                memcpy(y, y0, m * ldy * sizeof *y);
                tabs[t]->gemm_q8(&v, m, xq, ldxq, xs, n0, n1, y, ldy, acc);
                CHECKF(!memcmp(y, want, m * ldy * sizeof *y), "q8 %s %ux%u/%u m=%zu [%u,%u) acc=%d differs from scalar",
                       mp_isa_name((mp_isa)t), n, k, kg, m, n0, n1, acc);
            }
        }
        free(w), free(x), free(packed), free(xq), free(xs), free(y0), free(want), free(y);
    }
}

/* ---- f32-accurate kernels: bf16 (two layouts), int4, f32 ----------------------------- */
typedef enum { K_BF16_AMX, K_BF16_RM, K_INT4, K_F32 } fkind;

typedef struct fcase {
    fkind kind;
    uint32_t n, k, kg;
    mp_int4_scheme scheme;
    /* the operands */
    float *wf; /* the exact f32 value of every weight, row-major [n][k] */
    void *packed;
    size_t ldw;
    mp_amx_bf16_view bv;
    mp_gpu_int4_view iv;
} fcase;

static void fcase_build(mp_rng *r, fcase *c)
{
    mp_error err = {0};
    uint32_t n = c->n, k = c->k;
    c->wf = malloc((size_t)n * k * sizeof *c->wf);
    float *w = malloc((size_t)n * k * sizeof *w);
    fill_gauss(r, w, (size_t)n * k, 0.05);
    if (c->kind == K_BF16_AMX || c->kind == K_BF16_RM) {
        c->ldw = c->kind == K_BF16_RM ? k + 7 : k;
        uint16_t *b = malloc((size_t)n * c->ldw * 2);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < k; j++) {
                b[(size_t)i * c->ldw + j] = mp_f32_to_bf16(w[(size_t)i * k + j]);
                c->wf[(size_t)i * k + j] = mp_bf16_to_f32(b[(size_t)i * c->ldw + j]);
            }
        if (c->kind == K_BF16_RM) {
            c->packed = b;
        } else {
            mp_amx_bf16_layout l;
            REQUIRE(mp_amx_bf16_layout_init(n, k, c->kg, &l, &err) == MP_OK);
            c->packed = aligned_alloc(64, mp_align_up(l.total_bytes, 64));
            REQUIRE(mp_amx_bf16_pack_rows(&l, 0, n, b, c->ldw, c->packed, l.total_bytes, &err) == MP_OK);
            mp_amx_bf16_view_init(&l, c->packed, &c->bv);
            free(b);
        }
    } else if (c->kind == K_INT4) {
        mp_gpu_int4_layout l;
        REQUIRE(mp_gpu_int4_layout_init(n, k, c->scheme, &l, &err) == MP_OK);
        c->packed = aligned_alloc(64, mp_align_up(l.total_bytes, 64));
        REQUIRE(mp_gpu_int4_quantize_pack_rows(&l, MP_INT4_FIT_MSE, 0, n, w, k, c->packed, l.total_bytes, &err) ==
                MP_OK);
        mp_gpu_int4_view_init(&l, c->packed, &c->iv);
        /* dequantize through the index formula (independent of the kernels) */
        const uint8_t *bytes = c->packed;
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < k; j++) {
                uint8_t qv = (bytes[mp_gpu_int4_byte(&l, i, j)] >> mp_gpu_int4_shift(j)) & 15;
                size_t at = (size_t)i * l.groups + j / 128;
                float s = mp_f16_to_f32(c->iv.scale[at]);
                float mn = c->scheme == MP_INT4_ASYM ? mp_f16_to_f32(c->iv.min[at]) : 0.0f;
                c->wf[(size_t)i * k + j] = mp_int4_dequant(c->scheme, qv, s, mn);
            }
    } else {
        c->ldw = k + 2;
        float *f = malloc((size_t)n * c->ldw * sizeof *f);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < k; j++)
                f[(size_t)i * c->ldw + j] = c->wf[(size_t)i * k + j] = w[(size_t)i * k + j];
        c->packed = f;
    }
    free(w);
}

static void fcase_run(const mp_cpu_kernels *t, const fcase *c, size_t m, const float *x, size_t ldx, uint32_t n0,
                      uint32_t n1, float *y, size_t ldy, bool acc)
{
    switch (c->kind) {
    case K_BF16_AMX:
        t->gemm_bf16_amx(&c->bv, m, x, ldx, n0, n1, y, ldy, acc);
        break;
    case K_BF16_RM:
        t->gemm_bf16_rm(c->packed, c->ldw, c->k, m, x, ldx, n0, n1, y, ldy, acc);
        break;
    case K_INT4:
        t->gemm_int4(&c->iv, m, x, ldx, n0, n1, y, ldy, acc);
        break;
    case K_F32:
        t->gemm_f32(c->packed, c->ldw, c->k, m, x, ldx, n0, n1, y, ldy, acc);
        break;
    }
}

static const char *kind_name(fkind k)
{
    return k == K_BF16_AMX ? "bf16_amx" : k == K_BF16_RM ? "bf16_rm" : k == K_INT4 ? "int4" : "f32";
}

static double worst_rel[4], worst_split, worst_hi_only;

/* In double: ref = (y0 or 0) + sum_k x w and mag = |y0 or 0| + sum_k |x w|
 * (wf: the exact weights, row-major [n][k]) for rows [0, m), columns [n0, n1). */
static void reference(const float *x, size_t ldx, const float *wf, uint32_t k, const float *y0, size_t m, size_t ldy,
                      uint32_t n0, uint32_t n1, bool acc, double *ref, double *mag)
{
    for (size_t i = 0; i < m; i++)
        for (uint32_t nn = n0; nn < n1; nn++) {
            double sum = acc ? y0[i * ldy + nn] : 0.0, a = fabs(sum);
            for (uint32_t j = 0; j < k; j++) {
                double p = (double)x[i * ldx + j] * wf[(size_t)nn * k + j];
                sum += p;
                a += fabs(p);
            }
            ref[i * ldy + nn] = sum;
            mag[i * ldy + nn] = a;
        }
}

/* Largest |y - ref| / sum|x w| over rows [0, m), columns [n0, n1). */
static double worst_error(const float *y, const double *ref, const double *mag, size_t m, size_t ldy, uint32_t n0,
                          uint32_t n1)
{
    double worst = 0.0;
    for (size_t i = 0; i < m; i++)
        for (uint32_t nn = n0; nn < n1; nn++) {
            double e = fabs(y[i * ldy + nn] - ref[i * ldy + nn]) / (mag[i * ldy + nn] + 1e-30);
            if (!(e <= worst))
                worst = e;
        }
    return worst;
}

static void test_fcase(mp_rng *r, fcase c, size_t max_m)
{
    fcase_build(r, &c);
    uint32_t n = c.n, k = c.k;
    size_t mmax = ms[NMS - 1] < max_m ? ms[NMS - 1] : max_m;
    /* x is exactly K wide at the end of the buffer: ASan sees any read past K */
    size_t ldx = k + 1;
    float *x = malloc(((mmax - 1) * ldx + k) * sizeof *x);
    fill_gauss(r, x, (mmax - 1) * ldx + k, 1.0);
    size_t ldy = n + 3;
    float *y0 = malloc(mmax * ldy * sizeof *y0), *y = malloc(mmax * ldy * sizeof *y);
    double *ref = malloc(mmax * ldy * sizeof *ref), *mag = malloc(mmax * ldy * sizeof *mag);
    /* exact mode: ~1e-6 of sum |x w| (f32 sums, any order); int4 compares
     * against its f32 dequantized weights the same way */
    const double tol = c.kind == K_INT4 ? 1e-5 : 1e-6;
    for (size_t mi = 0; mi < NMS && ms[mi] <= mmax; mi++) {
        size_t m = ms[mi];
        uint32_t rg[2][2];
        int nr = ranges(n, rg);
        for (int ri = 0; ri < nr; ri++)
            for (int acc = 0; acc < 2; acc++) {
                uint32_t n0 = rg[ri][0], n1 = rg[ri][1];
                prefill(r, y0, m, ldy, acc);
                reference(x, ldx, c.wf, k, y0, m, ldy, n0, n1, acc, ref, mag);
                for (int t = 0; t < MP_ISA_COUNT; t++) {
                    if (!tabs[t])
                        continue;
                    memcpy(y, y0, m * ldy * sizeof *y);
                    fcase_run(tabs[t], &c, m, x, ldx, n0, n1, y, ldy, acc);
                    double worst = worst_error(y, ref, mag, m, ldy, n0, n1);
                    if (c.kind == K_BF16_AMX && tabs[t]->gemm_bf16_split) {
                        /* the AMX BF16 path: x split in two bf16 first, hi + lo within 2^-16 |x| */
                        const uint64_t kp = c.bv.lay.kp;
                        const size_t ldb = mp_bf16_split_ld(kp);
                        uint16_t *xb = aligned_alloc(64, mp_align_up(m * ldb * 2, 64));
                        tabs[t]->split_act_bf16(m, x, ldx, k, kp, xb, ldb, kp);
                        float *ys = malloc(m * ldy * sizeof *ys);
                        memcpy(ys, y0, m * ldy * sizeof *ys);
                        tabs[t]->gemm_bf16_split(&c.bv, m, xb, ldb, kp, n0, n1, ys, ldy, acc);
                        double ws = worst_error(ys, ref, mag, m, ldy, n0, n1);
                        if (ws > worst_split)
                            worst_split = ws;
                        CHECKF(ws <= tol + 0x1p-16, "bf16_split %ux%u/%u m=%zu [%u,%u) acc=%d: error %.3g of sum|xw|", n,
                               k, c.kg, m, n0, n1, acc, ws);
                        CHECKF(outside_changed(ys, y0, m, ldy, n0, n1) == 0, "bf16_split wrote outside its range");
                        free(xb), free(ys);
                    }
                    if (worst > worst_rel[c.kind])
                        worst_rel[c.kind] = worst;
                    CHECKF(worst <= tol, "%s %s %ux%u m=%zu [%u,%u) acc=%d: error %.3g of sum|xw|", kind_name(c.kind),
                           mp_isa_name((mp_isa)t), n, k, m, n0, n1, acc, worst);
                    CHECKF(outside_changed(y, y0, m, ldy, n0, n1) == 0, "%s %s wrote outside its range",
                           kind_name(c.kind), mp_isa_name((mp_isa)t));
                }
            }
    }
    free(x), free(y0), free(y), free(ref), free(mag);
    free(c.wf), free(c.packed);
}

static void test_float_kernels(void)
{
    mp_rng r = {31};
    const struct {
        uint32_t n, k, kg;
        size_t max_m;
    } bs[] = {{1, 33, 32, 150}, {17, 100, 64, 64}, {50, 70, 32, 64}, {33, 1000, 256, 17}, {40, 7168, 7168, 3}};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
        test_fcase(&r, (fcase){.kind = K_BF16_AMX, .n = bs[i].n, .k = bs[i].k, .kg = bs[i].kg}, bs[i].max_m);
        test_fcase(&r, (fcase){.kind = K_BF16_RM, .n = bs[i].n, .k = bs[i].k}, bs[i].max_m);
        test_fcase(&r, (fcase){.kind = K_F32, .n = bs[i].n, .k = bs[i].k}, bs[i].max_m);
    }
    const struct {
        uint32_t n, k;
        size_t max_m;
    } is[] = {{1, 64, 64}, {17, 100, 64}, {30, 128, 64}, {33, 1000, 17}, {40, 10944, 3}, {20, 7168, 3}};
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++)
        for (int sc = 0; sc < 2; sc++)
            test_fcase(&r, (fcase){.kind = K_INT4, .n = is[i].n, .k = is[i].k, .scheme = (mp_int4_scheme)sc},
                       is[i].max_m);
    printf("worst error / sum|xw| over all paths: bf16_amx %.3g, bf16_rm %.3g, int4 %.3g, f32 %.3g; AMX bf16 on split "
           "rows %.3g\n",
           worst_rel[0], worst_rel[1], worst_rel[2], worst_rel[3], worst_split);
}

/* split_act_bf16 (AMX): hi = bf16(x) and lo = bf16(x - hi), both rounded
 * to nearest even, so hi + lo within 2^-16 |x| for normal x, zeros from K to kp, nothing
 * written past kp; non-finite x in hi with lo 0. */
static void test_split_act(void)
{
    const mp_cpu_kernels *t = tabs[MP_ISA_AMX];
    if (!t)
        return;
    CHECK(t->split_act_bf16 && t->gemm_bf16_split && t->bf16_split_min_m >= 1);
    for (int i = 0; i < MP_ISA_AMX; i++)
        CHECK(!tabs[i] || (!tabs[i]->split_act_bf16 && !tabs[i]->gemm_bf16_split));
    mp_rng r = {57};
    const uint32_t ks[] = {1, 17, 32, 100, 7168};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++) {
        const uint32_t k = ks[a];
        const uint64_t kp = mp_align_up(k, 32);
        const size_t m = 3, ldx = k + 5, ldo = mp_bf16_split_ld(kp);
        float *x = malloc(m * ldx * sizeof *x);
        fill_gauss(&r, x, m * ldx, 3.0);
        x[0] = 1e-30f;         /* small, still normal */
        if (k > 5) {
            x[1] = INFINITY;
            x[2] = -INFINITY;
            x[3] = NAN;
            x[4] = 3.3e38f;    /* hi rounds to bf16's largest finite value or beyond */
            x[5] = 0.0f;
        }
        uint16_t *out = malloc(m * ldo * sizeof *out);
        memset(out, 0xab, m * ldo * sizeof *out);
        t->split_act_bf16(m, x, ldx, k, kp, out, ldo, kp);
        int bad = 0, pad_bad = 0, past = 0;
        for (size_t i = 0; i < m; i++) {
            const uint16_t *hi = out + i * ldo, *lo = hi + kp;
            for (uint32_t j = 0; j < k; j++) {
                const float v = x[i * ldx + j], h = mp_bf16_to_f32(hi[j]), l = mp_bf16_to_f32(lo[j]);
                if (!isfinite(v) || !isfinite(h)) {
                    /* carried by hi, lo 0 */
                    bad += !(isnan(v) ? isnan(h) : h == v || (isinf(h) && fabsf(v) > 3e38f)) || l != 0.0f;
                    continue;
                }
                const float rest = v - h; /* exact */
                bad += hi[j] != mp_f32_to_bf16(v);
                /* a denormal rest becomes 0 (the conversion flushes denormals) */
                bad += fabsf(rest) < 0x1p-126f ? lo[j] != 0 && lo[j] != 0x8000 : lo[j] != mp_f32_to_bf16(rest);
                bad += !(fabs((double)h + l - v) <= 0x1p-16 * fabs(v));
            }
            for (uint64_t j = k; j < kp; j++)
                pad_bad += hi[j] != 0 || lo[j] != 0;
            for (size_t j = 2 * kp; j < ldo; j++)
                past += hi[j] != 0xabab;
        }
        CHECKF(bad == 0, "split_act_bf16 k=%u: %d values not split as promised", k, bad);
        CHECKF(pad_bad == 0, "split_act_bf16 k=%u: %d padding values not zero", k, pad_bad);
        CHECKF(past == 0, "split_act_bf16 k=%u: wrote %d values past the lo half", k, past);
        /* lo_off 0: the same hi half (padding included), and nothing after it */
        uint16_t *hi_only = malloc(m * ldo * sizeof *hi_only);
        memset(hi_only, 0xab, m * ldo * sizeof *hi_only);
        t->split_act_bf16(m, x, ldx, k, kp, hi_only, ldo, 0);
        int hi_bad = 0, hi_past = 0;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < ldo; j++) {
                if (j < kp)
                    hi_bad += hi_only[i * ldo + j] != out[i * ldo + j];
                else
                    hi_past += hi_only[i * ldo + j] != 0xabab;
            }
        CHECKF(hi_bad == 0, "split_act_bf16 k=%u, hi only: %d values differ from the split's hi", k, hi_bad);
        CHECKF(hi_past == 0, "split_act_bf16 k=%u, hi only: wrote %d values past kp", k, hi_past);
        free(x), free(out), free(hi_only);
    }
}

/* The AMX BF16 kernel on shapes that cross its blocks: several output
 * blocks of 256 (the last partial), K-groups and superchunks (the last
 * group short), row blocks of 256 and partial 16-row tiles. */
static void test_bf16_split_blocks(void)
{
    const mp_cpu_kernels *t = tabs[MP_ISA_AMX];
    if (!t)
        return;
    mp_rng r = {59};
    fcase c = {.kind = K_BF16_AMX, .n = 600, .k = 420, .kg = 96};
    fcase_build(&r, &c);
    const uint32_t n = c.n, k = c.k;
    const uint64_t kp = c.bv.lay.kp;
    const size_t ms2[] = {1, 7, 16, 17, 33, 257, 300};
    const size_t mmax = 300, ldx = k, ldy = n + 1, ldb = mp_bf16_split_ld(kp);
    float *x = malloc(mmax * ldx * sizeof *x);
    fill_gauss(&r, x, mmax * ldx, 1.0);
    uint16_t *xb = aligned_alloc(64, mp_align_up(mmax * ldb * 2, 64));
    t->split_act_bf16(mmax, x, ldx, k, kp, xb, ldb, kp);
    /* hi only (lo_off 0): its reference is x rounded to bf16 */
    uint16_t *xh = aligned_alloc(64, mp_align_up(mmax * ldb * 2, 64));
    t->split_act_bf16(mmax, x, ldx, k, kp, xh, ldb, 0);
    float *xr = malloc(mmax * ldx * sizeof *xr);
    for (size_t i = 0; i < mmax * ldx; i++)
        xr[i] = mp_bf16_to_f32(mp_f32_to_bf16(x[i]));
    float *y0 = malloc(mmax * ldy * sizeof *y0), *y = malloc(mmax * ldy * sizeof *y);
    double *ref = malloc(mmax * ldy * sizeof *ref), *mag = malloc(mmax * ldy * sizeof *mag);
    const uint32_t rg[][2] = {{0, 600}, {32, 560}, {256, 600}};
    for (size_t mi = 0; mi < sizeof ms2 / sizeof ms2[0]; mi++)
        for (size_t ri = 0; ri < 3; ri++)
            for (int acc = 0; acc < 2; acc++) {
                const size_t m = ms2[mi];
                const uint32_t n0 = rg[ri][0], n1 = rg[ri][1];
                prefill(&r, y0, m, ldy, acc);
                reference(x, ldx, c.wf, k, y0, m, ldy, n0, n1, acc, ref, mag);
                memcpy(y, y0, m * ldy * sizeof *y);
                t->gemm_bf16_split(&c.bv, m, xb, ldb, kp, n0, n1, y, ldy, acc);
                double ws = worst_error(y, ref, mag, m, ldy, n0, n1);
                if (ws > worst_split)
                    worst_split = ws;
                CHECKF(ws <= 1e-6 + 0x1p-16, "bf16_split 600x420/96 m=%zu [%u,%u) acc=%d: error %.3g of sum|xw|", m,
                       n0, n1, acc, ws);
                CHECKF(outside_changed(y, y0, m, ldy, n0, n1) == 0, "bf16_split m=%zu wrote outside [%u,%u)", m, n0,
                       n1);
                reference(xr, ldx, c.wf, k, y0, m, ldy, n0, n1, acc, ref, mag);
                memcpy(y, y0, m * ldy * sizeof *y);
                t->gemm_bf16_split(&c.bv, m, xh, ldb, 0, n0, n1, y, ldy, acc);
                ws = worst_error(y, ref, mag, m, ldy, n0, n1);
                if (ws > worst_hi_only)
                    worst_hi_only = ws;
                CHECKF(ws <= 1e-6, "bf16_split hi only 600x420/96 m=%zu [%u,%u) acc=%d: error %.3g of sum|bf16(x)w|",
                       m, n0, n1, acc, ws);
                CHECKF(outside_changed(y, y0, m, ldy, n0, n1) == 0, "bf16_split hi only m=%zu wrote outside [%u,%u)",
                       m, n0, n1);
            }
    printf("AMX bf16 on hi-only rows (x rounded to bf16): worst error %.3g of sum|bf16(x) w|\n", worst_hi_only);
    free(x), free(xb), free(xh), free(xr), free(y0), free(y), free(ref), free(mag);
    free(c.wf), free(c.packed);
}

/* ---- activation quantization: bit-identical on every path ------------------------- */
static void test_quantize_act(void)
{
    mp_rng r = {41};
    const uint32_t ks[] = {1, 15, 100, 7168, 10944};
    const uint32_t kgs[] = {64, 256, 1u << 20};
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 3; b++) {
            uint32_t k = ks[a], kg = kgs[b];
            uint32_t groups = mp_group_count(k, kg);
            size_t m = 4, ldx = k + 1, ldq = mp_q8_padded_k(k, kg) + 3;
            float *x = malloc(m * ldx * sizeof *x);
            fill_gauss(&r, x, m * ldx, 2.0);
            for (uint32_t i = 0; i < k; i++)
                x[ldx + i] = 0.0f; /* zero row */
            x[2 * ldx] = NAN;
            x[3 * ldx + k / 2] = 1e30f;
            x[3 * ldx] = -0.0f;
            int8_t *q0 = malloc(m * ldq), *q = malloc(m * ldq);
            float *s0 = malloc(m * groups * sizeof *s0), *s = malloc(m * groups * sizeof *s);
            memset(q0, 0x33, m * ldq);
            scalar->quantize_act_q8(m, x, ldx, k, kg, q0, ldq, s0);
            for (int t = 0; t < MP_ISA_COUNT; t++) {
                if (!tabs[t])
                    continue;
                memset(q, 0x33, m * ldq);
                tabs[t]->quantize_act_q8(m, x, ldx, k, kg, q, ldq, s);
                CHECKF(!memcmp(q, q0, m * ldq) && !memcmp(s, s0, m * groups * sizeof *s),
                       "quantize_act %s k=%u kg=%u differs from scalar", mp_isa_name((mp_isa)t), k, kg);
            }
            free(x), free(q0), free(q), free(s0), free(s);
        }
}

/* ---- helpers ------------------------------------------------------------------------------ */
static double rel_err(float a, float b)
{
    if (a == b)
        return 0.0;
    return fabs((double)a - b) / fmax(fabs((double)b), 1e-30);
}

static void test_helpers(void)
{
    mp_rng r = {51};
    const size_t ns[] = {1, 15, 16, 17, 100, 7168};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        size_t n = ns[a];
        float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w), *u = malloc(n * sizeof *u);
        float *y0 = malloc(n * sizeof *y0), *y = malloc(n * sizeof *y);
        fill_gauss(&r, x, n, 3.0);
        fill_gauss(&r, w, n, 1.0);
        fill_gauss(&r, u, n, 1.0);
        const float extremes[] = {-100.0f, -20.0f, 0.0f, 20.0f, 88.0f, 100.0f, -87.5f, 1e-30f};
        for (size_t i = 0; i < n && i < 8; i++)
            x[i] = extremes[i];
        for (int t = 0; t < MP_ISA_COUNT; t++) {
            if (!tabs[t])
                continue;
            const char *name = mp_isa_name((mp_isa)t);
            double e = 0.0;
            scalar->rmsnorm(n, x, w, 1e-6f, y0);
            tabs[t]->rmsnorm(n, x, w, 1e-6f, y);
            for (size_t i = 0; i < n; i++)
                e = fmax(e, rel_err(y[i], y0[i]));
            CHECKF(e < 1e-5, "rmsnorm %s n=%zu: %.3g", name, n, e);

            e = 0.0;
            scalar->silu_mul(n, x, u, y0);
            tabs[t]->silu_mul(n, x, u, y);
            for (size_t i = 0; i < n; i++)
                e = fmax(e, fabs((double)y[i] - y0[i]) / (fabs((double)y0[i]) + 1e-37));
            CHECKF(e < 2e-6, "silu_mul %s n=%zu: %.3g", name, n, e);

            e = 0.0;
            memcpy(y0, x, n * sizeof *x);
            memcpy(y, x, n * sizeof *x);
            scalar->softmax(n, y0);
            tabs[t]->softmax(n, y);
            double sum = 0.0;
            for (size_t i = 0; i < n; i++) {
                e = fmax(e, fabs((double)y[i] - y0[i]) / (fabs((double)y0[i]) + 1e-37));
                sum += y[i];
            }
            CHECKF(e < 2e-6 && fabs(sum - 1.0) < 1e-5, "softmax %s n=%zu: %.3g (sum %.8f)", name, n, e, sum);

            double d = 0.0, da = 0.0;
            for (size_t i = 0; i < n; i++) {
                d += (double)x[i] * w[i];
                da += fabs((double)x[i] * w[i]);
            }
            CHECKF(fabs(tabs[t]->dot(n, x, w) - d) <= 1e-6 * da, "dot %s n=%zu", name, n);

            memcpy(y0, u, n * sizeof *u);
            memcpy(y, u, n * sizeof *u);
            scalar->axpy(n, 0.37f, x, y0);
            tabs[t]->axpy(n, 0.37f, x, y);
            e = 0.0;
            for (size_t i = 0; i < n; i++)
                e = fmax(e, fabs((double)y[i] - y0[i]) / (fabs(0.37 * x[i]) + fabs((double)u[i])));
            CHECKF(e < 1e-6, "axpy %s n=%zu: %.3g", name, n, e);
        }
        free(x), free(w), free(u), free(y0), free(y);
    }
}

/* ---- MOEPACK_ISA, determinism, NUMA split ------------------------------------------- */
static void test_forcing(void)
{
    mp_error err = {0};
    setenv("MOEPACK_ISA", "scalar", 1);
    const mp_cpu_kernels *t = mp_cpu_kernels_best(&err);
    CHECK(t && t->isa == MP_ISA_SCALAR);
    for (int i = 0; i < MP_ISA_COUNT; i++) {
        setenv("MOEPACK_ISA", mp_isa_name((mp_isa)i), 1);
        t = mp_cpu_kernels_best(&err);
        if (mp_isa_available((mp_isa)i)) {
            CHECK(t && t->isa == (mp_isa)i);
        } else {
            CHECK(!t && err.code == MP_ERR_USAGE && strstr(err.msg, "not available"));
            printf("forcing %s here: %s\n", mp_isa_name((mp_isa)i), err.msg);
        }
    }
    setenv("MOEPACK_ISA", "AVX2", 1); /* case-insensitive */
    t = mp_cpu_kernels_best(&err);
    CHECK(!mp_isa_available(MP_ISA_AVX2) || (t && t->isa == MP_ISA_AVX2));
    setenv("MOEPACK_ISA", "sse9", 1);
    t = mp_cpu_kernels_best(&err);
    CHECK(!t && err.code == MP_ERR_USAGE && strstr(err.msg, "MOEPACK_ISA=sse9"));
    CHECK(mp_cpu_kernels_get((mp_isa)99, &err) == NULL);
    unsetenv("MOEPACK_ISA");
    t = mp_cpu_kernels_best(&err);
    CHECK(t && t->isa == mp_isa_best());
}

static void test_determinism(void)
{
    mp_rng r = {61};
    mp_error err = {0};
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(40, 500, 128, &l, &err) == MP_OK);
    float *w = malloc(40 * 500 * sizeof *w), *x = malloc(5 * 500 * sizeof *x);
    fill_gauss(&r, w, 40 * 500, 1.0);
    fill_gauss(&r, x, 5 * 500, 1.0);
    uint8_t *p = malloc(l.total_bytes);
    REQUIRE(mp_amx_int8_quantize_pack_rows(&l, 0, 40, w, 500, p, l.total_bytes, &err) == MP_OK);
    mp_amx_int8_view v;
    mp_amx_int8_view_init(&l, p, &v);
    int8_t xq[5 * 512];
    float xs[5 * 4], y1[5 * 40], y2[5 * 40];
    scalar->quantize_act_q8(5, x, 500, 500, 128, xq, 512, xs);
    scalar->gemm_q8(&v, 5, xq, 512, xs, 0, 40, y1, 40, false);
    scalar->gemm_q8(&v, 5, xq, 512, xs, 0, 40, y2, 40, false);
    CHECK(!memcmp(y1, y2, sizeof y1));
    scalar->gemm_f32(w, 500, 500, 5, x, 500, 0, 40, y1, 40, false);
    scalar->gemm_f32(w, 500, 500, 5, x, 500, 0, 40, y2, 40, false);
    CHECK(!memcmp(y1, y2, sizeof y1));
    free(w), free(x), free(p);
}

/* An expert computed node by node (gate/up on row views, down on group views
 * with accumulate) equals the whole-expert computation bit for bit. */
static void test_numa_split(void)
{
    mp_rng r = {71};
    mp_error err = {0};
    const uint32_t H = 320, I = 1408;
    const size_t m = 3;
    mp_amx_int8_layout gl, dl;
    REQUIRE(mp_expert_layouts(H, I, MP_EXPERT_SLICE_WIDTH, &gl, &dl, &err) == MP_OK);
    float *wg = malloc((size_t)I * H * sizeof *wg), *wd = malloc((size_t)H * I * sizeof *wd);
    fill_gauss(&r, wg, (size_t)I * H, 0.05);
    fill_gauss(&r, wd, (size_t)H * I, 0.05);
    uint8_t *pg = malloc(gl.total_bytes), *pd = malloc(dl.total_bytes);
    REQUIRE(mp_amx_int8_quantize_pack_rows(&gl, 0, I, wg, H, pg, gl.total_bytes, &err) == MP_OK);
    REQUIRE(mp_amx_int8_quantize_pack_rows(&dl, 0, H, wd, I, pd, dl.total_bytes, &err) == MP_OK);
    mp_amx_int8_view gv, dv;
    mp_amx_int8_view_init(&gl, pg, &gv);
    mp_amx_int8_view_init(&dl, pd, &dv);
    const mp_cpu_kernels *t = mp_cpu_kernels_get(mp_isa_best(), &err);
    REQUIRE(t);
    float x[3 * 320], h[3 * 1408], yfull[3 * 320], ynode[3 * 320];
    fill_gauss(&r, x, m * H, 1.0);
    int8_t xq[3 * 320], hq[3 * 1408];
    float xs[3], hs[3 * 6];
    t->quantize_act_q8(m, x, H, H, gl.kg, xq, H, xs);
    /* whole expert (a gate-only "expert": h = gate x, enough for the layouts) */
    t->gemm_q8(&gv, m, xq, H, xs, 0, I, h, I, false);
    t->quantize_act_q8(m, h, I, I, 256, hq, I, hs);
    t->gemm_q8(&dv, m, hq, I, hs, 0, H, yfull, H, false);
    for (uint32_t nodes = 1; nodes <= 8; nodes++) {
        memset(ynode, 0, sizeof ynode);
        for (uint32_t j = 0; j < nodes; j++) {
            mp_expert_share s;
            REQUIRE(mp_expert_share_for_node(H, I, MP_EXPERT_SLICE_WIDTH, nodes, j, &s, &err) == MP_OK);
            if (s.slice0 == s.slice1)
                continue;
            mp_amx_int8_view gsub, dsub;
            REQUIRE(mp_amx_int8_view_rows(&gv, s.row0, s.row1, &gsub, &err) == MP_OK);
            REQUIRE(mp_amx_int8_view_groups(&dv, s.slice0, s.slice1, &dsub, &err) == MP_OK);
            CHECK((const uint8_t *)gsub.data == pg + s.gate_up_data.offset);
            CHECK((const uint8_t *)dsub.data == pd + s.down_data.offset);
            CHECK((const uint8_t *)dsub.scale == pd + s.down_scale.offset);
            uint32_t w = s.row1 - s.row0;
            float hp[3 * 1408];
            int8_t hpq[3 * 1408];
            float hps[3 * 6];
            t->gemm_q8(&gsub, m, xq, H, xs, 0, w, hp, w, false);
            t->quantize_act_q8(m, hp, w, w, 256, hpq, dsub.lay.kp, hps);
            t->gemm_q8(&dsub, m, hpq, dsub.lay.kp, hps, 0, H, ynode, H, j > 0);
        }
        CHECKF(!memcmp(ynode, yfull, sizeof yfull), "NUMA split over %u nodes differs", nodes);
    }
    free(wg), free(wd), free(pg), free(pd);
}

/* The fed-loop probe (bench_amx's ceiling for the kernel's tile block)
 * multiplies what it loads, and swaps C as it says: A all 1, B all 2, so
 * every k-step adds 64 x 2 to each of the 32 x 32 sums. */
static void test_amx_fed_loop(void)
{
    if (!tabs[MP_ISA_AMX])
        return;
    int8_t *buf = aligned_alloc(64, 32768);
    int32_t *slots = aligned_alloc(64, 4 * MP_AMX_SLOT_INT32 * sizeof(int32_t));
    REQUIRE(buf && slots);
    memset(buf, 1, 16384);
    memset(buf + 16384, 2, 16384);
    const struct {
        uint64_t iters;
        int swap_every;
        int32_t want[2]; /* every sum of slots 0 and 1 after the loop */
    } cases[] = {
        {10, 0, {10 * 128, 0}},
        /* k-step 8: C to slot 0, slot 1 (zeros) in; 16: C to slot 1, slot 2
         * (zeros) in; the end: C (0) to slot 0 */
        {16, 8, {0, 8 * 128}},
        /* k-step 8: C to slot 0, slot 1 in; the end: 4 k-steps' sums to slot 0 */
        {12, 8, {4 * 128, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memset(slots, 0, 4 * MP_AMX_SLOT_INT32 * sizeof(int32_t));
        mp_amx_fed_loop(cases[c].iters, buf, slots, cases[c].swap_every, 4);
        int bad = 0;
        for (int sl = 0; sl < 2; sl++)
            for (int r = 0; r < 32; r++)
                for (int col = 0; col < 32; col++)
                    bad += slots[(size_t)sl * MP_AMX_SLOT_INT32 + (size_t)r * 32 + (size_t)col] != cases[c].want[sl];
        CHECKF(bad == 0, "fed loop, %llu k-steps, swap every %d: %d sums wrong", (unsigned long long)cases[c].iters,
               cases[c].swap_every, bad);
    }
    for (int loads = 0; loads < 4; loads++) { /* the tiles not reloaded keep k-step 0's (all alike here) */
        memset(slots, 0, 4 * MP_AMX_SLOT_INT32 * sizeof(int32_t));
        mp_amx_fed_loop(5, buf, slots, 0, loads);
        int bad = 0;
        for (int r = 0; r < 32; r++)
            for (int col = 0; col < 32; col++)
                bad += slots[(size_t)r * 32 + (size_t)col] != 5 * 128;
        CHECKF(bad == 0, "fed loop with %d tile loads a k-step: %d sums wrong", loads, bad);
    }
    free(buf);
    free(slots);
}

/* The int8 tests again in a child with MOEPACK_AMX_TUNE set: other block
 * sizes and loop orders of the AMX kernel must give the same bits. */
static void test_amx_tune_child(const char *self, const char *tune)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setenv("MOEPACK_AMX_TUNE", tune, 1);
        setenv("MP_TEST_Q8_ONLY", "1", 1);
        execl(self, self, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the run with MOEPACK_AMX_TUNE=%s failed (status %d)", tune,
           status);
}

/* Runs this test again with MOEPACK_ISA_MAX=avx2: the paths above AVX2 are
 * then absent, as on a smaller machine (skips, "not available" errors). */
static void test_capped_child(const char *self)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setenv("MOEPACK_ISA_MAX", "avx2", 1);
        execl(self, self, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the run with MOEPACK_ISA_MAX=avx2 failed (status %d)",
           status);
}

int main(int argc, char **argv)
{
    (void)argc;
    mp_error err = {0};
    const char *cap = getenv("MOEPACK_ISA_MAX");
    if (cap)
        printf("== run with MOEPACK_ISA_MAX=%s\n", cap);
    for (int i = 0; i < MP_ISA_COUNT; i++) {
        tabs[i] = mp_cpu_kernels_get((mp_isa)i, &err);
        if (!tabs[i])
            printf("note: %s\n  (its tests are skipped)\n", err.msg);
        else
            printf("testing the %s path\n", mp_isa_name((mp_isa)i));
    }
    scalar = tabs[MP_ISA_SCALAR];
    REQUIRE(scalar);
    if (getenv("MP_TEST_Q8_ONLY")) { /* a tuning child: see test_amx_tune_child */
        printf("== int8 only, MOEPACK_AMX_TUNE=%s\n", getenv("MOEPACK_AMX_TUNE") ? getenv("MOEPACK_AMX_TUNE") : "");
        for (int i = MP_ISA_SCALAR + 1; i < MP_ISA_AMX; i++) /* unchanged by the tuning */
            tabs[i] = NULL;
        test_q8();
        test_q8_big();
        test_numa_split();
        return mp_test_finish();
    }
    test_forcing();
    test_quantize_act();
    test_helpers();
    test_q8();
    test_q8_big();
    test_float_kernels();
    test_split_act();
    test_bf16_split_blocks();
    test_amx_fed_loop();
    test_determinism();
    test_numa_split();
    if (cap) {
        mp_isa c;
        CHECK(!mp_isa_parse(cap, &c) || mp_isa_best() <= c);
    } else {
        fflush(stdout);
        test_capped_child(argv[0]);
        if (tabs[MP_ISA_AMX]) {
            test_amx_tune_child(argv[0], "ks=3,order=1,mc=64,allk=0,allkm=0,pf=0");
            test_amx_tune_child(argv[0], "ks=1000,allk=1000,mc=32,order=0");
        }
    }
    return mp_test_finish();
}
