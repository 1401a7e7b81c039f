/* gguf_quants: bit-exact dequantization against vectors made by the `gguf`
 * Python package (tests/data/gen_gguf_quant_vectors.py), error handling, and
 * the quantized fixture GGUFs against their BF16 original. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_quants.h"
#include "mp_file.h"
#include "mp_num.h"
#include "mp_test.h"

static const char *const vector_types[] = {"F32",  "F16",  "BF16", "Q4_0", "Q4_1",   "Q5_0",   "Q5_1",
                                           "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",   "Q6_K",   "IQ4_NL",
                                           "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                                           "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"};

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void test_vector_file(const char *dir, const char *type_name)
{
    char name[64];
    snprintf(name, sizeof name, "%s.bin", type_name);
    mp_mapped_file f;
    mp_error err = {0};
    int rc = mp_map_file(mp_test_path(dir, name), &f, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    if (rc != MP_OK)
        return;
    REQUIRE(f.size >= 20 && memcmp(f.data, "MPQV", 4) == 0);
    uint32_t type = rd32(f.data + 4), nb = rd32(f.data + 8), bs = rd32(f.data + 12), ts = rd32(f.data + 16);
    /* the table agrees with gguf-py's GGML_QUANT_SIZES, recorded in the file */
    const mp_ggml_type_info *ti = mp_ggml_type_get(type);
    REQUIRE(ti != NULL);
    CHECKF(strcmp(ti->name, type_name) == 0, "type %u is %s in the table, %s in the vectors", type, ti->name,
           type_name);
    CHECKF(ti->block_size == bs && ti->type_size == ts, "%s: table says %u/%u, gguf-py %u/%u", type_name,
           ti->block_size, ti->type_size, bs, ts);
    CHECK(ti->can_dequantize);
    uint64_t n = (uint64_t)nb * bs;
    REQUIRE(f.size == 20 + (uint64_t)nb * ts + n * 4);
    const uint8_t *blocks = f.data + 20;
    const uint8_t *expected = blocks + (uint64_t)nb * ts;
    float *out = malloc(n * sizeof *out);
    REQUIRE(out);

    uint64_t row_bytes = 0;
    CHECK(mp_gguf_row_bytes(type, n, &row_bytes, &err) == MP_OK && row_bytes == (uint64_t)nb * ts);

    /* the whole buffer as one row */
    memset(out, 0xff, n * sizeof *out);
    rc = mp_gguf_dequantize_row(type, blocks, n, out, &err);
    CHECKF(rc == MP_OK, "%s: %s", type_name, err.msg);
    uint64_t bad = 0, first_bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (memcmp(&out[i], expected + 4 * i, 4) != 0 && bad++ == 0)
            first_bad = i;
    }
    if (bad) {
        float e;
        memcpy(&e, expected + 4 * first_bad, 4);
        CHECKF(bad == 0, "%s: %llu of %llu values differ; first at %llu: got %.9g (0x%08x), want %.9g (0x%08x)",
               type_name, (unsigned long long)bad, (unsigned long long)n, (unsigned long long)first_bad,
               (double)out[first_bad], mp_f32_to_bits(out[first_bad]), (double)e, mp_f32_to_bits(e));
    } else {
        CHECK(bad == 0);
    }

    /* block by block from an odd address: same bits, no alignment needed */
    uint8_t *shifted = malloc((size_t)nb * ts + 1);
    REQUIRE(shifted);
    memcpy(shifted + 1, blocks, (size_t)nb * ts);
    bad = 0;
    for (uint32_t b = 0; b < nb; b++) {
        float tmp[256];
        REQUIRE(bs <= 256);
        rc = mp_gguf_dequantize_row(type, shifted + 1 + (uint64_t)b * ts, bs, tmp, &err);
        if (rc != MP_OK || memcmp(tmp, expected + (uint64_t)b * bs * 4, bs * 4) != 0)
            bad++;
    }
    CHECKF(bad == 0, "%s: %llu blocks differ when dequantized one by one", type_name, (unsigned long long)bad);

    /* a count that is not a whole number of blocks */
    if (bs > 1) {
        rc = mp_gguf_dequantize_row(type, blocks, bs + 1, out, &err);
        CHECK(rc == MP_ERR_INPUT && strstr(err.msg, type_name));
        CHECK(mp_gguf_row_bytes(type, bs - 1, &row_bytes, &err) == MP_ERR_INPUT);
    }
    free(shifted);
    free(out);
    mp_unmap_file(&f);
}

static void test_errors(void)
{
    mp_error err = {0};
    float out[256];
    uint8_t zeros[512] = {0};
    /* an id ggml no longer uses */
    CHECK(mp_ggml_type_get(4) == NULL);
    CHECK(strcmp(mp_ggml_type_name(4), "unknown") == 0);
    CHECK(mp_gguf_dequantize_row(4, zeros, 32, out, &err) == MP_ERR_INPUT && strstr(err.msg, "4"));
    CHECK(mp_gguf_dequantize_row(1000, zeros, 32, out, &err) == MP_ERR_INPUT && strstr(err.msg, "1000"));
    /* known but not dequantizable */
    CHECK(mp_gguf_dequantize_row(MP_GGML_Q8_1, zeros, 256, out, &err) == MP_ERR_INPUT && strstr(err.msg, "Q8_1"));
    CHECK(mp_gguf_dequantize_row(MP_GGML_I32, zeros, 16, out, &err) == MP_ERR_INPUT && strstr(err.msg, "I32"));
    /* row size overflow */
    uint64_t bytes;
    CHECK(mp_gguf_row_bytes(MP_GGML_Q8_K, UINT64_MAX - 255, &bytes, &err) == MP_ERR_INPUT); /* 292 bytes per 256 */
    CHECK(mp_gguf_row_bytes(MP_GGML_F32, UINT64_MAX / 2, &bytes, &err) == MP_ERR_INPUT);
    CHECK(mp_gguf_row_bytes(MP_GGML_Q4_K, 512, &bytes, &err) == MP_OK && bytes == 288);
    CHECK(mp_gguf_row_bytes(MP_GGML_BF16, 3, &bytes, &err) == MP_OK && bytes == 6);
}

/* Q8_K has no gguf-py dequantizer: f32 d, then int8 codes, value d * q. */
static void test_q8_k(void)
{
    uint8_t block[292] = {0};
    float d = -0.375f;
    memcpy(block, &d, 4);
    for (int i = 0; i < 256; i++)
        block[4 + i] = (uint8_t)(int8_t)(i - 128);
    float out[256];
    mp_error err = {0};
    CHECK(mp_gguf_dequantize_row(MP_GGML_Q8_K, block, 256, out, &err) == MP_OK);
    int bad = 0;
    for (int i = 0; i < 256; i++)
        bad += out[i] != (float)(i - 128) * -0.375f;
    CHECK(bad == 0);
}

/* Every tensor of a quantized fixture dequantizes and stays within its
 * type's quantization error of the BF16 original. */
static void test_fixture_quantized(const char *fixtures, const char *file)
{
    mp_gguf q, ref;
    mp_error err = {0};
    int rc = mp_gguf_open(mp_test_path(fixtures, file), &q, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    if (rc != MP_OK)
        return;
    rc = mp_gguf_open(mp_test_path(fixtures, "tiny-v3-bf16.gguf"), &ref, &err);
    REQUIRE(rc == MP_OK);
    CHECK(mp_gguf_tensor_count(&q) == mp_gguf_tensor_count(&ref));
    int n_quantized = 0;
    for (uint64_t i = 0; i < mp_gguf_tensor_count(&q); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(&q, i);
        const mp_gguf_tensor *r = mp_gguf_find_tensor(&ref, t->name);
        CHECKF(r != NULL, "%s: %s missing in the bf16 file", file, t->name);
        if (!r)
            continue;
        CHECKF(memcmp(t->ne, r->ne, sizeof t->ne) == 0 && t->n_dims == r->n_dims, "%s: shape differs", t->name);
        float *a = malloc(t->n_elements * sizeof *a), *b = malloc(r->n_elements * sizeof *b);
        REQUIRE(a && b);
        rc = mp_gguf_tensor_dequantize_rows(&q, t, 0, mp_gguf_tensor_rows(t), a, &err);
        CHECKF(rc == MP_OK, "%s", err.msg);
        rc = mp_gguf_tensor_dequantize_rows(&ref, r, 0, mp_gguf_tensor_rows(r), b, &err);
        CHECKF(rc == MP_OK, "%s", err.msg);
        double num = 0, den = 0;
        for (uint64_t k = 0; k < t->n_elements; k++) {
            double e = (double)a[k] - (double)b[k];
            num += e * e;
            den += (double)b[k] * b[k];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        double limit;
        switch (t->type) {
        case MP_GGML_F32:
            limit = 0; /* norms and the router stay f32: exact */
            break;
        case MP_GGML_Q8_0:
            limit = 0.01; /* 8-bit, 32-element blocks: ~0.5% */
            break;
        case MP_GGML_Q6_K:
            limit = 0.03;
            break;
        case MP_GGML_Q4_K:
            limit = 0.10;
            break;
        default:
            limit = -1;
            CHECKF(0, "%s: unexpected type %s in %s", t->name, mp_ggml_type_name(t->type), file);
        }
        if (t->type != MP_GGML_F32)
            n_quantized++;
        CHECKF(rel <= limit, "%s %s (%s): relative RMS error %.4g above %.4g", file, t->name,
               mp_ggml_type_name(t->type), rel, limit);
        free(a);
        free(b);
    }
    CHECK(n_quantized > 20);
    /* row ranges are checked */
    const mp_gguf_tensor *t = mp_gguf_find_tensor(&q, "blk.1.ffn_gate_exps.weight");
    REQUIRE(t);
    float row[256];
    CHECK(mp_gguf_tensor_dequantize_rows(&q, t, mp_gguf_tensor_rows(t), 1, row, &err) == MP_ERR_INPUT &&
          strstr(err.msg, "blk.1.ffn_gate_exps.weight"));
    CHECK(mp_gguf_tensor_dequantize_rows(&q, t, mp_gguf_tensor_rows(t) - 1, 1, row, &err) == MP_OK);
    mp_gguf_close(&q);
    mp_gguf_close(&ref);
}

int main(void)
{
    const char *src = getenv("MOEPACK_SOURCE_DIR");
    REQUIRE(src != NULL);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/gguf_quants", src);
    for (size_t i = 0; i < sizeof vector_types / sizeof *vector_types; i++)
        test_vector_file(dir, vector_types[i]);
    test_errors();
    test_q8_k();
    const char *fixtures = mp_test_fixtures();
    test_fixture_quantized(fixtures, "tiny-v3-Q8_0.gguf");
    test_fixture_quantized(fixtures, "tiny-v3-Q4_K_M.gguf");
    return mp_test_finish();
}
