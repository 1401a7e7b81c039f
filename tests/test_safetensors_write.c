/* The safetensors writer: byte-exact output against files made by the
 * reference implementation (the Python `safetensors` package, whose outputs
 * are pasted below), header layout and alignment, concurrent writes, the
 * partial-file behaviour on errors and aborts, and the index JSON. */
#include <jansson.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_file.h"
#include "mp_test.h"
#include "safetensors_write.h"

static char *slurp(const char *path, size_t *len)
{
    char *buf = NULL;
    mp_error err = {0};
    if (mp_read_small_file(path, 1u << 26, &buf, len, &err) != MP_OK)
        return NULL;
    return buf;
}

static bool add(mp_st_writer *w, const char *name, mp_stw_dtype dt, const uint64_t *shape, size_t ndim)
{
    mp_error err = {0};
    int rc = mp_st_writer_add(w, name, dt, shape, ndim, NULL, &err);
    if (rc)
        fprintf(stderr, "add %s: %s\n", name, err.msg);
    return rc == MP_OK;
}

/* The reference file's tensor bytes, in file order. */
static const uint8_t reference_data[25] = {'0', '1', '2', '3', 'P', 'Q', 'R', 'S', 1,   2,   3,   4,  5,
                                           6,   7,   8,   9,   10,  11,  12,  '@', 'A', ' ', '!', '"'};

/* Declares the tensors and metadata of the reference call
 *   serialize({...}, {"format": "pt"})
 * (the reference sorts by dtype then name; the tensors are given here in
 * that order). */
static void declare_reference(mp_st_writer *w)
{
    mp_error err = {0};
    CHECK(mp_st_writer_set_metadata(w, "format", "pt", &err) == MP_OK);
    uint64_t s1[] = {1}, s0[] = {0}, s23[] = {2, 3}, s3[] = {3};
    CHECK(add(w, "z.s", MP_STW_F32, s1, 1));
    CHECK(add(w, "e", MP_STW_I32, s0, 1));
    CHECK(add(w, "i", MP_STW_I32, s1, 1));
    CHECK(add(w, "b.w", MP_STW_BF16, s23, 2));
    CHECK(add(w, "c", MP_STW_BF16, NULL, 0));
    CHECK(add(w, "a.w", MP_STW_F8_E4M3, s3, 1));
}

/* The reference tensors, written out of order and in pieces, give the
 * reference's output: `expected_json` and reference_data. */
static void test_matches_reference(const char *dir)
{
    static const char expected_json[] =
        "{\"__metadata__\":{\"format\":\"pt\"},\"z.s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"e\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[4,4]},\"i\":{\"dtype\":\"I32\",\"shape\":[1],"
        "\"data_offsets\":[4,8]},\"b.w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[8,20]},\"c\":{\"dtype\":"
        "\"BF16\",\"shape\":[],\"data_offsets\":[20,22]},\"a.w\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":"
        "[22,25]}}";
    const char *path = mp_test_path(dir, "ref.safetensors");
    mp_error err = {0};
    mp_st_writer *w = NULL;
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    declare_reference(w);
    CHECK(mp_st_writer_set_metadata(w, "format", "again", &err) == MP_ERR_INPUT);
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_count(w) == 6);
    CHECK(mp_st_writer_tensor_bytes(w, 3) == 12);
    CHECK(mp_st_writer_file_size(w) == 8 + 368 + 25);
    /* Write in reverse order and in pieces: placement comes from the index. */
    CHECK(mp_st_writer_write(w, 5, 0, reference_data + 22, 3, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 4, 0, reference_data + 20, 2, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 3, 6, reference_data + 14, 6, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 3, 0, reference_data + 8, 6, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 2, 0, reference_data + 4, 4, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 0, 0, reference_data, 4, &err) == MP_OK);
    CHECK(mp_file_exists(mp_test_path(dir, "ref.safetensors.partial")));
    CHECK(!mp_file_exists(path));
    REQUIRE(mp_st_writer_commit(w, &err) == MP_OK);
    CHECK(!mp_file_exists(mp_test_path(dir, "ref.safetensors.partial")));

    size_t len = 0;
    char *got = slurp(path, &len);
    REQUIRE(got);
    size_t jl = strlen(expected_json);
    CHECKF(len == 8 + jl + 25, "file is %zu bytes", len);
    CHECK(len >= 8 && (uint8_t)got[0] == (jl & 0xff) && (uint8_t)got[1] == (jl >> 8) && got[2] == 0 && got[7] == 0);
    CHECK(len >= 8 + jl && memcmp(got + 8, expected_json, jl) == 0);
    CHECK(len == 8 + jl + 25 && memcmp(got + 8 + jl, reference_data, 25) == 0);
    free(got);
}

/* A header that needs padding: the reference writes
 *   8\0\0\0\0\0\0\0{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   \x07 */
static void test_padding(const char *dir)
{
    static const char expected[] = "8\0\0\0\0\0\0\0{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}   \x07";
    const char *path = mp_test_path(dir, "pad.safetensors");
    mp_error err = {0};
    mp_st_writer *w = NULL;
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    uint64_t s1[] = {1};
    CHECK(add(w, "a", MP_STW_U8, s1, 1));
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_tensor_offset(w, 0) == 64);
    uint8_t v = 7;
    CHECK(mp_st_writer_write(w, 0, 0, &v, 1, &err) == MP_OK);
    REQUIRE(mp_st_writer_commit(w, &err) == MP_OK);
    size_t len = 0;
    char *got = slurp(path, &len);
    REQUIRE(got);
    CHECKF(len == sizeof expected - 1 && memcmp(got, expected, len) == 0, "padded file differs (%zu bytes)", len);
    free(got);
}

/* Many threads write disjoint chunks of two tensors in a scrambled order; the
 * header still parses and every byte lands where it belongs. */
static void test_concurrent(const char *dir)
{
    const char *path = mp_test_path(dir, "mt.safetensors");
    mp_error err = {0};
    mp_st_writer *w = NULL;
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    uint64_t sa[] = {1000, 1031}, sb[] = {777};
    CHECK(add(w, "big", MP_STW_BF16, sa, 2));
    CHECK(add(w, "small", MP_STW_F32, sb, 1));
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    const uint64_t nbytes = mp_st_writer_tensor_bytes(w, 0);
    const size_t chunk = 4093;
    const int64_t nchunks = (int64_t)((nbytes + chunk - 1) / chunk);
    int fails = 0;
#pragma omp parallel for schedule(dynamic, 3) num_threads(4) reduction(+ : fails)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t c = (k * 7919) % nchunks; /* 7919 is prime and does not divide nchunks: a permutation */
        uint8_t buf[4093];
        uint64_t off = (uint64_t)c * chunk;
        size_t n = (size_t)(nbytes - off < chunk ? nbytes - off : chunk);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)((off + i) * 131 >> 3);
        mp_error e = {0};
        if (mp_st_writer_write(w, 0, off, buf, n, &e) != MP_OK)
            fails++;
    }
    CHECK(fails == 0);
    CHECKF(nchunks % 7919 != 0, "chunk count %lld breaks the permutation", (long long)nchunks);
    uint8_t small[777 * 4];
    for (size_t i = 0; i < sizeof small; i++)
        small[i] = (uint8_t)(i ^ 0x5a);
    CHECK(mp_st_writer_write(w, 1, 0, small, sizeof small, &err) == MP_OK);
    REQUIRE(mp_st_writer_commit(w, &err) == MP_OK);

    mp_mapped_file f;
    REQUIRE(mp_map_file(path, &f, &err) == MP_OK);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)f.data[i] << (8 * i);
    CHECK(hl % 8 == 0);
    REQUIRE(hl + 8 <= f.size);
    json_error_t jerr;
    json_t *h = json_loadb((const char *)f.data + 8, hl, 0, &jerr);
    REQUIRE(h);
    json_t *big = json_object_get(h, "big"), *sm = json_object_get(h, "small");
    REQUIRE(big && sm);
    json_int_t b0 = json_integer_value(json_array_get(json_object_get(big, "data_offsets"), 0));
    json_int_t b1 = json_integer_value(json_array_get(json_object_get(big, "data_offsets"), 1));
    json_int_t s0 = json_integer_value(json_array_get(json_object_get(sm, "data_offsets"), 0));
    json_int_t s1 = json_integer_value(json_array_get(json_object_get(sm, "data_offsets"), 1));
    CHECK(b0 == 0 && (uint64_t)b1 == nbytes && s0 == b1 && s1 == s0 + 777 * 4);
    CHECK(f.size == 8 + hl + (uint64_t)s1);
    CHECK(!strcmp(json_string_value(json_object_get(big, "dtype")), "BF16"));
    CHECK(json_integer_value(json_array_get(json_object_get(big, "shape"), 1)) == 1031);
    json_decref(h);
    const uint8_t *data = f.data + 8 + hl;
    size_t bad = 0;
    for (uint64_t i = 0; i < nbytes; i++)
        bad += data[i] != (uint8_t)(i * 131 >> 3);
    CHECKF(bad == 0, "%zu misplaced bytes", bad);
    CHECK(memcmp(data + s0, small, sizeof small) == 0);
    mp_unmap_file(&f);
}

/* Appending in file order, in chunks that straddle tensors (including an
 * empty one), gives the same file as the reference layout. */
static void test_append(const char *dir)
{
    const char *path = mp_test_path(dir, "append.safetensors");
    mp_error err = {0};
    mp_st_writer *w = NULL;
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    declare_reference(w);
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_append(w, reference_data, 6, &err) == MP_OK);
    CHECK(mp_st_writer_append(w, reference_data + 6, 0, &err) == MP_OK);
    CHECK(mp_st_writer_append(w, reference_data + 6, 15, &err) == MP_OK);
    CHECK(mp_st_writer_append(w, reference_data + 21, 4, &err) == MP_OK);
    CHECK(mp_st_writer_append(w, reference_data, 1, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "past the last tensor") != NULL);
    REQUIRE(mp_st_writer_commit(w, &err) == MP_OK);
    size_t len = 0, rlen = 0;
    char *got = slurp(path, &len), *ref = slurp(mp_test_path(dir, "ref.safetensors"), &rlen);
    REQUIRE(got && ref);
    CHECK(len == rlen && memcmp(got, ref, len) == 0);
    free(got);
    free(ref);
}

static void test_errors(const char *dir)
{
    mp_error err = {0};
    const char *path = mp_test_path(dir, "err.safetensors");
    const char *partial = mp_test_path(dir, "err.safetensors.partial");
    uint64_t s4[] = {4}, huge[] = {UINT64_MAX / 2, 4};
    mp_st_writer *w = NULL;

    /* declaration errors */
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    CHECK(add(w, "t", MP_STW_F32, s4, 1));
    CHECK(mp_st_writer_add(w, "t", MP_STW_F32, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "twice") != NULL);
    CHECK(mp_st_writer_add(w, "", MP_STW_F32, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_add(w, "__metadata__", MP_STW_F32, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_add(w, "bad\xff", MP_STW_F32, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_add(w, "h", MP_STW_F32, huge, 2, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_add(w, "x", (mp_stw_dtype)99, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_add(w, "y", MP_STW_F32, s4, MP_STW_MAX_DIMS + 1, NULL, &err) == MP_ERR_INPUT);
    uint8_t buf[16] = {0};
    CHECK(mp_st_writer_write(w, 0, 0, buf, 4, &err) == MP_ERR_INPUT); /* before begin */
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_add(w, "late", MP_STW_F32, s4, 1, NULL, &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_set_metadata(w, "k", "v", &err) == MP_ERR_INPUT);
    CHECK(mp_st_writer_write(w, 0, 10, buf, 8, &err) == MP_ERR_INPUT); /* past the end */
    CHECK(strstr(err.msg, "outside") != NULL);
    CHECK(mp_st_writer_write(w, 1, 0, buf, 1, &err) == MP_ERR_INPUT); /* no such tensor */
    CHECK(mp_st_writer_write(w, 0, UINT64_MAX - 2, buf, 8, &err) == MP_ERR_INPUT);

    /* missing bytes: commit fails, nothing is left behind */
    CHECK(mp_st_writer_write(w, 0, 0, buf, 8, &err) == MP_OK);
    CHECK(mp_file_exists(partial));
    CHECK(mp_st_writer_commit(w, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "8 of 16 bytes") != NULL, "%s", err.msg);
    CHECK(!mp_file_exists(path) && !mp_file_exists(partial));

    /* overlapping writes are reported too */
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    CHECK(add(w, "t", MP_STW_U8, s4, 1));
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 0, 0, buf, 4, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 0, 1, buf, 2, &err) == MP_OK);
    CHECK(mp_st_writer_commit(w, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "overlapping") != NULL);
    CHECK(!mp_file_exists(path) && !mp_file_exists(partial));

    /* abort halfway: no final file, no partial file */
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    CHECK(add(w, "t", MP_STW_U8, s4, 1));
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    CHECK(mp_st_writer_write(w, 0, 0, buf, 2, &err) == MP_OK);
    mp_st_writer_abort(w);
    CHECK(!mp_file_exists(path) && !mp_file_exists(partial));

    /* abort before begin creates nothing; abort(NULL) is harmless */
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    mp_st_writer_abort(w);
    mp_st_writer_abort(NULL);
    CHECK(!mp_file_exists(path) && !mp_file_exists(partial));

    /* an unwritable place is an I/O error naming the file */
    REQUIRE(mp_st_writer_open(&w, mp_test_path(dir, "no/such/dir/x.safetensors"), &err) == MP_OK);
    CHECK(add(w, "t", MP_STW_U8, s4, 1));
    CHECK(mp_st_writer_begin(w, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "x.safetensors.partial") != NULL);
    mp_st_writer_abort(w);

    /* a file that holds only a header is fine */
    REQUIRE(mp_st_writer_open(&w, path, &err) == MP_OK);
    REQUIRE(mp_st_writer_begin(w, &err) == MP_OK);
    REQUIRE(mp_st_writer_commit(w, &err) == MP_OK);
    size_t len = 0;
    char *got = slurp(path, &len);
    REQUIRE(got);
    CHECK(len == 16 && got[0] == 8 && !memcmp(got + 8, "{}      ", 8));
    free(got);
}

static void test_dtypes(void)
{
    mp_stw_dtype d;
    CHECK(mp_stw_dtype_from_name("F8_E4M3", &d) && d == MP_STW_F8_E4M3);
    CHECK(mp_stw_dtype_from_name("BF16", &d) && d == MP_STW_BF16 && mp_stw_dtype_size(d) == 2);
    CHECK(!mp_stw_dtype_from_name("bf16", &d));
    CHECK(mp_stw_dtype_size(MP_STW_F32) == 4 && mp_stw_dtype_size(MP_STW_I64) == 8);
    CHECK(mp_stw_dtype_name((mp_stw_dtype)-1) == NULL);
    /* the reference order: F32 before I32 before BF16 before F8, names within a dtype */
    CHECK(mp_stw_reference_cmp(MP_STW_F32, "z", MP_STW_I32, "a") < 0);
    CHECK(mp_stw_reference_cmp(MP_STW_BF16, "a", MP_STW_I32, "a") > 0);
    CHECK(mp_stw_reference_cmp(MP_STW_BF16, "b.w", MP_STW_BF16, "c") < 0);
    CHECK(mp_stw_reference_cmp(MP_STW_F8_E4M3, "a", MP_STW_BF16, "z") > 0);
}

/* The index as Python's json.dumps(index, indent=2) writes it, plus "\n". */
static void test_index(const char *dir)
{
    static const char expected[] = "{\n  \"metadata\": {\n    \"total_size\": 12\n  },\n  \"weight_map\": {\n    \"a\": "
                                   "\"model-00001-of-000002.safetensors\",\n    \"b\": \"x\"\n  }\n}\n";
    const char *path = mp_test_path(dir, "model.safetensors.index.json");
    mp_error err = {0};
    mp_st_index_entry e[] = {{"a", "model-00001-of-000002.safetensors"}, {"b", "x"}};
    REQUIRE(mp_st_write_index(path, 12, e, 2, &err) == MP_OK);
    size_t len = 0;
    char *got = slurp(path, &len);
    REQUIRE(got);
    CHECKF(!strcmp(got, expected), "index text:\n%s", got);
    free(got);
    CHECK(!mp_file_exists(mp_test_path(dir, "model.safetensors.index.json.partial")));

    mp_st_index_entry dup[] = {{"a", "f1"}, {"a", "f2"}};
    const char *p2 = mp_test_path(dir, "dup.index.json");
    CHECK(mp_st_write_index(p2, 0, dup, 2, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "twice") != NULL);
    CHECK(!mp_file_exists(p2));
}

int main(void)
{
    const char *dir = mp_test_tmpdir("safetensors_write");
    test_dtypes();
    test_matches_reference(dir);
    test_padding(dir);
    test_append(dir);
    test_concurrent(dir);
    test_errors(dir);
    test_index(dir);
    return mp_test_finish();
}
