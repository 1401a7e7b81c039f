/* fuzz_gguf: the GGUF reader (formats/gguf.h), its dequantizers
 * (formats/gguf_quants.h) and the model description read from GGUF metadata
 * (formats/model_desc_gguf.h).
 *
 * Input: one GGUF file; or, when it holds MP_FUZZ_SEP, the parts of a split
 * model written as m-0000K-of-0000N.gguf (N = the number of parts), opened
 * through part 1. After a successful open every metadata value is read
 * through the typed getters, every tensor is found by name and its first
 * and last rows are dequantized, and its name is classified; then the
 * DeepSeek description is built and validated, and when it is valid the
 * file is opened again as a conversion source (convert/source.h), whose
 * tensors' first rows are read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_util.h"
#include "gguf.h"
#include "gguf_quants.h"
#include "model_desc_gguf.h"
#include "source.h"

static void read_kv(const mp_gguf *g, const mp_gguf_kv *kv)
{
    mp_error err = {0};
    uint64_t u;
    int64_t i;
    double f;
    const char *s;
    if (mp_gguf_find_kv(g, kv->key) != kv)
        mp_fuzz_fail("key '%s' is not found by its own name", kv->key);
    if (kv->type == MP_GGUF_ARRAY) {
        const mp_gguf_kv *arr;
        if (mp_gguf_get_array(g, kv->key, &arr, &err) != MP_OK || arr != kv)
            mp_fuzz_fail("array '%s' is not an array: %s", kv->key, err.msg);
        uint64_t idx[3] = {0, kv->count / 2, kv->count ? kv->count - 1 : 0};
        for (int k = 0; k < 3; k++) {
            if (kv->elem_type == MP_GGUF_STRING) {
                uint64_t len;
                if (mp_gguf_arr_str(g, kv, idx[k], &s, &len, &err) == MP_OK)
                    (void)mp_fuzz_touch(s, (size_t)len);
            } else {
                (void)mp_gguf_arr_i64(g, kv, idx[k], &i, &err);
                (void)mp_gguf_arr_u64(g, kv, idx[k], &u, &err);
                (void)mp_gguf_arr_f64(g, kv, idx[k], &f, &err);
            }
        }
        /* one past the end is refused */
        if (mp_gguf_arr_i64(g, kv, kv->count, &i, &err) == MP_OK)
            mp_fuzz_fail("array '%s': element %llu of %llu was read", kv->key, (unsigned long long)kv->count,
                         (unsigned long long)kv->count);
        return;
    }
    if (kv->type == MP_GGUF_STRING) {
        if (mp_gguf_get_str(g, kv->key, &s, &err) != MP_OK || strlen(s) > kv->count)
            mp_fuzz_fail("string '%s' does not read back", kv->key);
        return;
    }
    uint32_t u32;
    float f32;
    bool b;
    (void)mp_gguf_get_u32(g, kv->key, &u32, &err);
    (void)mp_gguf_get_u64(g, kv->key, &u, &err);
    (void)mp_gguf_get_i64(g, kv->key, &i, &err);
    (void)mp_gguf_get_f32(g, kv->key, &f32, &err);
    (void)mp_gguf_get_f64(g, kv->key, &f, &err);
    (void)mp_gguf_get_bool(g, kv->key, &b, &err);
}

static void read_tensor(const mp_gguf *g, const mp_gguf_tensor *t)
{
    if (mp_gguf_find_tensor(g, t->name) != t)
        mp_fuzz_fail("tensor '%s' is not found by its own name", t->name);
    mp_tensor_id id;
    (void)mp_name_map_gguf(t->name, &id);
    uint64_t shape[MP_GGUF_MAX_DIMS];
    uint32_t nd = mp_gguf_tensor_shape_torch(t, shape);
    if (nd != t->n_dims)
        mp_fuzz_fail("tensor '%s': shape of %u dims for n_dims %u", t->name, nd, t->n_dims);
    uint64_t rows = mp_gguf_tensor_rows(t);
    if (t->ne[0] > (1u << 20))
        return;
    float *out = malloc(t->ne[0] * sizeof *out);
    if (!out)
        return;
    mp_error err = {0};
    int rc = mp_gguf_tensor_dequantize_rows(g, t, 0, 1, out, &err);
    if (rc == MP_OK && rows > 1)
        rc = mp_gguf_tensor_dequantize_rows(g, t, rows - 1, 1, out, &err);
    if (rc)
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
    if (mp_gguf_tensor_dequantize_rows(g, t, rows, 1, out, &err) == MP_OK)
        mp_fuzz_fail("tensor '%s': row %llu of %llu was read", t->name, (unsigned long long)rows,
                     (unsigned long long)rows);
    free(out);
}

static void open_as_source(const char *path)
{
    mp_source *src = NULL;
    mp_error err = {0};
    int rc = mp_source_open(path, NULL, &src, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        return;
    }
    for (size_t i = 0; i < src->n_tensors && i < 16; i++) {
        const mp_src_tensor *t = &src->tensors[i];
        if (t->cols == 0 || t->cols > (1u << 20) || t->rows == 0)
            continue;
        float *row = malloc(t->cols * sizeof *row);
        if (!row)
            break;
        rc = mp_source_read_rows(src, t, t->rows - 1, 1, row, &err);
        if (rc)
            mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        free(row);
    }
    mp_source_close(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_fuzz_part parts[4];
    size_t n = mp_fuzz_split(data, size, parts, 4);
    mp_fuzz_clear();
    char first[8192];
    if (n == 1) {
        snprintf(first, sizeof first, "%s", mp_fuzz_write("m.gguf", data, size));
    } else {
        for (size_t i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "m-%05zu-of-%05zu.gguf", i + 1, n);
            const char *p = mp_fuzz_write(name, parts[i].data, parts[i].len);
            if (i == 0)
                snprintf(first, sizeof first, "%s", p);
        }
    }
    mp_gguf g;
    mp_error err = {0};
    int rc = mp_gguf_open(first, &g, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        if (g.n_files || g.n_kv || g.n_tensors)
            mp_fuzz_fail("failed open left a non-empty reader");
        mp_gguf_close(&g);
        return 0;
    }
    for (uint64_t i = 0; i < g.n_kv; i++)
        read_kv(&g, &g.kv[i]);
    uint64_t nt = mp_gguf_tensor_count(&g);
    for (uint64_t i = 0; i < nt && i < 64; i++)
        read_tensor(&g, mp_gguf_tensor_at(&g, i));
    if (mp_gguf_tensor_at(&g, nt) != NULL)
        mp_fuzz_fail("tensor %llu of %llu exists", (unsigned long long)nt, (unsigned long long)nt);

    mp_model_desc d;
    mp_error derr = {0};
    rc = mp_model_desc_from_gguf(&g, NULL, &d, &derr);
    if (rc == MP_OK)
        rc = mp_model_desc_validate(&d, mp_gguf_path(&g), &derr);
    if (rc)
        mp_fuzz_check_error(rc, &derr, MP_ERR_INPUT);
    if (rc == MP_OK)
        open_as_source(first);
    mp_gguf_close(&g);
    return 0;
}
