/* quantize/: int8 and int4 weight quantizers and the int8 activation
 * quantizer: exact error bounds, scale rules, padding, ties, bad input. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_quant.h"
#include "mp_test.h"
#include "test_rand.h"

static void fill_gauss(mp_rng *r, float *w, size_t n, double sigma)
{
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(sigma * mp_rng_gauss(r));
}

/* ---- int8 weights ----------------------------------------------------------- */
static void check_int8_row(const float *w, uint32_t k, uint32_t kg)
{
    uint32_t groups = mp_group_count(k, kg);
    int8_t *q = malloc(k);
    float *s = malloc(groups * sizeof *s);
    mp_error err = {0};
    REQUIRE(mp_quant_int8_row(w, k, kg, q, s, &err) == MP_OK);
    int bad_bound = 0, bad_scale = 0, bad_max = 0;
    for (uint32_t g = 0; g < groups; g++) {
        uint32_t k0 = g * kg, k1 = k0 + kg < k ? k0 + kg : k;
        float amax = 0.0f;
        for (uint32_t i = k0; i < k1; i++)
            amax = fmaxf(amax, fabsf(w[i]));
        if (s[g] != amax / 127.0f)
            bad_scale++;
        for (uint32_t i = k0; i < k1; i++) {
            /* exact in double: q*s has at most 32 significant bits */
            double e = fabs((double)w[i] - (double)q[i] * (double)s[g]);
            if (e > (double)s[g] / 2 || q[i] < -127)
                bad_bound++;
            if (fabsf(w[i]) == amax && amax > 0 && abs(q[i]) != 127)
                bad_max++;
        }
    }
    CHECKF(bad_scale == 0, "k=%u kg=%u: %d scales differ from max|w|/127", k, kg, bad_scale);
    CHECKF(bad_bound == 0, "k=%u kg=%u: %d values off by more than scale/2", k, kg, bad_bound);
    CHECKF(bad_max == 0, "k=%u kg=%u: %d group maxima not at +-127", k, kg, bad_max);
    free(q);
    free(s);
}

static void test_int8(void)
{
    mp_rng r = {1};
    const uint32_t ks[] = {1, 63, 64, 100, 1000, 7168, 10944};
    const uint32_t kgs[] = {64, 128, 256, 1u << 20};
    float *w = malloc(10944 * sizeof *w);
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t b = 0; b < sizeof kgs / sizeof kgs[0]; b++) {
            fill_gauss(&r, w, ks[a], 0.02);
            check_int8_row(w, ks[a], kgs[b]);
        }
    /* a zero group between nonzero ones: scale 0, q 0 */
    fill_gauss(&r, w, 192, 1.0);
    memset(w + 64, 0, 64 * sizeof *w);
    int8_t q[192];
    float s[3];
    mp_error err = {0};
    REQUIRE(mp_quant_int8_row(w, 192, 64, q, s, &err) == MP_OK);
    CHECK(s[1] == 0.0f && s[0] > 0.0f && s[2] > 0.0f);
    int nz = 0;
    for (int i = 64; i < 128; i++)
        nz += q[i] != 0;
    CHECK(nz == 0);
    /* ties round to even: with max 127 the scale is exactly 1 */
    const float tie[] = {127.0f, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f, -127.0f};
    int8_t qt[7];
    float st;
    REQUIRE(mp_quant_int8_row(tie, 7, 64, qt, &st, &err) == MP_OK);
    CHECK(st == 1.0f);
    CHECK(qt[0] == 127 && qt[1] == 0 && qt[2] == 2 && qt[3] == 2 && qt[4] == -2 && qt[5] == 0 && qt[6] == -127);
    /* non-finite input is an error, not a crash */
    w[5] = NAN;
    CHECK(mp_quant_int8_row(w, 192, 64, q, s, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "column 5") != NULL);
    w[5] = INFINITY;
    CHECK(mp_quant_int8_row(w, 192, 64, q, s, &err) == MP_ERR_INPUT);
    free(w);
}

/* ---- int8 activations ---------------------------------------------------------- */
static void test_act(void)
{
    mp_rng r = {2};
    const uint32_t k = 300, kg = 128; /* groups 128, 128, 44 -> padded to 64 */
    uint64_t kp = mp_q8_padded_k(k, kg);
    CHECK(kp == 128 + 128 + 64);
    const size_t m = 3, ldx = 310, ldq = 400;
    float *x = malloc(m * ldx * sizeof *x);
    int8_t *xq = malloc(m * ldq);
    float xs[3 * 3];
    fill_gauss(&r, x, m * ldx, 3.0);
    for (uint32_t i = 0; i < k; i++)
        x[ldx + i] = 0.0f; /* an all-zero row */
    x[2 * ldx + 7] = NAN;  /* NaN: never UB, becomes -127 */
    memset(xq, 0x55, m * ldq);
    mp_quant_act_int8(m, x, ldx, k, kg, xq, ldq, xs);
    int bad = 0, pad = 0;
    for (size_t row = 0; row < m; row++) {
        for (uint32_t g = 0; g < 3; g++) {
            uint32_t k0 = g * kg, k1 = k0 + kg < k ? k0 + kg : k;
            float amax = 0.0f;
            for (uint32_t i = k0; i < k1; i++)
                if (fabsf(x[row * ldx + i]) > amax)
                    amax = fabsf(x[row * ldx + i]);
            float s = xs[row * 3 + g];
            if (s != amax / 127.0f)
                bad++;
            for (uint32_t i = k0; i < k1; i++) {
                float v = x[row * ldx + i];
                int8_t qv = xq[row * ldq + i];
                if (isnan(v)) {
                    bad += qv != -127;
                    continue;
                }
                /* f32 division: the bound holds up to one rounding of v/s */
                if (fabs((double)v - (double)qv * s) > s * 0.5 * (1 + 1e-6) || qv < -127)
                    bad++;
            }
        }
        for (uint64_t i = k; i < kp; i++)
            pad += xq[row * ldq + i] != 0;
        for (uint64_t i = kp; i < ldq; i++) /* nothing written past kp */
            pad += xq[row * ldq + i] != 0x55;
    }
    CHECKF(bad == 0, "%d activation values or scales wrong", bad);
    CHECKF(pad == 0, "%d padding bytes wrong", pad);
    CHECK(xs[3] == 0.0f && xs[4] == 0.0f && xs[5] == 0.0f);
    free(x);
    free(xq);
}

/* ---- int4 -------------------------------------------------------------------------- */
typedef struct int4_stats {
    double sse, ss;
    int bad_bound, bad_q;
} int4_stats;

static double group_sse(const float *w, const uint8_t *q, uint32_t n, mp_int4_scheme sc, float s, float m)
{
    double sse = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double e = (double)w[i] - (double)mp_int4_dequant(sc, q[i], s, m);
        sse += e * e;
    }
    return sse;
}

static void test_int4_row(const float *w, uint32_t k, mp_int4_scheme sc, int *worse_than_minmax, int4_stats *st)
{
    uint32_t groups = mp_group_count(k, MP_INT4_GROUP);
    uint8_t *q[3];
    uint16_t *s[3], *mn[3];
    mp_error err = {0};
    for (int f = 0; f < 3; f++) {
        q[f] = malloc(k);
        s[f] = malloc(groups * 2);
        mn[f] = malloc(groups * 2);
        REQUIRE(mp_quant_int4_row(w, k, sc, (mp_int4_fit)f, q[f], s[f], mn[f], &err) == MP_OK);
        for (uint32_t i = 0; i < k; i++)
            st[f].bad_q += q[f][i] > 15;
    }
    for (uint32_t g = 0; g < groups; g++) {
        uint32_t k0 = g * MP_INT4_GROUP, n = k - k0 < MP_INT4_GROUP ? k - k0 : MP_INT4_GROUP;
        double sse[3];
        for (int f = 0; f < 3; f++) {
            float sf = mp_f16_to_f32(s[f][g]);
            float mf = sc == MP_INT4_ASYM ? mp_f16_to_f32(mn[f][g]) : 0.0f;
            sse[f] = group_sse(w + k0, q[f] + k0, n, sc, sf, mf);
            st[f].sse += sse[f];
            for (uint32_t i = 0; i < n; i++)
                st[f].ss += (double)w[k0 + i] * w[k0 + i];
        }
        /* MINMAX: every value within half a step (plus, for asym, the one
         * f32 rounding of q*s+m); the scale covers the group's real values */
        float s0 = mp_f16_to_f32(s[0][g]);
        float m0 = sc == MP_INT4_ASYM ? mp_f16_to_f32(mn[0][g]) : 0.0f;
        float lo = w[k0], hi = w[k0], amax = 0.0f;
        for (uint32_t i = 0; i < n; i++) {
            float v = w[k0 + i];
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
            amax = fmaxf(amax, fabsf(v));
            double dq = mp_int4_dequant(sc, q[0][k0 + i], s0, m0);
            double tol = 0.5 * s0 + (sc == MP_INT4_ASYM ? fabs(dq) * 0x1p-24 : 0.0);
            if (fabs((double)v - dq) > tol)
                st[0].bad_bound++;
        }
        if (sc == MP_INT4_SYM) {
            /* the smallest f16 at or above max|w|/7 */
            CHECK((double)s0 >= amax / 7.0);
            CHECK(amax == 0.0f || (double)mp_f16_to_f32((uint16_t)(s[0][g] - 1)) < amax / 7.0);
        } else {
            CHECK(m0 <= lo && (double)m0 + 15.0 * s0 >= hi);
            CHECK(lo - m0 <= fabsf(lo) * 0x1p-10f + 1e-7f); /* min rounded down only by f16's step */
        }
        /* EXTREME8 puts the extreme value at q = 0 */
        if (amax > 0) {
            float s1 = mp_f16_to_f32(s[1][g]);
            for (uint32_t i = 0; i < n && sc == MP_INT4_SYM; i++)
                if (fabsf(w[k0 + i]) == amax) {
                    CHECK(q[1][k0 + i] == 0 || fabs(w[k0 + i] - mp_int4_dequant(sc, q[1][k0 + i], s1, 0)) <=
                                                   fabs(s1) * 0.51);
                    break;
                }
        }
        if (sse[2] > sse[0] * (1 + 1e-12) + 1e-30)
            (*worse_than_minmax)++;
    }
    for (int f = 0; f < 3; f++) {
        free(q[f]);
        free(s[f]);
        free(mn[f]);
    }
}

static void test_int4(void)
{
    mp_rng r = {3};
    const uint32_t ks[] = {1, 100, 128, 1000, 7168, 10944};
    float *w = malloc(10944 * sizeof *w);
    for (int sc = 0; sc < 2; sc++) {
        int4_stats st[3] = {{0}};
        int worse = 0;
        for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
            for (int rep = 0; rep < 3; rep++) {
                for (uint32_t i = 0; i < ks[a]; i++)
                    w[i] = rep == 2 ? (float)(0.01 * mp_rng_student_t(&r, 3)) : (float)(0.02 * mp_rng_gauss(&r));
                test_int4_row(w, ks[a], (mp_int4_scheme)sc, &worse, st);
            }
        const char *name = sc ? "asym" : "sym";
        for (int f = 0; f < 3; f++)
            CHECKF(st[f].bad_q == 0, "%s: q out of [0,15]", name);
        CHECKF(st[0].bad_bound == 0, "%s minmax: %d values off by more than scale/2", name, st[0].bad_bound);
        CHECKF(worse == 0, "%s: the MSE fit is worse than minmax in %d groups", name, worse);
        double rms0 = sqrt(st[0].sse / st[0].ss), rms2 = sqrt(st[2].sse / st[2].ss);
        printf("int4 %s: rms rel error minmax %.5f extreme8 %.5f mse %.5f\n", name, rms0, sqrt(st[1].sse / st[1].ss),
               rms2);
        CHECK(rms2 < rms0 && rms0 < 0.2);
    }

    /* the short last group of K = 10944 (64 real values) is fitted to them
     * alone: all values in [5, 6] give min near 5, not the padding's 0 */
    for (uint32_t i = 0; i < 10944; i++)
        w[i] = (float)(0.02 * mp_rng_gauss(&r));
    for (uint32_t i = 10880; i < 10944; i++)
        w[i] = 5.0f + (float)mp_rng_unif(&r);
    uint8_t *q = malloc(10944);
    uint16_t s[86], mn[86];
    mp_error err = {0};
    REQUIRE(mp_quant_int4_row(w, 10944, MP_INT4_ASYM, MP_INT4_FIT_MINMAX, q, s, mn, &err) == MP_OK);
    float lo = 6.0f;
    for (uint32_t i = 10880; i < 10944; i++)
        lo = fminf(lo, w[i]);
    /* f16 steps are 2^-8 near 5 */
    CHECK(mp_f16_to_f32(mn[85]) <= lo && mp_f16_to_f32(mn[85]) > lo - 0.004f);
    CHECK(mp_f16_to_f32(s[85]) < 1.0f / 15 * 1.01f);
    /* sym: the last group's scale from its own max */
    for (uint32_t i = 10880; i < 10944; i++)
        w[i] = 0.001f * (float)(i - 10880);
    REQUIRE(mp_quant_int4_row(w, 10944, MP_INT4_SYM, MP_INT4_FIT_MINMAX, q, s, NULL, &err) == MP_OK);
    CHECK(fabs(mp_f16_to_f32(s[85]) - 0.063 / 7) < 0.063 / 7 * 1e-3);

    /* errors: non-finite, out of the f16 range, asym without mins */
    w[3] = NAN;
    CHECK(mp_quant_int4_row(w, 200, MP_INT4_SYM, MP_INT4_FIT_MSE, q, s, mn, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "columns 0..127") != NULL);
    w[3] = 1e9f;
    CHECK(mp_quant_int4_row(w, 200, MP_INT4_SYM, MP_INT4_FIT_MINMAX, q, s, mn, &err) == MP_ERR_INPUT);
    CHECK(mp_quant_int4_row(w, 200, MP_INT4_ASYM, MP_INT4_FIT_MINMAX, q, s, NULL, &err) == MP_ERR_INPUT);
    /* an all-zero group: scale 0, sym q = 8 (zero), asym q = 0 with min 0 */
    memset(w, 0, 128 * sizeof *w);
    REQUIRE(mp_quant_int4_row(w, 128, MP_INT4_SYM, MP_INT4_FIT_MSE, q, s, NULL, &err) == MP_OK);
    CHECK(mp_f16_to_f32(s[0]) == 0.0f && q[0] == 8 && q[127] == 8);
    REQUIRE(mp_quant_int4_row(w, 128, MP_INT4_ASYM, MP_INT4_FIT_MSE, q, s, mn, &err) == MP_OK);
    CHECK(mp_f16_to_f32(s[0]) == 0.0f && mp_f16_to_f32(mn[0]) == 0.0f && q[0] == 0);
    free(q);
    free(w);
}

/* The same input always gives the same bits (no hidden state, no threads). */
static void test_determinism(void)
{
    mp_rng r = {4};
    float *w = malloc(1000 * sizeof *w);
    fill_gauss(&r, w, 1000, 1.0);
    uint8_t q1[1000], q2[1000];
    uint16_t s1[8], s2[8], m1[8], m2[8];
    mp_error err = {0};
    REQUIRE(mp_quant_int4_row(w, 1000, MP_INT4_ASYM, MP_INT4_FIT_MSE, q1, s1, m1, &err) == MP_OK);
    REQUIRE(mp_quant_int4_row(w, 1000, MP_INT4_ASYM, MP_INT4_FIT_MSE, q2, s2, m2, &err) == MP_OK);
    CHECK(!memcmp(q1, q2, sizeof q1) && !memcmp(s1, s2, sizeof s1) && !memcmp(m1, m2, sizeof m1));
    free(w);
}

int main(void)
{
    test_int8();
    test_act();
    test_int4();
    test_determinism();
    return mp_test_finish();
}
