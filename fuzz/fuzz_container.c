/* fuzz_container: opening a .moepack container (formats/container.h):
 * mp_container_open, mp_container_verify, the tokenizer blob and its
 * deserialization (formats/container_tokenizer.h, tokenizer.h).
 *
 * Input: a container. Its checksums would stop almost every mutation at the
 * first check, so before writing the file the harness re-seals a copy as
 * docs/FORMAT.md defines: file size, directory, metadata and tokenizer
 * checksums, each tensor's data checksum (unless bit 0 of byte 4095, in the
 * header region's unused padding, is set, so that the mismatch path stays
 * reachable) and finally the header checksum, wherever the (hostile) offsets
 * the header holds lie inside the input. The checksum-mismatch paths are
 * covered by tests/test_container.c. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "container.h"
#include "container_tokenizer.h"
#include "harness_tok.h"
#include "harness_util.h"

/* docs/FORMAT.md, "Header" and "Directory" */
enum {
    H_FILE_SIZE = 16, H_NTENSORS = 24, H_DIR_OFF = 32, H_DIR_SIZE = 40, H_STR_OFF = 48, H_STR_SIZE = 56,
    H_META_OFF = 64, H_META_SIZE = 72, H_TOK_OFF = 80, H_TOK_SIZE = 88, H_DIR_SUM = 152, H_META_SUM = 160,
    H_TOK_SUM = 168, H_HDR_SUM = 248,
    D_DATA_OFF = 80, D_DATA_SIZE = 88, D_SCALE_OFF = 96, D_SCALE_SIZE = 104, D_CHECKSUM = 112,
};

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void reseal(uint8_t *f, size_t size)
{
    if (size < MP_CONTAINER_HEADER_REGION)
        return;
    wr64(f + H_FILE_SIZE, size);
    uint64_t n = rd64(f + H_NTENSORS), doff = rd64(f + H_DIR_OFF), dsize = rd64(f + H_DIR_SIZE);
    uint64_t soff = rd64(f + H_STR_OFF), ssize = rd64(f + H_STR_SIZE);
    bool dir_ok = mp_range_ok(doff, dsize, size) && mp_range_ok(soff, ssize, size);
    if (dir_ok && !(f[MP_CONTAINER_HEADER_REGION - 1] & 1) && n <= dsize / MP_CONTAINER_DIR_ENTRY_SIZE) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t *e = f + doff + i * MP_CONTAINER_DIR_ENTRY_SIZE;
            uint64_t o = rd64(e + D_DATA_OFF), s = rd64(e + D_DATA_SIZE);
            uint64_t so = rd64(e + D_SCALE_OFF), ss = rd64(e + D_SCALE_SIZE);
            if (!mp_range_ok(o, s, size) || (ss && !mp_range_ok(so, ss, size)))
                continue;
            XXH3_state_t *st = XXH3_createState();
            XXH3_64bits_reset(st);
            XXH3_64bits_update(st, f + o, s);
            if (ss)
                XXH3_64bits_update(st, f + so, ss);
            wr64(e + D_CHECKSUM, XXH3_64bits_digest(st));
            XXH3_freeState(st);
        }
    }
    if (dir_ok) {
        XXH3_state_t *st = XXH3_createState();
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, f + doff, dsize);
        XXH3_64bits_update(st, f + soff, ssize);
        wr64(f + H_DIR_SUM, XXH3_64bits_digest(st));
        XXH3_freeState(st);
    }
    uint64_t moff = rd64(f + H_META_OFF), msize = rd64(f + H_META_SIZE);
    if (mp_range_ok(moff, msize, size))
        wr64(f + H_META_SUM, XXH3_64bits(f + moff, msize));
    uint64_t toff = rd64(f + H_TOK_OFF), tsize = rd64(f + H_TOK_SIZE);
    if (mp_range_ok(toff, tsize, size))
        wr64(f + H_TOK_SUM, XXH3_64bits(f + toff, tsize));
    wr64(f + H_HDR_SUM, XXH3_64bits(f, H_HDR_SUM));
}

static void exercise(const mp_container *c)
{
    mp_error err = {0};
    int rc = mp_container_verify(c, 1, &err);
    if (rc)
        mp_fuzz_check_error(rc, &err, MP_ERR_CHECK);
    for (uint64_t i = 0; i < c->hdr.n_tensors; i++) {
        const mp_ctensor *t = &c->tensors[i];
        if (mp_container_find_name(c, t->name) != t) /* names are unique */
            mp_fuzz_fail("tensor %llu '%s' is not found by its name", (unsigned long long)i, t->name);
        if (!mp_container_find(c, t->role, t->layer, t->expert))
            mp_fuzz_fail("tensor '%s' is not found by role", t->name);
        if (!mp_range_ok(t->data_offset, t->data_size, c->file.size) ||
            (t->scale_size && !mp_range_ok(t->scale_offset, t->scale_size, c->file.size)))
            mp_fuzz_fail("tensor '%s' lies outside the file", t->name);
        (void)mp_layout_name(t->layout);
        (void)mp_quant_name(t->quant);
        (void)mp_section_name(t->section);
    }
    if (mp_model_desc_validate(&c->desc, c->file.path, &err) != MP_OK)
        mp_fuzz_fail("an opened container has an invalid description: %s", err.msg);

    uint8_t *blob = NULL;
    size_t len = 0;
    rc = mp_container_tokenizer_blob(c, &blob, &len, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        return;
    }
    mp_tokenizer *tok = NULL;
    rc = mp_tokenizer_deserialize(blob, len, c->file.path, &tok, &err);
    free(blob);
    mp_fuzz_check_tokenizer_load(rc, &err, tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    reseal(copy, size);
    mp_fuzz_clear();
    const char *path = mp_fuzz_write("x.moepack", copy, size);
    free(copy);
    mp_container *c = NULL;
    mp_error err = {0};
    int rc = mp_container_open(path, &c, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_CHECK); /* a checksum that does not match is a failed check */
        if (c)
            mp_fuzz_fail("a failed open returned a container");
        return 0;
    }
    exercise(c);
    mp_container_close(c);
    return 0;
}
