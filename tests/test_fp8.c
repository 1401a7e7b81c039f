/* An FP8 block-scaled checkpoint in the official DeepSeek-V3 layout (e4m3
 * weights + F32 `weight_scale_inv` per 128x128 block, quantization_config in
 * config.json), made here from the BF16 fixture: it converts, and what the
 * converter reads back matches the BF16 source within FP8 precision. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "container.h"
#include "convert.h"
#include "mp_file.h"
#include "mp_num.h"
#include "mp_test.h"
#include "safetensors.h"
#include "safetensors_write.h"
#include "source.h"

#define BLK 128

/* The official checkpoint quantizes the linear layers, not embeddings, head,
 * router or norms. */
static bool is_fp8_weight(const mp_st_tensor *t)
{
    if (t->ndim != 2)
        return false;
    return !strstr(t->name, "embed_tokens") && !strstr(t->name, "lm_head") && !strstr(t->name, "mlp.gate.weight") &&
           !strstr(t->name, "norm");
}

static void copy_file(const char *from, const char *to)
{
    char *buf;
    size_t len;
    mp_error e = {0};
    REQUIRE(mp_read_small_file(from, 1 << 24, &buf, &len, &e) == MP_OK);
    FILE *f = fopen(to, "wb");
    REQUIRE(f && fwrite(buf, 1, len, f) == len);
    fclose(f);
    free(buf);
}

static void make_fp8_checkpoint(const char *fix, const char *dir)
{
    mp_error e = {0};
    char path[4096];
    /* config.json with the official quantization_config */
    snprintf(path, sizeof path, "%s/tiny-v3/config.json", fix);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    REQUIRE(cfg);
    json_object_set_new(cfg, "quantization_config",
                        json_pack("{s:s, s:s, s:s, s:[i,i]}", "activation_scheme", "dynamic", "fmt", "e4m3",
                                  "quant_method", "fp8", "weight_block_size", BLK, BLK));
    REQUIRE(json_dump_file(cfg, mp_test_path(dir, "config.json"), JSON_INDENT(2)) == 0);
    json_decref(cfg);
    snprintf(path, sizeof path, "%s/tiny-v3/tokenizer.json", fix);
    copy_file(path, mp_test_path(dir, "tokenizer.json"));
    snprintf(path, sizeof path, "%s/tiny-v3/tokenizer_config.json", fix);
    copy_file(path, mp_test_path(dir, "tokenizer_config.json"));

    mp_safetensors *src;
    snprintf(path, sizeof path, "%s/tiny-v3", fix);
    REQUIRE(mp_st_open(path, &src, &e) == MP_OK);
    mp_st_writer *w;
    REQUIRE(mp_st_writer_open(&w, mp_test_path(dir, "model.safetensors"), &e) == MP_OK);
    size_t n = mp_st_count(src);
    for (size_t i = 0; i < n; i++) {
        const mp_st_tensor *t = mp_st_tensor_at(src, i);
        if (is_fp8_weight(t)) {
            REQUIRE(mp_st_writer_add(w, t->name, MP_STW_F8_E4M3, t->shape, 2, NULL, &e) == MP_OK);
            char sname[512];
            snprintf(sname, sizeof sname, "%s_scale_inv", t->name);
            uint64_t sshape[2] = {(t->shape[0] + BLK - 1) / BLK, (t->shape[1] + BLK - 1) / BLK};
            REQUIRE(mp_st_writer_add(w, sname, MP_STW_F32, sshape, 2, NULL, &e) == MP_OK);
        } else {
            mp_stw_dtype dt;
            REQUIRE(mp_stw_dtype_from_name(t->dtype_name, &dt));
            REQUIRE(mp_st_writer_add(w, t->name, dt, t->shape, t->ndim, NULL, &e) == MP_OK);
        }
    }
    REQUIRE(mp_st_writer_begin(w, &e) == MP_OK);
    size_t idx = 0;
    for (size_t i = 0; i < n; i++) {
        const mp_st_tensor *t = mp_st_tensor_at(src, i);
        if (!is_fp8_weight(t)) {
            REQUIRE(mp_st_writer_write(w, idx++, 0, t->data, t->nbytes, &e) == MP_OK);
            continue;
        }
        uint64_t R = t->shape[0], C = t->shape[1], br = (R + BLK - 1) / BLK, bc = (C + BLK - 1) / BLK;
        float *f = malloc(R * C * sizeof *f), *s = calloc(br * bc, sizeof *s);
        uint8_t *q = malloc(R * C);
        REQUIRE(mp_st_read_rows_f32(src, t, 0, R, f, 0, 0, &e) == MP_OK);
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t c = 0; c < C; c++)
                s[(r / BLK) * bc + c / BLK] = fmaxf(s[(r / BLK) * bc + c / BLK], fabsf(f[r * C + c]));
        for (uint64_t b = 0; b < br * bc; b++)
            s[b] = s[b] > 0 ? s[b] / 448.0f : 1.0f; /* DeepSeek's: amax / 448 */
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t c = 0; c < C; c++)
                q[r * C + c] = mp_f32_to_fp8_e4m3(f[r * C + c] / s[(r / BLK) * bc + c / BLK]);
        REQUIRE(mp_st_writer_write(w, idx++, 0, q, R * C, &e) == MP_OK);
        REQUIRE(mp_st_writer_write(w, idx++, 0, s, br * bc * 4, &e) == MP_OK);
        free(f);
        free(s);
        free(q);
    }
    REQUIRE(mp_st_writer_commit(w, &e) == MP_OK);
    mp_st_close(src);
}

int main(void)
{
    const char *fix = mp_test_fixtures();
    const char *dir = mp_test_tmpdir("test_fp8");
    char ckpt[4096], bf16dir[4096];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    snprintf(bf16dir, sizeof bf16dir, "%s/tiny-v3", fix);
    REQUIRE(mkdir(ckpt, 0755) == 0);
    make_fp8_checkpoint(fix, ckpt);

    mp_error e = {0};
    mp_source *fp8, *ref;
    REQUIRE(mp_source_open(ckpt, NULL, &fp8, &e) == MP_OK);
    REQUIRE(mp_source_open(bf16dir, NULL, &ref, &e) == MP_OK);
    CHECK(fp8->desc.fp8_block_rows == BLK && fp8->desc.fp8_block_cols == BLK);
    size_t n_fp8 = 0;
    for (size_t i = 0; i < fp8->n_tensors; i++) {
        const mp_src_tensor *a = &fp8->tensors[i];
        const mp_src_tensor *b = mp_source_find(ref, a->id.role, a->id.layer, a->id.expert);
        REQUIRE(b && a->rows == b->rows && a->cols == b->cols);
        n_fp8 += a->st->dtype == MP_ST_F8_E4M3;
        size_t n = a->rows * a->cols;
        float *x = malloc(n * 4), *y = malloc(n * 4);
        REQUIRE(mp_source_read_rows(fp8, a, 0, a->rows, x, &e) == MP_OK);
        REQUIRE(mp_source_read_rows(ref, b, 0, b->rows, y, &e) == MP_OK);
        size_t bad = 0;
        for (size_t k = 0; k < n; k++) {
            /* e4m3: half an ulp is 2^-4 relative for normals; subnormals step 2^-9 of the block scale (<= amax/448) */
            double tol = fabs(y[k]) * 0.0625 + 0.003 * 1.0 / 448.0 + 1e-12;
            if (a->st->dtype != MP_ST_F8_E4M3)
                tol = 0;
            if (fabs((double)x[k] - y[k]) > tol + fabs(y[k]) * 1e-7)
                bad++;
        }
        CHECKF(bad == 0, "%s: %zu values off by more than FP8 precision", a->name, bad);
        free(x);
        free(y);
    }
    /* per layer q_a, q_b, kv_a, kv_b, o; one dense MLP; 2 MoE layers of 16 experts and a shared expert */
    CHECKF(n_fp8 == 3 * 5 + 3 + 2 * 16 * 3 + 2 * 3, "%zu FP8 tensors", n_fp8);

    /* convert it, exactly (bf16 everywhere), and compare with the BF16 source's container */
    mp_convert_opts o;
    mp_convert_opts_default(&o);
    o.cpu_quant = MP_QUANT_BF16;
    o.gpu_quant = MP_QUANT_BF16;
    o.threads = 2;
    mp_convert_summary s;
    const char *a = mp_test_path(dir, "fp8.moepack"), *b = mp_test_path(dir, "bf16.moepack");
    REQUIRE(mp_convert(ckpt, a, &o, &s, &e) == MP_OK);
    REQUIRE(mp_convert(bf16dir, b, &o, &s, &e) == MP_OK);
    mp_container *ca, *cb;
    REQUIRE(mp_container_open(a, &ca, &e) == MP_OK && mp_container_open(b, &cb, &e) == MP_OK);
    CHECK(ca->hdr.n_tensors == cb->hdr.n_tensors);
    for (uint64_t i = 0; i < ca->hdr.n_tensors; i++) {
        const mp_ctensor *x = &ca->tensors[i], *y = mp_container_find_name(cb, x->name);
        REQUIRE(y && x->data_size == y->data_size && x->quant == y->quant);
        size_t bad = 0, n = x->quant == MP_QUANT_F32 ? x->data_size / 4 : x->data_size / 2;
        for (size_t k = 0; k < n; k++) {
            float u = x->quant == MP_QUANT_F32 ? ((const float *)x->data)[k] : mp_bf16_to_f32(((const uint16_t *)x->data)[k]);
            float v = y->quant == MP_QUANT_F32 ? ((const float *)y->data)[k] : mp_bf16_to_f32(((const uint16_t *)y->data)[k]);
            /* FP8 error, then one more bf16 rounding (2^-9 relative) */
            if (fabs((double)u - v) > fabs(v) * (0.0625 + 0.004) + 0.003 / 448.0 + 1e-12)
                bad++;
        }
        CHECKF(bad == 0, "%s: %zu values off by more than FP8 precision", x->name, bad);
    }
    mp_container_close(ca);
    mp_container_close(cb);

    mp_source_close(fp8);
    mp_source_close(ref);
    return mp_test_finish();
}
