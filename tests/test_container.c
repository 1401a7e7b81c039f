/* formats/container: plan, write, open, verify; and every way a damaged or
 * hostile container must be refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include <jansson.h>

#include "container.h"
#include "model_desc_json.h"
#include "mp_test.h"

static char *META;

/* A valid metadata object around a small but complete model description. */
/* The metadata JSON; format / format_version as given (NULL: left out). */
static char *make_meta_as(const char *format, const char *format_version)
{
    mp_model_desc d;
    mp_model_desc_init(&d);
    strcpy(d.model_type, "deepseek_v3");
    d.vocab_size = 100; d.hidden_size = 64; d.intermediate_size = 128; d.moe_intermediate_size = 64;
    d.num_hidden_layers = 2; d.num_attention_heads = 4; d.n_routed_experts = 3; d.n_shared_experts = 1;
    d.num_experts_per_tok = 2; d.first_k_dense_replace = 1; d.moe_layer_freq = 1; d.q_lora_rank = 32;
    d.kv_lora_rank = 32; d.qk_nope_head_dim = 16; d.qk_rope_head_dim = 8; d.v_head_dim = 16;
    d.scoring_func = MP_SCORING_SIGMOID; d.topk_method = MP_TOPK_NOAUX_TC; d.norm_topk_prob = true;
    d.routed_scaling_factor = 2.5f; d.rms_norm_eps = 1e-6f; d.rope_theta = 10000; d.max_position_embeddings = 4096;
    d.defaulted = MP_DEFAULTED_GROUPS;
    json_t *m = json_object();
    if (format)
        json_object_set_new(m, "format", json_string(format));
    if (format_version)
        json_object_set_new(m, "format_version", json_string(format_version));
    json_object_set_new(m, "model", mp_model_desc_to_json(&d));
    char *s = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return s;
}

static char *make_meta(void)
{
    return make_meta_as("moepack", "1.0");
}
static const uint8_t TOK[] = "tokenizer-blob-for-tests";

/* Fills a tensor's data+scale with a deterministic pattern and records its checksum. */
static void write_tensor(mp_outfile *out, mp_ctensor *t, uint8_t seed)
{
    mp_error e = {0};
    uint8_t *buf = malloc(t->data_size + t->scale_size);
    for (uint64_t i = 0; i < t->data_size + t->scale_size; i++)
        buf[i] = (uint8_t)(seed + i * 7);
    REQUIRE(mp_outfile_pwrite(out, buf, t->data_size, t->data_offset, &e) == MP_OK);
    if (t->scale_size)
        REQUIRE(mp_outfile_pwrite(out, buf + t->data_size, t->scale_size, t->scale_offset, &e) == MP_OK);
    t->checksum = XXH3_64bits(buf, t->data_size + t->scale_size);
    free(buf);
}

static void make_container(const char *path)
{
    mp_error e = {0};
    mp_container_plan p = {0};
    mp_ctensor s;
    memset(&s, 0, sizeof s);
    s.name = "token_embd";
    s.role = MP_ROLE_TOKEN_EMBD; s.layer = -1; s.expert = -1;
    s.layout = MP_LAYOUT_ROW_MAJOR; s.quant = MP_QUANT_BF16; s.section = MP_SECTION_HOST;
    s.ndim = 2; s.shape[0] = 100; s.shape[1] = 64;
    REQUIRE(mp_container_plan_add(&p, &s, &e) == MP_OK);

    memset(&s, 0, sizeof s);
    s.name = "blk.0.attn_q_a";
    s.role = MP_ROLE_Q_A; s.layer = 0; s.expert = -1;
    s.layout = MP_LAYOUT_GPU_INT4; s.quant = MP_QUANT_INT4_SYM; s.section = MP_SECTION_GPU;
    s.ndim = 2; s.shape[0] = 33; s.shape[1] = 200; s.group_width = 128;
    REQUIRE(mp_container_plan_add(&p, &s, &e) == MP_OK);

    memset(&s, 0, sizeof s);
    s.name = "blk.0.w_uk";
    s.role = MP_ROLE_W_UK; s.layer = 0; s.expert = -1;
    s.layout = MP_LAYOUT_HEADS; s.quant = MP_QUANT_BF16; s.section = MP_SECTION_GPU;
    s.ndim = 3; s.shape[0] = 4; s.shape[1] = 32; s.shape[2] = 16;
    REQUIRE(mp_container_plan_add(&p, &s, &e) == MP_OK);

    for (int ex = 0; ex < 3; ex++) {
        char name[64];
        snprintf(name, sizeof name, "blk.1.exp.%d.down", ex);
        memset(&s, 0, sizeof s);
        s.name = name;
        s.role = MP_ROLE_EXP_DOWN; s.layer = 1; s.expert = ex;
        s.layout = MP_LAYOUT_AMX_INT8; s.quant = MP_QUANT_INT8; s.section = MP_SECTION_CPU;
        s.ndim = 2; s.shape[0] = 64; s.shape[1] = 300; s.group_width = 256;
        REQUIRE(mp_container_plan_add(&p, &s, &e) == MP_OK);
    }
    /* an invalid combination is refused at planning time */
    memset(&s, 0, sizeof s);
    s.name = "bad"; s.role = MP_ROLE_Q_A; s.layout = MP_LAYOUT_AMX_INT8; s.quant = MP_QUANT_BF16; s.ndim = 2;
    s.shape[0] = 16; s.shape[1] = 64; s.group_width = 64;
    CHECK(mp_container_plan_add(&p, &s, &e) == MP_ERR_INPUT);

    REQUIRE(mp_container_plan_layout(&p, &e) == MP_OK);
    CHECK(p.section_offset[MP_SECTION_CPU] % (2u << 20) == 0);
    CHECK(p.section_offset[MP_SECTION_GPU] % 4096 == 0);
    /* padded sizes per docs/LAYOUTS.md */
    CHECK(p.tensors[1].padded[0] == 48 && p.tensors[1].padded[1] == 256);
    CHECK(p.tensors[1].data_size == 48 * 128 && p.tensors[1].scale_size == 48 * 2 * 2);
    /* amx_int8 K=300, Kg=256: groups 256 + 44 -> Kp = 256 + 64 */
    CHECK(p.tensors[3].padded[0] == 64 && p.tensors[3].padded[1] == 320);
    CHECK(p.tensors[3].data_size == 64 * 320 && p.tensors[3].scale_size == 2 * 64 * 8);

    mp_outfile out;
    REQUIRE(mp_outfile_open(&out, path, false, &e) == MP_OK);
    for (size_t i = 0; i < p.n_tensors; i++)
        write_tensor(&out, &p.tensors[i], (uint8_t)i);
    REQUIRE(mp_container_write_tail(&out, &p, META, TOK, sizeof TOK, &e) == MP_OK);
    REQUIRE(mp_outfile_commit(&out, &e) == MP_OK);
    mp_container_plan_free(&p);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len);
    REQUIRE(fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(b, 1, len, f) == len);
    fclose(f);
}

static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void rehash_header(uint8_t *b) { put64(b + 248, XXH3_64bits(b, 248)); }

/* Expects open to fail with a message containing `want`: MP_ERR_CHECK for a
 * checksum that does not match, MP_ERR_INPUT for anything else. */
static void expect_open_fails(const char *path, const char *want)
{
    mp_error e = {0};
    mp_container *c = NULL;
    int rc = mp_container_open(path, &c, &e);
    int code = strstr(want, "checksum") ? MP_ERR_CHECK : MP_ERR_INPUT;
    CHECKF(rc == code, "open of %s gave %d (want %d, failure with '%s')", path, rc, code, want);
    CHECKF(strstr(e.msg, want) != NULL, "message '%s' lacks '%s'", e.msg, want);
    CHECK(c == NULL);
}

int main(void)
{
    const char *dir = mp_test_tmpdir("test_container");
    const char *path = mp_test_path(dir, "ok.moepack");
    META = make_meta();
    make_container(path);

    mp_error e = {0};
    mp_container *c = NULL;
    REQUIRE(mp_container_open(path, &c, &e) == MP_OK);
    CHECK(c->hdr.n_tensors == 6);
    /* the model description survives the round trip, defaulted bits included */
    CHECK(c->desc.hidden_size == 64 && c->desc.n_routed_experts == 3 && c->desc.q_lora_rank == 32);
    CHECK(c->desc.scoring_func == MP_SCORING_SIGMOID && c->desc.routed_scaling_factor == 2.5f);
    CHECK(c->desc.defaulted == MP_DEFAULTED_GROUPS);
    const mp_ctensor *t = mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 2);
    REQUIRE(t);
    CHECK(strcmp(t->name, "blk.1.exp.2.down") == 0);
    CHECK(t->data_offset % 4096 == 0);
    CHECK(mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 3) == NULL);
    CHECK(mp_container_find_name(c, "blk.0.w_uk")->ndim == 3);
    /* the first CPU tensor of a layer starts on a 2 MiB boundary */
    CHECK(mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 0)->data_offset % (2u << 20) == 0);
    CHECK(mp_container_verify(c, 2, &e) == MP_OK);
    uint8_t *tok = NULL;
    size_t tok_len = 0;
    CHECK(mp_container_tokenizer_blob(c, &tok, &tok_len, &e) == MP_OK);
    CHECK(tok_len == sizeof TOK && memcmp(tok, TOK, tok_len) == 0);
    free(tok);
    uint64_t down0_off = mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 0)->data_offset;
    uint64_t down1_off = mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 1)->data_offset;
    uint64_t down1_scale = mp_container_find(c, MP_ROLE_EXP_DOWN, 1, 1)->scale_offset;
    uint64_t dir_off = c->hdr.dir_offset;
    mp_container_close(c);

    size_t len;
    uint8_t *good = slurp(path, &len);
    uint8_t *b = malloc(len);
    const char *bad = mp_test_path(dir, "bad.moepack");

    /* one flipped byte in a tensor: open succeeds (data is not read), verify names the tensor */
    memcpy(b, good, len);
    b[down1_off + 100] ^= 1;
    spit(bad, b, len);
    REQUIRE(mp_container_open(bad, &c, &e) == MP_OK);
    CHECK(mp_container_verify(c, 2, &e) == MP_ERR_CHECK);
    CHECKF(strstr(e.msg, "blk.1.exp.1.down") != NULL, "%s", e.msg);
    mp_container_close(c);
    /* ... and in its scales */
    memcpy(b, good, len);
    b[down1_scale + 3] ^= 0x80;
    spit(bad, b, len);
    REQUIRE(mp_container_open(bad, &c, &e) == MP_OK);
    CHECK(mp_container_verify(c, 1, &e) == MP_ERR_CHECK && strstr(e.msg, "blk.1.exp.1.down"));
    mp_container_close(c);

    /* truncation anywhere, and appended bytes */
    size_t cuts[] = {0, 10, 255, 4095, 4096, 5000, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, good, cuts[i]);
        mp_container *cc = NULL;
        CHECKF(mp_container_open(bad, &cc, &e) == MP_ERR_INPUT, "truncated to %zu", cuts[i]);
    }
    memcpy(b, good, len);
    spit(bad, good, len - 1);
    expect_open_fails(bad, "truncated");

    /* bad magic, corrupt header, future version */
    memcpy(b, good, len);
    b[0] = 'X';
    spit(bad, b, len);
    expect_open_fails(bad, "bad magic");
    memcpy(b, good, len);
    b[20] ^= 1;
    spit(bad, b, len);
    expect_open_fails(bad, "header checksum");
    memcpy(b, good, len);
    b[8] = 2;
    rehash_header(b);
    spit(bad, b, len);
    expect_open_fails(bad, "version 2.0 is not supported");

    /* a corrupt directory entry is caught by the directory checksum */
    memcpy(b, good, len);
    b[dir_off + 128 + 88] ^= 4;
    spit(bad, b, len);
    expect_open_fails(bad, "directory checksum");

    /* a directory that lies consistently (checksums recomputed) is still refused */
    const size_t ent = dir_off + 3 * 128; /* blk.1.exp.0.down */
    uint64_t strings_off = 0, strings_size = 0;
    for (int i = 0; i < 8; i++) {
        strings_off |= (uint64_t)good[48 + i] << (8 * i);
        strings_size |= (uint64_t)good[56 + i] << (8 * i);
    }
    struct {
        size_t field;
        uint64_t value;
        const char *want;
    } lies[] = {
        {88, 1ull << 40, "do not match"},                /* data size */
        {80, 8, "outside its cpu section"},               /* data offset in the header */
        {80, (uint64_t)len + 4096, "outside its cpu section"},
        {32, 1ull << 41, "invalid combination"},          /* shape */
        {10, 9, "invalid combination"},                   /* layout id */
        {8, 999, "unknown role"},
        {8, 12, "attn_kv_b (12) is never stored"},        /* a source-only role */
        {80, 1, "overlap"}, /* data offset onto the next tensor's data (out of file order): set below */
        {80, 2, "overlap"}, /* data offset 4096 on, over its own scales (in file order): set below */
        {0, 1u << 30, "bad name reference"},
        {24, 100, "invalid combination"},                 /* group width not a multiple of 64 */
        {48, 7, "unused dimension 2 of 2 has size 7"},    /* shape[2] of a matrix */
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        if (lies[i].field == 80 && lies[i].value == 1)
            lies[i].value = down1_off;
        else if (lies[i].field == 80 && lies[i].value == 2)
            lies[i].value = down0_off + 4096;
        memcpy(b, good, len);
        if (lies[i].field == 10 || lies[i].field == 8) {
            b[ent + lies[i].field] = (uint8_t)lies[i].value;
            b[ent + lies[i].field + 1] = (uint8_t)(lies[i].value >> 8);
        } else if (lies[i].field == 0 || lies[i].field == 24) {
            for (int k = 0; k < 4; k++)
                b[ent + lies[i].field + k] = (uint8_t)(lies[i].value >> (8 * k));
        } else {
            put64(b + ent + lies[i].field, lies[i].value);
        }
        put64(b + 152, 0);
        {
            XXH3_state_t *st = XXH3_createState();
            XXH3_64bits_reset(st);
            XXH3_64bits_update(st, b + dir_off, 6 * 128);
            XXH3_64bits_update(st, b + strings_off, strings_size);
            put64(b + 152, XXH3_64bits_digest(st));
            XXH3_freeState(st);
        }
        rehash_header(b);
        spit(bad, b, len);
        expect_open_fails(bad, lies[i].want);
    }

    /* a header whose regions point outside the file */
    memcpy(b, good, len);
    put64(b + 64, len - 2); /* meta offset */
    rehash_header(b);
    spit(bad, b, len);
    expect_open_fails(bad, "metadata");
    memcpy(b, good, len);
    put64(b + 24, 1ull << 60); /* n_tensors */
    rehash_header(b);
    spit(bad, b, len);
    expect_open_fails(bad, "directory size");

    /* a tokenizer region of more than one zstd frame (here a skippable frame
     * after the real one): consistent checksums, and ZSTD_decompress alone
     * would return the right blob; refused on open */
    {
        uint8_t *grown = malloc(len + 8);
        memcpy(grown, good, len);
        const uint8_t skippable[8] = {0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0};
        memcpy(grown + len, skippable, 8);
        uint64_t tok_off = 0, tok_size = 0;
        for (int i = 0; i < 8; i++) {
            tok_off |= (uint64_t)good[80 + i] << (8 * i);
            tok_size |= (uint64_t)good[88 + i] << (8 * i);
        }
        REQUIRE(tok_off + tok_size == len); /* FORMAT.md §1: the tokenizer ends the file */
        put64(grown + 16, len + 8);
        put64(grown + 88, tok_size + 8);
        put64(grown + 168, XXH3_64bits(grown + tok_off, tok_size + 8));
        rehash_header(grown);
        spit(bad, grown, len + 8);
        expect_open_fails(bad, "not exactly one zstd frame");
        /* a lone skippable frame in place of the tokenizer, tok_raw_size 0: one frame of content size 0 */
        memcpy(grown, good, tok_off);
        memcpy(grown + tok_off, skippable, 8);
        put64(grown + 16, tok_off + 8);
        put64(grown + 88, 8);
        put64(grown + 96, 0);
        put64(grown + 168, XXH3_64bits(grown + tok_off, 8));
        rehash_header(grown);
        spit(bad, grown, tok_off + 8);
        expect_open_fails(bad, "not exactly one zstd frame");
        free(grown);
    }

    /* metadata of another format or major version, or without them; a later minor version opens */
    {
        static const struct {
            const char *format, *version, *want;
        } metas[] = {
            {"gguf", "1.0", "metadata \"format\" is \"gguf\", not \"moepack\""},
            {NULL, "1.0", "metadata \"format\" is missing or not a string, not \"moepack\""},
            {"moepack", "2.0", "metadata \"format_version\" is \"2.0\": this reader reads format 1.x"},
            {"moepack", NULL, "metadata \"format_version\" is missing or not a string"},
            {"moepack", "1.7", NULL},
        };
        char *good_meta = META;
        for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
            META = make_meta_as(metas[i].format, metas[i].version);
            make_container(bad);
            if (metas[i].want) {
                expect_open_fails(bad, metas[i].want);
            } else {
                mp_container *cc = NULL;
                CHECKF(mp_container_open(bad, &cc, &e) == MP_OK, "format_version %s: %s", metas[i].version, e.msg);
                mp_container_close(cc);
            }
            free(META);
        }
        META = good_meta;
    }

    /* not a file */
    expect_open_fails(dir, "is a folder, not a moepack container; convert it first");
    free(b);
    free(good);
    free(META);
    return mp_test_finish();
}
