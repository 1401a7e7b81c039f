/* The synth weight generator: the normal table, element values that do not
 * depend on how rows are cut into jobs, DeepSeek's FP8 block quantization
 * (checked by dequantizing), and the statistics the kinds promise; a stopped
 * run removes what it wrote, and a run's files fit in its disk_bytes. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_num.h"
#include "mp_test.h"
#include "synth_internal.h"

static float *normal_table(void)
{
    float *t = malloc(MP_SYNTH_NORMAL_TABLE * sizeof *t);
    REQUIRE(t);
    mp_synth_normal_table(t);
    return t;
}

static void test_table(const float *t)
{
    double sum = 0, sq = 0;
    int increasing = 1, symmetric = 1;
    for (int i = 0; i < MP_SYNTH_NORMAL_TABLE; i++) {
        sum += t[i];
        sq += (double)t[i] * t[i];
        if (i && !(t[i] > t[i - 1]))
            increasing = 0;
        if (fabsf(t[i] + t[MP_SYNTH_NORMAL_TABLE - 1 - i]) > 1e-5f)
            symmetric = 0;
    }
    double mean = sum / MP_SYNTH_NORMAL_TABLE, var = sq / MP_SYNTH_NORMAL_TABLE - mean * mean;
    CHECK(increasing);
    CHECK(symmetric);
    CHECKF(fabs(mean) < 1e-6, "mean %g", mean);
    CHECKF(fabs(var - 1.0) < 0.002, "variance %g", var); /* a 65536-point discretization of N(0, 1) */
    CHECKF(fabsf(t[MP_SYNTH_NORMAL_TABLE / 2] - 1.9e-5f) < 1e-5f, "median %g", t[MP_SYNTH_NORMAL_TABLE / 2]);
    /* the 97.5% quantile is 1.959964 */
    CHECKF(fabsf(t[(int)(0.975 * MP_SYNTH_NORMAL_TABLE)] - 1.96f) < 0.002f, "%g", t[(int)(0.975 * 65536)]);
    CHECKF(t[MP_SYNTH_NORMAL_TABLE - 1] > 4.2f && t[MP_SYNTH_NORMAL_TABLE - 1] < 4.5f, "max %g",
           t[MP_SYNTH_NORMAL_TABLE - 1]);
}

/* Values depend on the element index only: a [5, 7] tensor and a [1, 35]
 * tensor with the same key agree element by element (NORM has no per-row
 * or per-column factors), whatever the alignment of a row to the 4-element
 * random draws. */
static void test_layout_independent(const float *t)
{
    mp_synth_values a, b;
    uint64_t key = mp_synth_tensor_key(3, "x");
    mp_synth_values_init(&a, key, MP_SYNTH_KIND_NORM, 5, 7);
    mp_synth_values_init(&b, key, MP_SYNTH_KIND_NORM, 1, 35);
    float colf[35], row[35], flat[35];
    mp_synth_col_factors(&b, colf);
    mp_synth_row_f32(&b, t, colf, 0, flat);
    int bad = 0;
    for (uint32_t r = 0; r < 5; r++) {
        mp_synth_col_factors(&a, colf);
        mp_synth_row_f32(&a, t, colf, r, row);
        for (int c = 0; c < 7; c++)
            bad += row[c] != flat[r * 7 + c];
    }
    CHECKF(bad == 0, "%d elements differ", bad);
    /* and the same call twice gives the same row */
    float again[35];
    mp_synth_row_f32(&b, t, colf, 0, again);
    CHECK(memcmp(again, flat, sizeof flat) == 0);
}

static void test_keys(void)
{
    CHECK(mp_synth_tensor_key(1, "a.weight") == mp_synth_tensor_key(1, "a.weight"));
    CHECK(mp_synth_tensor_key(1, "a.weight") != mp_synth_tensor_key(2, "a.weight"));
    CHECK(mp_synth_tensor_key(1, "a.weight") != mp_synth_tensor_key(1, "b.weight"));
}

static void stats(const mp_synth_values *v, const float *t, double *mean, double *std, double *col_ratio)
{
    float *colf = malloc(v->cols * sizeof *colf), *row = malloc(v->cols * sizeof *row);
    double *colabs = calloc(v->cols, sizeof *colabs);
    REQUIRE(colf && row && colabs);
    mp_synth_col_factors(v, colf);
    double s = 0, q = 0;
    for (uint32_t r = 0; r < v->rows; r++) {
        mp_synth_row_f32(v, t, colf, r, row);
        for (uint32_t c = 0; c < v->cols; c++) {
            s += row[c];
            q += (double)row[c] * row[c];
            colabs[c] += fabs(row[c]);
        }
    }
    double n = (double)v->rows * v->cols;
    *mean = s / n;
    *std = sqrt(q / n - *mean * *mean);
    double mx = 0, sum = 0;
    for (uint32_t c = 0; c < v->cols; c++) {
        mx = colabs[c] > mx ? colabs[c] : mx;
        sum += colabs[c];
    }
    *col_ratio = mx / (sum / v->cols);
    free(colf);
    free(row);
    free(colabs);
}

static void test_kinds(const float *t)
{
    mp_synth_values v;
    double mean, std, ratio;
    mp_synth_values_init(&v, mp_synth_tensor_key(0, "lin"), MP_SYNTH_KIND_LINEAR, 512, 1024);
    stats(&v, t, &mean, &std, &ratio);
    double base = 1.0 / sqrt(1024.0);
    CHECKF(fabs(mean) < 0.05 * base, "linear mean %g", mean);
    CHECKF(std > base && std < 1.6 * base, "linear std %g vs 1/sqrt(fan_in) %g (outliers widen it)", std, base);
    CHECKF(ratio > 2.5, "no outlier columns (max/mean column |w| = %g)", ratio);

    mp_synth_values_init(&v, mp_synth_tensor_key(0, "norm"), MP_SYNTH_KIND_NORM, 1, 4096);
    stats(&v, t, &mean, &std, &ratio);
    CHECKF(fabs(mean - 1.0) < 0.01, "norm mean %g", mean);
    CHECKF(std > 0.04 && std < 0.06, "norm std %g", std);

    mp_synth_values_init(&v, mp_synth_tensor_key(0, "bias"), MP_SYNTH_KIND_BIAS, 1, 4096);
    stats(&v, t, &mean, &std, &ratio);
    CHECKF(fabs(mean) < 0.002 && std > 0.008 && std < 0.012, "bias mean %g std %g", mean, std);
}

/* DeepSeek's FP8: per 128x128 block, scale = amax / 448 and w ~ code * scale.
 * Checked on a band with a partial column block (300 = 2*128 + 44) and a
 * partial row block (100 rows). */
static void test_fp8_band(const float *t)
{
    enum { ROWS = 100, COLS = 300, NCB = 3 };
    mp_synth_values v;
    mp_synth_values_init(&v, mp_synth_tensor_key(5, "w"), MP_SYNTH_KIND_LINEAR, ROWS, COLS);
    float *work = malloc(ROWS * COLS * sizeof *work), *ref = malloc(ROWS * COLS * sizeof *ref), colf[COLS];
    uint8_t *q = malloc(ROWS * COLS);
    float scale[NCB];
    REQUIRE(work && ref && q);
    mp_synth_col_factors(&v, colf);
    for (uint32_t r = 0; r < ROWS; r++)
        mp_synth_row_f32(&v, t, colf, r, ref + r * COLS);
    mp_synth_band_fp8(&v, t, colf, 0, ROWS, work, q, scale);
    int bad_err = 0, bad_max = 0;
    for (int cb = 0; cb < NCB; cb++) {
        int c0 = cb * 128, c1 = c0 + 128 < COLS ? c0 + 128 : COLS;
        float amax = 0, qmax = 0;
        for (int r = 0; r < ROWS; r++)
            for (int c = c0; c < c1; c++) {
                float w = ref[r * COLS + c];
                float d = mp_fp8_e4m3_to_f32(q[r * COLS + c]) * scale[cb];
                amax = fmaxf(amax, fabsf(w));
                qmax = fmaxf(qmax, fabsf(mp_fp8_e4m3_to_f32(q[r * COLS + c])));
                /* e4m3 keeps 3 mantissa bits: half an ulp is 1/16 of the value;
                 * below 2^-6 the step is 2^-9 (times the scale). */
                float tol = fmaxf(fabsf(w) / 16.0f, scale[cb] * 0.001953125f / 2) * 1.0001f;
                bad_err += fabsf(d - w) > tol;
            }
        bad_max += qmax != 448.0f;
        CHECKF(fabsf(scale[cb] - amax / 448.0f) <= 1e-6f * amax, "block %d scale %g, amax %g", cb, scale[cb], amax);
    }
    CHECKF(bad_err == 0, "%d values off by more than e4m3 rounding", bad_err);
    CHECK(bad_max == 0);
    free(work);
    free(ref);
    free(q);
}

/* The branch-free E4M3 rounding agrees with the reference conversion in
 * mp_num.h: a sweep over all float bit patterns up to 448 (every 61st), every
 * pattern around the subnormal boundary, and every rounding tie. */
static void test_fp8_rounding(void)
{
    uint64_t bad = 0, n = 0;
    for (int neg = 0; neg < 2; neg++) {
        uint32_t sign = neg ? 0x80000000u : 0;
        for (uint32_t u = 0; u <= 0x43F00000u; u += 61, n++) {
            float x = mp_f32_from_bits(sign | u);
            bad += mp_synth_fp8_e4m3(x) != mp_f32_to_fp8_e4m3(x);
        }
        for (uint32_t u = 0x3B800000u; u < 0x3D000000u; u++, n++) {
            float x = mp_f32_from_bits(sign | u);
            bad += mp_synth_fp8_e4m3(x) != mp_f32_to_fp8_e4m3(x);
        }
        for (uint32_t e = 100; e < 140; e++)
            for (uint32_t m = 0; m < 8; m++)
                for (int d = -1; d <= 1; d++, n++) {
                    float x = mp_f32_from_bits(sign | e << 23 | m << 20 | (uint32_t)(0x80000 + d));
                    bad += mp_synth_fp8_e4m3(x) != mp_f32_to_fp8_e4m3(x);
                }
        float big[] = {448.0f, 460.0f, 464.0f, 470.0f, 1e10f, INFINITY};
        for (size_t i = 0; i < sizeof big / sizeof *big; i++, n++) {
            float x = neg ? -big[i] : big[i];
            bad += mp_synth_fp8_e4m3(x) != mp_f32_to_fp8_e4m3(x);
        }
    }
    CHECKF(bad == 0, "%llu of %llu conversions differ", (unsigned long long)bad, (unsigned long long)n);
}

/* ---- what a run leaves ---- */

static volatile sig_atomic_t stop_flag;

/* Asks the run to stop once part of the first shard is written. */
static void stop_midway(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    (void)total;
    if (done > 0)
        stop_flag = 1;
}

/* The names in dir, sorted and joined by spaces, into buf. */
static void list_dir(const char *dir, char *buf, size_t len)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.' && at < len)
            at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? " " : "", names[i]->d_name);
        free(names[i]);
    }
    if (n >= 0)
        free(names);
}

/* A run stopped in its first shard removes what it wrote (config.json and the
 * tokenizer files, the shard's .partial) and nothing else; a full run's files
 * fit in the disk_bytes it checks against the free space. */
static void test_stop_and_disk_bytes(void)
{
    const char *dir = mp_test_tmpdir("synth_stop");
    FILE *f = fopen(mp_test_path(dir, "notes.txt"), "w");
    REQUIRE(f);
    fputs("not synth's\n", f);
    fclose(f);
    mp_synth_options o;
    mp_synth_options_init(&o);
    o.threads = 1;
    o.progress = stop_midway;
    o.stop = &stop_flag;
    mp_synth_result r;
    mp_error err = {0};
    int rc = mp_synth_run(&o, dir, &r, &err);
    CHECK(rc == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "interrupted") != NULL, "%s", err.msg);
    CHECKF(r.removed_files == 3, "removed %u files, want config.json and the 2 tokenizer files", r.removed_files);
    char names[512];
    list_dir(dir, names, sizeof names);
    CHECKF(!strcmp(names, "notes.txt"), "left: %s", names);

    stop_flag = 0;
    o.progress = NULL;
    o.dtype = MP_SYNTH_DTYPE_FP8;
    o.mtp = true;
    rc = mp_synth_run(&o, dir, &r, &err);
    REQUIRE(rc == MP_OK);
    CHECK(r.removed_files == 0);
    uint64_t used = 0;
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (strcmp(ents[i]->d_name, "notes.txt") && stat(mp_test_path(dir, ents[i]->d_name), &st) == 0 &&
            S_ISREG(st.st_mode))
            used += (uint64_t)st.st_size > (uint64_t)st.st_blocks * 512 ? (uint64_t)st.st_size
                                                                         : (uint64_t)st.st_blocks * 512;
        free(ents[i]);
    }
    if (n >= 0)
        free(ents);
    CHECKF(used > r.data_bytes && used <= r.disk_bytes, "files take %llu bytes, disk_bytes %llu, tensors %llu",
           (unsigned long long)used, (unsigned long long)r.disk_bytes, (unsigned long long)r.data_bytes);
    /* an upper bound that is still close: within 2 MB for a 10 MB model */
    CHECKF(r.disk_bytes - used < (2u << 20), "disk_bytes %llu is far above the %llu bytes written",
           (unsigned long long)r.disk_bytes, (unsigned long long)used);
}

int main(void)
{
    test_fp8_rounding();
    float *t = normal_table();
    test_table(t);
    test_layout_independent(t);
    test_keys();
    test_kinds(t);
    test_fp8_band(t);
    free(t);
    test_stop_and_disk_bytes();
    return mp_test_finish();
}
