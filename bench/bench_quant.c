/* RMS relative error of the int4 quantizer variants (and int8 for scale) on
 * random matrices: gaussian, and heavy-tailed student-t (nu = 3 and 5), so
 * the lead can pick the default fit.
 *
 * usage: bench_quant [rows] [cols]    (default 256 x 7168)
 * error = sqrt(sum (w - dequant(w))^2 / sum w^2) over the whole matrix. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_quant.h"
#include "test_rand.h"

static double rms_int4(const float *w, size_t rows, uint32_t k, mp_int4_scheme sc, mp_int4_fit fit)
{
    uint32_t groups = mp_group_count(k, MP_INT4_GROUP);
    uint8_t *q = malloc(k);
    uint16_t *s = malloc(groups * 2), *m = malloc(groups * 2);
    double se = 0.0, ss = 0.0;
    mp_error err = {0};
    for (size_t r = 0; r < rows; r++) {
        const float *wr = w + r * k;
        if (mp_quant_int4_row(wr, k, sc, fit, q, s, m, &err) != MP_OK) {
            fprintf(stderr, "bench_quant: %s\n", err.msg);
            exit(2);
        }
        for (uint32_t i = 0; i < k; i++) {
            uint32_t g = i / MP_INT4_GROUP;
            float d = mp_int4_dequant(sc, q[i], mp_f16_to_f32(s[g]), sc == MP_INT4_ASYM ? mp_f16_to_f32(m[g]) : 0.0f);
            se += ((double)wr[i] - d) * ((double)wr[i] - d);
            ss += (double)wr[i] * wr[i];
        }
    }
    free(q), free(s), free(m);
    return sqrt(se / ss);
}

static double rms_int8(const float *w, size_t rows, uint32_t k, uint32_t kg)
{
    int8_t *q = malloc(k);
    float *s = malloc(mp_group_count(k, kg) * sizeof *s);
    double se = 0.0, ss = 0.0;
    mp_error err = {0};
    for (size_t r = 0; r < rows; r++) {
        const float *wr = w + r * k;
        if (mp_quant_int8_row(wr, k, kg, q, s, &err) != MP_OK)
            exit(2);
        for (uint32_t i = 0; i < k; i++) {
            double d = (double)q[i] * s[i / kg];
            se += (wr[i] - d) * (wr[i] - d);
            ss += (double)wr[i] * wr[i];
        }
    }
    free(q), free(s);
    return sqrt(se / ss);
}

int main(int argc, char **argv)
{
    size_t rows = argc > 1 ? (size_t)atol(argv[1]) : 256;
    uint32_t k = argc > 2 ? (uint32_t)atol(argv[2]) : 7168;
    if (rows == 0 || k == 0) {
        fprintf(stderr, "usage: bench_quant [rows] [cols]\n");
        return 1;
    }
    float *w = malloc(rows * k * sizeof *w);
    const char *dists[] = {"gaussian", "student-t nu=5", "student-t nu=3"};
    printf("RMS relative error, %zu x %u, int4 groups of 128 (f16 scales), int8 per row or per 256\n", rows, k);
    printf("%-16s %9s %9s %9s | %9s %9s | %9s %9s\n", "distribution", "sym-mm", "sym-ext8", "sym-mse", "asym-mm",
           "asym-mse", "int8-row", "int8-256");
    for (int d = 0; d < 3; d++) {
        mp_rng r = {(uint64_t)d + 100};
        for (size_t i = 0; i < rows * k; i++)
            w[i] = (float)(0.02 * (d == 0 ? mp_rng_gauss(&r) : mp_rng_student_t(&r, d == 1 ? 5 : 3)));
        printf("%-16s %9.5f %9.5f %9.5f | %9.5f %9.5f | %9.6f %9.6f\n", dists[d],
               rms_int4(w, rows, k, MP_INT4_SYM, MP_INT4_FIT_MINMAX), rms_int4(w, rows, k, MP_INT4_SYM, MP_INT4_FIT_EXTREME8),
               rms_int4(w, rows, k, MP_INT4_SYM, MP_INT4_FIT_MSE), rms_int4(w, rows, k, MP_INT4_ASYM, MP_INT4_FIT_MINMAX),
               rms_int4(w, rows, k, MP_INT4_ASYM, MP_INT4_FIT_MSE), rms_int8(w, rows, k, k), rms_int8(w, rows, k, 256));
        fflush(stdout);
    }
    free(w);
    return 0;
}
