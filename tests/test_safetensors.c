/* formats/safetensors: the fixture checkpoint, hostile headers and index
 * files, and FP8 block-scale dequantization. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_num.h"
#include "mp_test.h"
#include "safetensors.h"

static const char *tmp;

/* ---- writing test files by hand ------------------------------------------ */

static void write_bytes(const char *path, const void *a, size_t na, const void *b, size_t nb, const void *c,
                        size_t nc)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    if (na)
        REQUIRE(fwrite(a, 1, na, f) == na);
    if (nb)
        REQUIRE(fwrite(b, 1, nb, f) == nb);
    if (nc)
        REQUIRE(fwrite(c, 1, nc, f) == nc);
    REQUIRE(fclose(f) == 0);
}

static void le64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors file: 8-byte length `claimed` (or the header's true length
 * when claimed == UINT64_MAX), the header text, then `data`. */
static const char *write_st_claim(const char *name, uint64_t claimed, const char *header, const void *data,
                                  size_t ndata)
{
    const char *path = mp_test_path(tmp, name);
    uint8_t len[8];
    le64(len, claimed == UINT64_MAX ? strlen(header) : claimed);
    write_bytes(path, len, 8, header, strlen(header), data, ndata);
    return path;
}

static const char *write_st(const char *name, const char *header, const void *data, size_t ndata)
{
    return write_st_claim(name, UINT64_MAX, header, data, ndata);
}

static const char *write_text(const char *name, const char *text)
{
    const char *path = mp_test_path(tmp, name);
    write_bytes(path, text, strlen(text), NULL, 0, NULL, 0);
    return path;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Opening `path` must fail with MP_ERR_INPUT and a message naming the file
 * (`file`, default: path's base name) and containing each non-NULL needle. */
static void expect_open_fail_in(int line, const char *path, const char *file, const char *n1, const char *n2)
{
    mp_safetensors *st = (mp_safetensors *)1;
    mp_error err = {0};
    int rc = mp_st_open(path, &st, &err);
    const char *want_file = file ? file : base_name(path);
    CHECKF(rc == MP_ERR_INPUT, "line %d: rc %d for %s", line, rc, path);
    CHECKF(st == NULL, "line %d: handle not cleared", line);
    CHECKF(strstr(err.msg, want_file) != NULL, "line %d: message lacks the file name %s: %s", line, want_file,
           err.msg);
    CHECKF(!n1 || strstr(err.msg, n1), "line %d: message lacks '%s': %s", line, n1, err.msg);
    CHECKF(!n2 || strstr(err.msg, n2), "line %d: message lacks '%s': %s", line, n2, err.msg);
    if (rc == MP_OK)
        mp_st_close(st);
}
#define expect_open_fail(path, n1, n2) expect_open_fail_in(__LINE__, path, NULL, n1, n2)

static mp_safetensors *open_ok(const char *path)
{
    mp_safetensors *st = NULL;
    mp_error err = {0};
    int rc = mp_st_open(path, &st, &err);
    CHECKF(rc == MP_OK, "%s: %s", path, err.msg);
    return rc == MP_OK ? st : NULL;
}

/* ---- the fixture checkpoint --------------------------------------------------- */

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    REQUIRE(j != NULL);
    return j;
}

static uint64_t cfg(json_t *config, const char *key)
{
    json_t *v = json_object_get(config, key);
    REQUIRE(json_is_integer(v));
    return (uint64_t)json_integer_value(v);
}

static void check_shape2(const mp_safetensors *st, const char *name, uint64_t d0, uint64_t d1)
{
    const mp_st_tensor *t = mp_st_find(st, name);
    CHECKF(t != NULL, "%s missing", name);
    if (!t)
        return;
    CHECKF(t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1,
           "%s: shape [%llu, %llu] (ndim %u), expected [%llu, %llu]", name, (unsigned long long)t->shape[0],
           (unsigned long long)t->shape[1], t->ndim, (unsigned long long)d0, (unsigned long long)d1);
}

/* Reads bytes of a tensor with stdio, independently of the mapping. */
static void read_file_bytes(const char *path, uint64_t offset, void *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    REQUIRE(fseek(f, (long)offset, SEEK_SET) == 0);
    REQUIRE(fread(buf, 1, n, f) == n);
    fclose(f);
}

static void test_fixture(void)
{
    const char *fx = mp_test_fixtures();
    char dir[4096], index_path[4096], config_path[4096];
    snprintf(dir, sizeof dir, "%s/tiny-v3", fx);
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    json_t *index = load_json(index_path);
    json_t *config = load_json(config_path);
    json_t *wm = json_object_get(index, "weight_map");
    REQUIRE(json_is_object(wm));

    mp_safetensors *st = open_ok(dir);
    REQUIRE(st != NULL);
    CHECKF(mp_st_count(st) == json_object_size(wm), "count %zu, index names %zu", mp_st_count(st),
           json_object_size(wm));
    CHECK(mp_st_shard_count(st) == 5);
    CHECK(strstr(mp_st_path(st), "model.safetensors.index.json") != NULL);

    /* every index entry is found, in the shard the index names, sorted */
    const char *key;
    json_t *val;
    int wrong_shard = 0, missing = 0;
    json_object_foreach(wm, key, val)
    {
        const mp_st_tensor *t = mp_st_find(st, key);
        if (!t) {
            missing++;
            continue;
        }
        if (strcmp(base_name(t->shard_path), json_string_value(val)) != 0)
            wrong_shard++;
    }
    CHECK(missing == 0);
    CHECK(wrong_shard == 0);
    int unsorted = 0;
    for (size_t i = 1; i < mp_st_count(st); i++)
        if (strcmp(mp_st_tensor_at(st, i - 1)->name, mp_st_tensor_at(st, i)->name) >= 0)
            unsorted++;
    CHECK(unsorted == 0);
    CHECK(mp_st_tensor_at(st, mp_st_count(st)) == NULL);
    CHECK(mp_st_find(st, "model.layers.0.nope") == NULL);

    /* shapes against config.json */
    uint64_t hidden = cfg(config, "hidden_size"), vocab = cfg(config, "vocab_size");
    uint64_t heads = cfg(config, "num_attention_heads"), qlora = cfg(config, "q_lora_rank");
    uint64_t kvlora = cfg(config, "kv_lora_rank"), nope = cfg(config, "qk_nope_head_dim");
    uint64_t rope = cfg(config, "qk_rope_head_dim"), vdim = cfg(config, "v_head_dim");
    uint64_t inter = cfg(config, "intermediate_size"), moe_inter = cfg(config, "moe_intermediate_size");
    uint64_t experts = cfg(config, "n_routed_experts");
    uint64_t kdense = cfg(config, "first_k_dense_replace");
    char moe[64];
    snprintf(moe, sizeof moe, "model.layers.%llu", (unsigned long long)kdense);
    char name[256];
    check_shape2(st, "model.embed_tokens.weight", vocab, hidden);
    check_shape2(st, "lm_head.weight", vocab, hidden);
    check_shape2(st, "model.layers.0.self_attn.q_a_proj.weight", qlora, hidden);
    check_shape2(st, "model.layers.0.self_attn.q_b_proj.weight", heads * (nope + rope), qlora);
    check_shape2(st, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", kvlora + rope, hidden);
    check_shape2(st, "model.layers.0.self_attn.kv_b_proj.weight", heads * (nope + vdim), kvlora);
    check_shape2(st, "model.layers.0.self_attn.o_proj.weight", hidden, heads * vdim);
    check_shape2(st, "model.layers.0.mlp.gate_proj.weight", inter, hidden);
    check_shape2(st, "model.layers.0.mlp.down_proj.weight", hidden, inter);
    snprintf(name, sizeof name, "%s.mlp.gate.weight", moe);
    check_shape2(st, name, experts, hidden);
    snprintf(name, sizeof name, "%s.mlp.experts.%llu.up_proj.weight", moe, (unsigned long long)(experts - 1));
    check_shape2(st, name, moe_inter, hidden);
    snprintf(name, sizeof name, "%s.mlp.experts.0.down_proj.weight", moe);
    check_shape2(st, name, hidden, moe_inter);

    /* the F32 router bias reads, and equals the file's bytes */
    snprintf(name, sizeof name, "%s.mlp.gate.e_score_correction_bias", moe);
    const mp_st_tensor *bias = mp_st_find(st, name);
    REQUIRE(bias != NULL);
    CHECK(bias->dtype == MP_ST_F32 && bias->ndim == 1 && bias->shape[0] == experts);
    CHECK(strcmp(bias->dtype_name, "F32") == 0);
    float bias_vals[4096];
    REQUIRE(experts <= 4096);
    mp_error err = {0};
    CHECK(mp_st_read_rows_f32(st, bias, 0, 1, bias_vals, 0, 0, &err) == MP_OK);
    float file_vals[4096];
    read_file_bytes(bias->shard_path, bias->file_offset, file_vals, experts * 4);
    CHECK(memcmp(bias_vals, file_vals, experts * 4) == 0);
    int nonfinite = 0;
    for (uint64_t i = 0; i < experts; i++)
        nonfinite += !isfinite(bias_vals[i]);
    CHECK(nonfinite == 0);

    /* a BF16 matrix: rows 3..5 of q_a_proj against its raw bytes */
    const mp_st_tensor *qa = mp_st_find(st, "model.layers.0.self_attn.q_a_proj.weight");
    REQUIRE(qa != NULL && qa->dtype == MP_ST_BF16);
    uint64_t cols = qa->shape[1];
    float *rows = malloc(3 * cols * sizeof *rows);
    uint16_t *raw = malloc(3 * cols * 2);
    REQUIRE(rows && raw);
    CHECK(mp_st_read_rows_f32(st, qa, 3, 3, rows, 0, 0, &err) == MP_OK);
    read_file_bytes(qa->shard_path, qa->file_offset + 3 * cols * 2, raw, 3 * cols * 2);
    int diff = 0;
    for (uint64_t i = 0; i < 3 * cols; i++) {
        uint32_t bits = (uint32_t)raw[i] << 16; /* bf16 is the top half of an f32 */
        float f;
        memcpy(&f, &bits, 4);
        diff += memcmp(&f, &rows[i], 4) != 0;
    }
    CHECK(diff == 0);
    /* past the end */
    CHECK(mp_st_read_rows_f32(st, qa, qa->shape[0] - 1, 2, rows, 0, 0, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "q_a_proj") != NULL);
    free(rows);
    free(raw);
    mp_st_close(st);

    /* the same checkpoint through its index path, and one shard alone */
    st = open_ok(index_path);
    if (st) {
        CHECK(mp_st_count(st) == json_object_size(wm));
        mp_st_close(st);
    }
    char shard1[4096];
    snprintf(shard1, sizeof shard1, "%s/model-00005-of-00005.safetensors", dir);
    st = open_ok(shard1);
    if (st) {
        size_t in_shard = 0;
        json_object_foreach(wm, key, val) in_shard += strcmp(json_string_value(val), base_name(shard1)) == 0;
        CHECK(mp_st_count(st) == in_shard);
        CHECK(mp_st_shard_count(st) == 1);
        CHECK(mp_st_metadata_get(st, "format") == NULL || strcmp(mp_st_metadata_get(st, "format"), "pt") == 0);
        mp_st_close(st);
    }
    json_decref(index);
    json_decref(config);

    /* the reference outputs: __metadata__ prompts, I32 ids */
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/tiny-v3.reference.safetensors", fx);
    st = open_ok(ref);
    if (st) {
        const char *prompts = mp_st_metadata_get(st, "prompts");
        CHECK(prompts != NULL);
        if (prompts) {
            json_t *arr = json_loads(prompts, 0, NULL);
            CHECK(json_is_array(arr) && json_array_size(arr) == 6);
            CHECK(json_is_array(arr) && strncmp(json_string_value(json_array_get(arr, 0)), "The quick brown fox", 19) == 0);
            json_decref(arr);
        }
        CHECK(mp_st_metadata_get(st, "oracle") != NULL);
        CHECK(mp_st_metadata_get(st, "nope") == NULL);
        const mp_st_tensor *ids = mp_st_find(st, "prompt0.ids");
        CHECK(ids && ids->dtype == MP_ST_I32 && ids->ndim == 1);
        const mp_st_tensor *logits = mp_st_find(st, "prompt0.logits");
        CHECK(logits && logits->dtype == MP_ST_F32 && logits->ndim == 2 && ids && logits->shape[0] == ids->shape[0]);
        if (ids) {
            float f;
            CHECK(mp_st_read_rows_f32(st, ids, 0, 1, &f, 0, 0, &err) == MP_ERR_INPUT);
            CHECK(strstr(err.msg, "prompt0.ids") && strstr(err.msg, "I32"));
        }
        mp_st_close(st);
    }
}

/* ---- hostile single files -------------------------------------------------- */

static void test_hostile_headers(void)
{
    uint8_t data[64] = {0};
    const char *p;

    p = mp_test_path(tmp, "trunc.safetensors");
    write_bytes(p, "\x10\x00\x00", 3, NULL, 0, NULL, 0);
    expect_open_fail(p, "truncated", NULL);

    p = write_st_claim("hlen_past.safetensors", 1000, "{}", NULL, 0);
    expect_open_fail(p, "runs past the end", NULL);

    p = write_st_claim("hlen_huge.safetensors", 200000000ull, "{}", NULL, 0);
    expect_open_fail(p, "exceeds the limit", NULL);

    p = write_st_claim("hlen_2e64.safetensors", UINT64_MAX - 1, "{}", NULL, 0);
    expect_open_fail(p, "exceeds the limit", NULL);

    p = write_st("badjson.safetensors", "{\"a\": ", NULL, 0);
    expect_open_fail(p, "not valid JSON", NULL);

    p = write_st("trailing.safetensors", "{} x", NULL, 0);
    expect_open_fail(p, "not valid JSON", NULL);

    p = write_st("notobj.safetensors", "[1, 2]", NULL, 0);
    expect_open_fail(p, "not a JSON object", NULL);

    p = write_st("nul.safetensors", "{\"a\\u0000b\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
                 data, 1);
    expect_open_fail(p, "not valid JSON", NULL);

    p = write_st("dup.safetensors",
                 "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                 " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
                 data, 2);
    expect_open_fail(p, "duplicate", NULL);

    p = write_st("entry_type.safetensors", "{\"w\": [1]}", NULL, 0);
    expect_open_fail(p, "w: header entry is not a JSON object", NULL);

    p = write_st("no_offsets.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", data, 4);
    expect_open_fail(p, "w: ", "lacks 'data_offsets'");
    p = write_st("no_dtype.safetensors", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", data, 4);
    expect_open_fail(p, "w: ", "lacks 'dtype'");
    p = write_st("no_shape.safetensors", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", data, 4);
    expect_open_fail(p, "w: ", "lacks 'shape'");

    p = write_st("dtype_num.safetensors", "{\"w\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", data, 4);
    expect_open_fail(p, "w: ", "dtype is not a string");
    p = write_st("shape_str.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": \"1\", \"data_offsets\": [0, 4]}}",
                 data, 4);
    expect_open_fail(p, "w: ", "shape is not an array");
    p = write_st("shape_real.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
                 data, 4);
    expect_open_fail(p, "w: ", "not an integer");
    p = write_st("offs_str.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, \"4\"]}}",
                 data, 4);
    expect_open_fail(p, "w: ", "data_offsets is not an array of 2 integers");
    p = write_st("offs_three.safetensors",
                 "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", data, 4);
    expect_open_fail(p, "w: ", "data_offsets is not an array of 2 integers");

    p = write_st("neg_dim.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}",
                 data, 4);
    expect_open_fail(p, "w: ", "negative");
    p = write_st("overflow.safetensors",
                 "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", data,
                 4);
    expect_open_fail(p, "w: ", "64 bits");
    p = write_st("overflow2.safetensors",
                 "{\"w\": {\"dtype\": \"F32\", \"shape\": [9223372036854775807, 3, 0], \"data_offsets\": [0, 0]}}",
                 NULL, 0);
    expect_open_fail(p, "w: ", "64 bits");
    p = write_st("bytes_overflow.safetensors",
                 "{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387905], \"data_offsets\": [0, 4]}}", data, 4);
    expect_open_fail(p, "w: ", "2^64");
    p = write_st("dims9.safetensors",
                 "{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", data, 1);
    expect_open_fail(p, "w: ", "more than 8");
    p = write_st("bigint.safetensors",
                 "{\"w\": {\"dtype\": \"U8\", \"shape\": [99999999999999999999999], \"data_offsets\": [0, 1]}}", data,
                 1);
    expect_open_fail(p, "not valid JSON", NULL);

    p = write_st("outside.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", data,
                 4);
    expect_open_fail(p, "w: ", "outside the data area");
    p = write_st("neg_off.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
                 data, 4);
    expect_open_fail(p, "w: ", "negative");
    p = write_st("begin_end.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}",
                 data, 8);
    expect_open_fail(p, "w: ", "begin is after end");

    p = write_st("mismatch.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                 data, 8);
    expect_open_fail(p, "w: ", "size mismatch");
    p = write_st("mismatch_bf16.safetensors",
                 "{\"w\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 4]}}", data, 4);
    expect_open_fail(p, "w: ", "BF16 [2, 2] needs 8");

    p = write_st("overlap.safetensors",
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                 data, 12);
    expect_open_fail(p, "b: overlaps tensor a", NULL);
    p = write_st("same_range.safetensors",
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"b\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}}",
                 data, 8);
    expect_open_fail(p, "overlaps", NULL);
    p = write_st("hole.safetensors",
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                 " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
                 data, 12);
    expect_open_fail(p, "b: ", "unindexed");
    p = write_st("tail.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", data,
                 9);
    expect_open_fail(p, "5 bytes at the end", NULL);

    p = write_st("meta_type.safetensors", "{\"__metadata__\": [\"x\"]}", NULL, 0);
    expect_open_fail(p, "__metadata__", "not a JSON object");
    p = write_st("meta_val.safetensors", "{\"__metadata__\": {\"k\": 1}}", NULL, 0);
    expect_open_fail(p, "'k'", "not a string");

    p = write_st("empty_name.safetensors", "{\"\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
                 data, 1);
    expect_open_fail(p, "empty name", NULL);

    expect_open_fail(mp_test_path(tmp, "does_not_exist.safetensors"), "cannot open", NULL);
}

/* ---- files that must open ------------------------------------------------------- */

static void test_good_files(void)
{
    uint8_t data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (uint8_t)i;
    mp_error err = {0};

    /* empty checkpoint, 0-d and 0-size tensors, metadata, spaces padding */
    const char *p = write_st("edge.safetensors",
                             "{\"__metadata__\": {\"format\": \"pt\", \"k\": \"v\"},"
                             " \"scalar\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
                             " \"empty\": {\"dtype\": \"BF16\", \"shape\": [0, 5], \"data_offsets\": [4, 4]},"
                             " \"f16\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [4, 8]}}      ",
                             data, 8);
    mp_safetensors *st = open_ok(p);
    if (st) {
        CHECK(mp_st_count(st) == 3);
        CHECK(strcmp(mp_st_metadata_get(st, "k"), "v") == 0);
        const mp_st_tensor *s = mp_st_find(st, "scalar");
        CHECK(s && s->ndim == 0 && s->nelems == 1 && s->nbytes == 4);
        const mp_st_tensor *e = mp_st_find(st, "empty");
        CHECK(e && e->nelems == 0 && e->nbytes == 0 && e->data == NULL);
        float out[2] = {-1, -1};
        CHECK(e && mp_st_read_rows_f32(st, e, 0, 0, out, 0, 0, &err) == MP_OK);
        const mp_st_tensor *h = mp_st_find(st, "f16");
        REQUIRE(h != NULL);
        CHECK(mp_st_read_rows_f32(st, h, 0, 1, out, 0, 0, &err) == MP_OK);
        /* bytes 4,5 and 6,7 little-endian: 0x0504 and 0x0706 as IEEE halves */
        CHECK(out[0] == mp_f16_to_f32(0x0504) && out[1] == mp_f16_to_f32(0x0706));
        CHECK(s && mp_st_read_rows_f32(st, s, 0, 1, out, 0, 0, &err) == MP_ERR_INPUT &&
              strstr(err.msg, "0-D") && strstr(err.msg, "scalar"));
        mp_st_close(st);
    }

    /* unknown dtypes are tolerated at open, refused on read */
    p = write_st("odd_dtype.safetensors",
                 "{\"q\": {\"dtype\": \"Q9_WEIRD\", \"shape\": [2], \"data_offsets\": [0, 3]},"
                 " \"d\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [3, 11]}}",
                 data, 11);
    st = open_ok(p);
    if (st) {
        const mp_st_tensor *q = mp_st_find(st, "q");
        CHECK(q && q->dtype == MP_ST_OTHER && strcmp(q->dtype_name, "Q9_WEIRD") == 0 && q->nbytes == 3);
        float out[4];
        CHECK(q && mp_st_read_rows_f32(st, q, 0, 1, out, 0, 0, &err) == MP_ERR_INPUT);
        CHECK(strstr(err.msg, "odd_dtype.safetensors") && strstr(err.msg, "q: ") && strstr(err.msg, "Q9_WEIRD"));
        const mp_st_tensor *d = mp_st_find(st, "d");
        CHECK(d && d->dtype == MP_ST_OTHER && strcmp(d->dtype_name, "F64") == 0);
        CHECK(d && mp_st_read_rows_f32(st, d, 0, 1, out, 0, 0, &err) == MP_ERR_INPUT && strstr(err.msg, "F64"));
        mp_st_close(st);
    }
    /* ... but a known dtype's size is still checked */
    p = write_st("f64_size.safetensors", "{\"d\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                 data, 8);
    expect_open_fail(p, "d: ", "size mismatch");
}

/* ---- index files and directories ----------------------------------------------- */

static const char *make_dir(const char *name)
{
    const char *d = mp_test_path(tmp, name);
    REQUIRE(mkdir(d, 0755) == 0);
    return d;
}

static void test_index_and_dirs(void)
{
    uint8_t data[16] = {0};
    char path[4096];
    static char dir_a[4096];

    /* a directory with two files and no index: both are opened */
    snprintf(dir_a, sizeof dir_a, "%s", make_dir("two_files"));
    const char *A = "{\"a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}";
    const char *B = "{\"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}";
    snprintf(path, sizeof path, "two_files/x.safetensors");
    write_st(path, A, data, 2);
    snprintf(path, sizeof path, "two_files/y.safetensors");
    write_st(path, B, data, 2);
    mp_safetensors *st = open_ok(dir_a);
    if (st) {
        CHECK(mp_st_count(st) == 2 && mp_st_shard_count(st) == 2);
        CHECK(mp_st_find(st, "a") && mp_st_find(st, "b"));
        mp_st_close(st);
    }
    /* the same name in two files */
    const char *dup = make_dir("dup_files");
    write_st("dup_files/x.safetensors", A, data, 2);
    write_st("dup_files/y.safetensors", A, data, 2);
    expect_open_fail_in(__LINE__, dup, "y.safetensors", "a: tensor appears in both", NULL);
    /* nothing there */
    const char *empty = make_dir("empty_dir");
    expect_open_fail_in(__LINE__, empty, "empty_dir", "no .safetensors file", NULL);
    /* a bad file inside a directory is reported by its own name */
    const char *bad = make_dir("bad_dir");
    write_st("bad_dir/broken.safetensors", "{\"a\": 1}", NULL, 0);
    expect_open_fail_in(__LINE__, bad, "broken.safetensors", "a: ", NULL);

    /* a numbered shard set without an index must be whole: the first missing
     * file and the count are named, not a tensor that a missing shard holds */
    char cut[4096], full[4096]; /* mp_test_path's buffers are reused by write_st */
    snprintf(cut, sizeof cut, "%s", make_dir("cut_set"));
    snprintf(full, sizeof full, "%s", make_dir("full_set"));
    char header[128];
    for (int k = 1; k <= 5; k++) {
        snprintf(header, sizeof header, "{\"t%d\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}", k);
        if (k != 3 && k != 5) {
            snprintf(path, sizeof path, "cut_set/model-%05d-of-00005.safetensors", k);
            write_st(path, header, data, 2);
        }
        if (k <= 3) {
            snprintf(path, sizeof path, "full_set/model-%05d-of-000003.safetensors", k);
            write_st(path, header, data, 2);
        }
    }
    write_st("cut_set/extra.safetensors", B, data, 2);
    write_st("full_set/extra.safetensors", B, data, 2); /* a file outside the set is no part of it */
    expect_open_fail_in(__LINE__, cut, "cut_set", "2 of the 5 shards", "first: model-00003-of-00005.safetensors");
    st = open_ok(full);
    if (st) {
        CHECK(mp_st_count(st) == 4 && mp_st_shard_count(st) == 4);
        mp_st_close(st);
    }
    char headless[4096];
    snprintf(headless, sizeof headless, "%s", make_dir("headless_set"));
    write_st("headless_set/model-00002-of-00002.safetensors", A, data, 2);
    expect_open_fail_in(__LINE__, headless, "headless_set", "1 of the 2 shards",
                        "first: model-00001-of-00002.safetensors");

    /* index files */
    const char *idx = make_dir("idx");
    write_st("idx/s1.safetensors", A, data, 2);
    write_st("idx/s2.safetensors", B, data, 2);
    write_text("idx/model.safetensors.index.json",
               "{\"metadata\": {\"total_size\": 4}, \"weight_map\": {\"a\": \"s1.safetensors\", \"b\": "
               "\"s2.safetensors\"}}");
    st = open_ok(idx);
    if (st) {
        CHECK(mp_st_count(st) == 2 && mp_st_shard_count(st) == 2);
        const mp_st_tensor *b = mp_st_find(st, "b");
        CHECK(b && strstr(b->shard_path, "s2.safetensors"));
        mp_st_close(st);
    }
    /* an index naming only part of a shard: the rest is invisible */
    const char *p = write_text("idx/part.index.json", "{\"weight_map\": {\"a\": \"s1.safetensors\"}}");
    st = open_ok(p);
    if (st) {
        CHECK(mp_st_count(st) == 1 && mp_st_find(st, "b") == NULL && mp_st_shard_count(st) == 1);
        mp_st_close(st);
    }

    p = write_text("idx/missing_shard.index.json", "{\"weight_map\": {\"a\": \"s9.safetensors\"}}");
    expect_open_fail(p, "s9.safetensors", "does not exist");
    p = write_text("idx/traversal.index.json", "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    expect_open_fail(p, "a: ", "not a plain file name");
    p = write_text("idx/dotdot.index.json", "{\"weight_map\": {\"a\": \"..\"}}");
    expect_open_fail(p, "a: ", "not a plain file name");
    p = write_text("idx/abs.index.json", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    expect_open_fail(p, "a: ", "not a plain file name");
    p = write_text("idx/wrong_shard.index.json", "{\"weight_map\": {\"a\": \"s2.safetensors\"}}");
    expect_open_fail(p, "a: ", "does not hold it");
    p = write_text("idx/no_map.index.json", "{\"metadata\": {}}");
    expect_open_fail(p, "weight_map is missing", NULL);
    p = write_text("idx/map_type.index.json", "{\"weight_map\": [\"a\"]}");
    expect_open_fail(p, "weight_map is not a JSON object", NULL);
    p = write_text("idx/map_val.index.json", "{\"weight_map\": {\"a\": 3}}");
    expect_open_fail(p, "a: ", "not a string");
    p = write_text("idx/map_empty.index.json", "{\"weight_map\": {}}");
    expect_open_fail(p, "empty", NULL);
    p = write_text("idx/bad.index.json", "{\"weight_map\": ");
    expect_open_fail(p, "not valid JSON", NULL);
    p = write_text("idx/dup.index.json", "{\"weight_map\": {\"a\": \"s1.safetensors\", \"a\": \"s1.safetensors\"}}");
    expect_open_fail(p, "not valid JSON", "duplicate");
    /* a broken shard behind a good index */
    write_st("idx/s3.safetensors", "{\"c\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0, 2]}}", data, 2);
    p = write_text("idx/broken_shard.index.json", "{\"weight_map\": {\"c\": \"s3.safetensors\"}}");
    expect_open_fail_in(__LINE__, p, "s3.safetensors", "c: ", "size mismatch");
}

/* ---- FP8 block scales ------------------------------------------------------------- */

/* E4M3 codes with their values worked out by hand from the format
 * (sign, 4-bit exponent with bias 7, 3-bit mantissa; exponent 0 = subnormal). */
static const struct {
    uint8_t q;
    float v;
} fp8_known[] = {
    {0x00, 0.0f},     {0x38, 1.0f},  {0x40, 2.0f},      {0x3c, 1.5f},   {0xb8, -1.0f},       {0x7e, 448.0f},
    {0x01, 0.001953125f /* 2^-9 */}, {0x08, 0.015625f /* 2^-6 */},    {0x30, 0.5f},       {0x44, 3.0f},
    {0xc4, -3.0f},    {0x3f, 1.875f}, {0x46, 3.5f},     {0x50, 8.0f},   {0x22, 0.15625f /* 2^-3 * 1.25 */},
};
#define N_FP8_KNOWN (sizeof fp8_known / sizeof fp8_known[0])

static void test_fp8(void)
{
    /* weight [5, 7] in 2x3 blocks -> scale_inv [3, 3]; the scale lives in a
     * second shard */
    enum { R = 5, C = 7, BR = 2, BC = 3, SR = 3, SC = 3 };
    uint8_t q[R * C];
    float want[R * C];
    float scale[SR * SC] = {0.5f, 2.0f, 0.25f, 3.0f, -1.0f, 1.0f / 3.0f, 1e-3f, 7.0f, 100.0f};
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            int k = (r * C + c * 5) % (int)N_FP8_KNOWN;
            q[r * C + c] = fp8_known[k].q;
            want[r * C + c] = fp8_known[k].v * scale[(r / BR) * SC + c / BC];
        }
    const char *d = make_dir("fp8");
    (void)d;
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "{\"__metadata__\": {\"format\": \"pt\"}, \"layer.w.weight\": {\"dtype\": \"F8_E4M3\", \"shape\": [%d, %d], "
             "\"data_offsets\": [0, %d]}}",
             R, C, R * C);
    write_st("fp8/w.safetensors", hdr, q, sizeof q);
    snprintf(hdr, sizeof hdr,
             "{\"layer.w.weight_scale_inv\": {\"dtype\": \"F32\", \"shape\": [%d, %d], \"data_offsets\": [0, %d]}}",
             SR, SC, SR * SC * 4);
    write_st("fp8/s.safetensors", hdr, scale, sizeof scale);
    write_text("fp8/model.safetensors.index.json",
               "{\"weight_map\": {\"layer.w.weight\": \"w.safetensors\", \"layer.w.weight_scale_inv\": "
               "\"s.safetensors\"}}");
    mp_safetensors *st = open_ok(mp_test_path(tmp, "fp8"));
    REQUIRE(st != NULL);
    mp_error err = {0};
    const mp_st_tensor *w = mp_st_find(st, "layer.w.weight");
    REQUIRE(w != NULL);
    CHECK(w->dtype == MP_ST_F8_E4M3);
    CHECK(mp_st_scale_inv_of(st, w) == mp_st_find(st, "layer.w.weight_scale_inv"));
    CHECK(mp_st_check_fp8_scales(st, BR, BC, &err) == MP_OK);
    float out[R * C];
    memset(out, 0, sizeof out);
    CHECKF(mp_st_read_rows_f32(st, w, 0, R, out, BR, BC, &err) == MP_OK, "%s", err.msg);
    int bad = 0;
    for (int i = 0; i < R * C; i++)
        bad += out[i] != want[i];
    CHECKF(bad == 0, "%d of %d dequantized values differ", bad, R * C);
    /* rows 3..4 only */
    float part[2 * C];
    CHECK(mp_st_read_rows_f32(st, w, 3, 2, part, BR, BC, &err) == MP_OK);
    CHECK(memcmp(part, want + 3 * C, sizeof part) == 0);
    /* the block size must match the scale's shape */
    CHECK(mp_st_read_rows_f32(st, w, 0, 1, out, 128, 128, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "s.safetensors") && strstr(err.msg, "layer.w.weight_scale_inv") &&
          strstr(err.msg, "expected [1, 1]"));
    CHECK(mp_st_check_fp8_scales(st, 128, 128, &err) == MP_ERR_INPUT);
    CHECK(mp_st_read_rows_f32(st, w, 0, 1, out, 0, 0, &err) == MP_ERR_INPUT);
    CHECK(strstr(err.msg, "layer.w.weight") && strstr(err.msg, "weight_block_size"));
    mp_st_close(st);

    /* scale missing */
    make_dir("fp8_noscale");
    snprintf(hdr, sizeof hdr, "{\"x.weight\": {\"dtype\": \"F8_E4M3\", \"shape\": [%d, %d], \"data_offsets\": [0, %d]}}",
             R, C, R * C);
    const char *p = write_st("fp8_noscale/w.safetensors", hdr, q, sizeof q);
    st = open_ok(p);
    if (st) {
        const mp_st_tensor *x = mp_st_find(st, "x.weight");
        CHECK(mp_st_read_rows_f32(st, x, 0, 1, out, BR, BC, &err) == MP_ERR_INPUT);
        CHECK(strstr(err.msg, "w.safetensors") && strstr(err.msg, "x.weight: ") &&
              strstr(err.msg, "x.weight_scale_inv"));
        CHECK(mp_st_check_fp8_scales(st, BR, BC, &err) == MP_ERR_INPUT && strstr(err.msg, "no companion"));
        mp_st_close(st);
    }

    /* scale of the wrong dtype, and of the wrong rank */
    uint8_t both[R * C + SR * SC * 4];
    memcpy(both, q, sizeof q);
    memcpy(both + sizeof q, scale, sizeof scale);
    snprintf(hdr, sizeof hdr,
             "{\"x.weight\": {\"dtype\": \"F8_E4M3\", \"shape\": [%d, %d], \"data_offsets\": [0, %d]},"
             " \"x.weight_scale_inv\": {\"dtype\": \"BF16\", \"shape\": [%d, %d], \"data_offsets\": [%d, %d]}}",
             R, C, R * C, SR, SC * 2, R * C, R * C + SR * SC * 4);
    p = write_st("fp8_bf16scale.safetensors", hdr, both, sizeof both);
    st = open_ok(p);
    if (st) {
        CHECK(mp_st_read_rows_f32(st, mp_st_find(st, "x.weight"), 0, 1, out, BR, BC, &err) == MP_ERR_INPUT);
        CHECK(strstr(err.msg, "fp8_bf16scale") && strstr(err.msg, "x.weight_scale_inv: ") && strstr(err.msg, "BF16"));
        mp_st_close(st);
    }
    snprintf(hdr, sizeof hdr,
             "{\"x.weight\": {\"dtype\": \"F8_E4M3\", \"shape\": [%d, %d], \"data_offsets\": [0, %d]},"
             " \"x.weight_scale_inv\": {\"dtype\": \"F32\", \"shape\": [%d], \"data_offsets\": [%d, %d]}}",
             R, C, R * C, SR * SC, R * C, R * C + SR * SC * 4);
    p = write_st("fp8_1dscale.safetensors", hdr, both, sizeof both);
    st = open_ok(p);
    if (st) {
        CHECK(mp_st_check_fp8_scales(st, BR, BC, &err) == MP_ERR_INPUT);
        CHECK(strstr(err.msg, "fp8_1dscale") && strstr(err.msg, "scale shape is [9], expected [3, 3]"));
        mp_st_close(st);
    }
}

/* ---- mutated headers never crash ---------------------------------------------- */

/* Flips header bytes of a valid file to characters that matter to JSON and
 * numbers; every result must open cleanly or fail with MP_ERR_INPUT, and
 * whatever opens must read back (ASan checks the bounds). */
static void test_mutations(void)
{
    const char *good = "{\"__metadata__\": {\"format\": \"pt\"},"
                       " \"a\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, 12]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [12, 24]},"
                       " \"c\": {\"dtype\": \"F8_E4M3\", \"shape\": [2, 2], \"data_offsets\": [24, 28]},"
                       " \"c_scale_inv\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [28, 32]}}";
    static const char alphabet[] = "0123456789-+.eE[]{}\",: \\u";
    size_t hlen = strlen(good);
    char *h = malloc(hlen + 1);
    uint8_t data[40];
    for (int i = 0; i < 40; i++)
        data[i] = (uint8_t)(i * 37);
    REQUIRE(h != NULL);
    uint32_t seed = 12345;
    int opened = 0, bad_rc = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(h, good, hlen + 1);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t pos = (seed >> 8) % hlen;
            seed = seed * 1664525u + 1013904223u;
            h[pos] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        /* the data area sometimes shorter or longer than the header says */
        size_t ndata = 32 + (iter % 5 == 0) - (iter % 7 == 0);
        const char *p = write_st("mutant.safetensors", h, data, ndata);
        mp_safetensors *st = NULL;
        mp_error err = {0};
        int rc = mp_st_open(p, &st, &err);
        if (rc != MP_OK && rc != MP_ERR_INPUT)
            bad_rc++;
        if (rc != MP_OK)
            continue;
        opened++;
        for (size_t i = 0; i < mp_st_count(st); i++) {
            const mp_st_tensor *t = mp_st_tensor_at(st, i);
            uint64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->nelems;
            if (t->ndim > 2 || rows * cols > 64)
                continue;
            float out[64];
            rc = mp_st_read_rows_f32(st, t, 0, rows, out, 2, 2, &err);
            if (rc != MP_OK && rc != MP_ERR_INPUT)
                bad_rc++;
        }
        mp_st_close(st);
    }
    free(h);
    CHECK(bad_rc == 0);
    CHECKF(opened > 0 && opened < 1500, "%d of 1500 mutants opened", opened);
    printf("%d of 1500 mutated headers opened\n", opened);
}

int main(void)
{
    tmp = mp_test_tmpdir("test_safetensors");
    static char tmp_copy[4096];
    snprintf(tmp_copy, sizeof tmp_copy, "%s", tmp);
    tmp = tmp_copy;
    test_hostile_headers();
    test_good_files();
    test_index_and_dirs();
    test_fp8();
    test_mutations();
    test_fixture();
    return mp_test_finish();
}
