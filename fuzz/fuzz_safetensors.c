/* fuzz_safetensors: the safetensors reader (formats/safetensors.h) on hostile
 * headers and indexes.
 *
 * Input: one .safetensors file; or, when it holds MP_FUZZ_SEP, several files:
 * if the first part starts with '{' it is model.safetensors.index.json and
 * the next parts are the shards a.safetensors, b.safetensors, ... (the seeds'
 * indexes use those names); otherwise the parts are a folder of shards
 * without an index. After a successful open every tensor is looked up by
 * name, its bytes are read, its first and last rows are read as f32 where
 * the dtype allows, its name is classified (mp_name_map_hf), and the FP8
 * scale checks run. */
#include <stdlib.h>
#include <string.h>

#include "harness_util.h"
#include "model_desc.h"
#include "safetensors.h"

static const char *const shard_names[] = {"a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors",
                                          "e.safetensors"};

static void read_rows(const mp_safetensors *st, const mp_st_tensor *t)
{
    if (t->ndim != 1 && t->ndim != 2)
        return;
    uint64_t rows = t->ndim == 1 ? 1 : t->shape[0], cols = t->ndim == 1 ? t->shape[0] : t->shape[1];
    if (rows == 0 || cols == 0 || cols > (1u << 20))
        return;
    float *out = malloc(cols * 2 * sizeof *out);
    if (!out)
        return;
    mp_error err = {0};
    uint64_t n = rows < 2 ? rows : 2;
    int rc = mp_st_read_rows_f32(st, t, 0, n, out, 128, 128, &err);
    if (rc == MP_OK)
        rc = mp_st_read_rows_f32(st, t, rows - 1, 1, out, 128, 128, &err);
    if (rc)
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
    /* asking for a row past the end must be refused */
    mp_error e2 = {0};
    if (mp_st_read_rows_f32(st, t, rows, 1, out, 128, 128, &e2) == MP_OK)
        mp_fuzz_fail("%s: row %llu of %llu was read", t->name, (unsigned long long)rows, (unsigned long long)rows);
    free(out);
}

static void exercise(const mp_safetensors *st)
{
    size_t n = mp_st_count(st);
    uint64_t budget = 1u << 22; /* bytes read in full per input */
    for (size_t i = 0; i < n; i++) {
        const mp_st_tensor *t = mp_st_tensor_at(st, i);
        if (!t || mp_st_find(st, t->name) != t)
            mp_fuzz_fail("tensor %zu is not found by its own name", i);
        if (i > 0 && strcmp(mp_st_tensor_at(st, i - 1)->name, t->name) >= 0)
            mp_fuzz_fail("tensors are not in strictly increasing name order at %zu", i);
        if (t->shard >= mp_st_shard_count(st) || strcmp(mp_st_shard_path(st, t->shard), t->shard_path) != 0)
            mp_fuzz_fail("%s: shard %u of %zu", t->name, t->shard, mp_st_shard_count(st));
        if (t->dtype != MP_ST_OTHER && strcmp(mp_st_dtype_name(t->dtype), t->dtype_name) != 0)
            mp_fuzz_fail("%s: dtype %s named %s", t->name, t->dtype_name, mp_st_dtype_name(t->dtype));
        if (t->nbytes <= budget) {
            budget -= t->nbytes;
            (void)mp_fuzz_touch(t->data, (size_t)t->nbytes);
        }
        (void)mp_st_scale_inv_of(st, t);
        mp_tensor_id id;
        (void)mp_name_map_hf(t->name, &id);
        if (i < 64)
            read_rows(st, t);
    }
    mp_error err = {0};
    int rc = mp_st_check_fp8_scales(st, 128, 128, &err);
    if (rc)
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
    (void)mp_st_metadata_get(st, "format");
    (void)mp_st_find(st, "");
    (void)mp_st_path(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_fuzz_part parts[5];
    size_t n = mp_fuzz_split(data, size, parts, 5);
    mp_fuzz_clear();
    const char *path;
    if (n == 1) {
        path = mp_fuzz_write("x.safetensors", data, size);
    } else {
        bool indexed = parts[0].len > 0 && parts[0].data[0] == '{';
        if (indexed)
            mp_fuzz_write("model.safetensors.index.json", parts[0].data, parts[0].len);
        for (size_t i = indexed; i < n; i++)
            mp_fuzz_write(shard_names[i - indexed], parts[i].data, parts[i].len);
        path = mp_fuzz_dir();
    }
    mp_safetensors *st = NULL;
    mp_error err = {0};
    int rc = mp_st_open(path, &st, &err);
    if (rc) {
        mp_fuzz_check_refused(rc, &err, st, "a reader");
        return 0;
    }
    exercise(st);
    mp_st_close(st);
    return 0;
}
