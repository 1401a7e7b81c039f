/* container.c: reader and writer of the .moepack container (docs/FORMAT.md). */
#include "container.h"

#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>
#include <errno.h>
#include <unistd.h>

#include "model_desc_json.h"
#include "mp_array.h"
#include "mp_extent.h"
#include "mp_num.h"

/* ---- little-endian field access ------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* Header field offsets (docs/FORMAT.md, "Header"). */
enum {
    H_MAGIC = 0, H_VMAJOR = 8, H_VMINOR = 12, H_FILE_SIZE = 16, H_NTENSORS = 24, H_DIR_OFF = 32,
    H_DIR_SIZE = 40, H_STR_OFF = 48, H_STR_SIZE = 56, H_META_OFF = 64, H_META_SIZE = 72, H_TOK_OFF = 80,
    H_TOK_SIZE = 88, H_TOK_RAW = 96, H_SEC_OFF = 104, H_SEC_SIZE = 128, H_DIR_SUM = 152, H_META_SUM = 160,
    H_TOK_SUM = 168, H_HDR_SUM = 248,
};

/* Directory entry field offsets. */
enum {
    D_NAME_OFF = 0, D_NAME_LEN = 4, D_ROLE = 8, D_LAYOUT = 10, D_QUANT = 12, D_SECTION = 14, D_NDIM = 15,
    D_LAYER = 16, D_EXPERT = 20, D_GROUP = 24, D_FLAGS = 28, D_SHAPE = 32, D_PADDED = 56, D_DATA_OFF = 80,
    D_DATA_SIZE = 88, D_SCALE_OFF = 96, D_SCALE_SIZE = 104, D_CHECKSUM = 112,
};

/* Hard caps that keep a hostile directory from asking for absurd work. */
#define MAX_TENSORS (16u << 20)
#define MAX_META (256u << 20)
#define MAX_TOK_RAW (1u << 30)

const char *mp_layout_name(mp_layout l)
{
    switch (l) {
    case MP_LAYOUT_ROW_MAJOR: return "row_major";
    case MP_LAYOUT_HEADS: return "heads";
    case MP_LAYOUT_AMX_INT8: return "amx_int8";
    case MP_LAYOUT_AMX_BF16: return "amx_bf16";
    case MP_LAYOUT_GPU_INT4: return "gpu_int4";
    }
    return "unknown";
}

const char *mp_quant_name(mp_quant q)
{
    switch (q) {
    case MP_QUANT_F32: return "f32";
    case MP_QUANT_BF16: return "bf16";
    case MP_QUANT_F16: return "f16";
    case MP_QUANT_INT8: return "int8";
    case MP_QUANT_INT4_SYM: return "int4_sym";
    case MP_QUANT_INT4_ASYM: return "int4_asym";
    }
    return "unknown";
}

const char *mp_section_name(mp_section s)
{
    switch (s) {
    case MP_SECTION_HOST: return "host";
    case MP_SECTION_GPU: return "gpu";
    case MP_SECTION_CPU: return "cpu";
    default: return "unknown";
    }
}

/* metadata "format" must be "moepack" and "format_version" "1.x": a later
 * major version may change what the bytes mean, and this reader cannot know
 * how (FORMAT.md, versioning). */
static int check_format_version(const json_t *meta, const char *path, mp_error *err)
{
    const char *format = json_string_value(json_object_get(meta, "format"));
    if (!format || strcmp(format, "moepack") != 0)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "metadata \"format\" is %s%.40s%s, not \"moepack\"",
                       format ? "\"" : "", format ? format : "missing or not a string", format ? "\"" : "");
    const char *version = json_string_value(json_object_get(meta, "format_version"));
    if (!version || strncmp(version, "1.", 2) != 0)
        return mp_fail(err, MP_ERR_INPUT, path, NULL,
                       "metadata \"format_version\" is %s%.40s%s: this reader reads format 1.x (a newer moepack "
                       "wrote it?)",
                       version ? "\"" : "", version ? version : "missing or not a string", version ? "\"" : "");
    return MP_OK;
}

/* The only valid data/scale sizes for a tensor's layout, quant and shape: a
 * directory whose sizes disagree could make a kernel read out of bounds, so
 * the reader recomputes them rather than trusting the file. Also fills
 * `padded`. Returns false for combinations that do not exist. */
static bool expected_sizes(const mp_ctensor *t, uint64_t padded[3], uint64_t *data, uint64_t *scale)
{
    uint64_t n = t->shape[0], k = t->ndim >= 2 ? t->shape[1] : 1;
    padded[0] = padded[1] = padded[2] = 0;
    *scale = 0;
    for (uint32_t i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0 || t->shape[i] > (1ull << 40))
            return false;
    switch (t->layout) {
    case MP_LAYOUT_ROW_MAJOR:
    case MP_LAYOUT_HEADS: {
        uint64_t elem = t->quant == MP_QUANT_F32 ? 4 : (t->quant == MP_QUANT_BF16 || t->quant == MP_QUANT_F16) ? 2 : 0;
        if (!elem || t->group_width != 0)
            return false;
        if (t->layout == MP_LAYOUT_ROW_MAJOR ? (t->ndim < 1 || t->ndim > 2) : t->ndim != 3)
            return false;
        uint64_t count = 1;
        for (uint32_t i = 0; i < t->ndim; i++) {
            padded[i] = t->shape[i];
            if (!mp_mul_u64(count, t->shape[i], &count))
                return false;
        }
        return mp_mul_u64(count, elem, data);
    }
    case MP_LAYOUT_AMX_INT8:
    case MP_LAYOUT_AMX_BF16: {
        bool i8 = t->layout == MP_LAYOUT_AMX_INT8;
        uint64_t kstep = i8 ? 64 : 32, elem = i8 ? 1 : 2;
        if (t->ndim != 2 || t->quant != (i8 ? MP_QUANT_INT8 : MP_QUANT_BF16))
            return false;
        uint64_t kg = t->group_width;
        if (kg == 0 || kg % kstep != 0)
            return false;
        uint64_t groups = (k + kg - 1) / kg;
        uint64_t np = mp_align_up(n, 16);
        uint64_t kp = (groups - 1) * kg + mp_align_up(k - (groups - 1) * kg, kstep);
        padded[0] = np;
        padded[1] = kp;
        uint64_t cells;
        if (!mp_mul_u64(np, kp, &cells) || !mp_mul_u64(cells, elem, data))
            return false;
        if (i8)
            *scale = groups * np * 8; /* f32 scale + int32 wsum per (group, row) */
        return true;
    }
    case MP_LAYOUT_GPU_INT4: {
        if (t->ndim != 2 || (t->quant != MP_QUANT_INT4_SYM && t->quant != MP_QUANT_INT4_ASYM) || t->group_width != 128)
            return false;
        uint64_t np = mp_align_up(n, 16), kp = mp_align_up(k, 128);
        padded[0] = np;
        padded[1] = kp;
        if (!mp_mul_u64(np, kp / 2, data))
            return false;
        *scale = np * (kp / 128) * 2 * (t->quant == MP_QUANT_INT4_ASYM ? 2 : 1);
        return true;
    }
    }
    return false;
}

/* ---- reading -------------------------------------------------------------- */

#define CONVERT_FIRST "convert it first: moepack convert SRC -o OUT.moepack"

/* Not a container: a checkpoint given where a container is expected is
 * named as such, with the command that makes a container of it. */
static int not_a_container(const mp_mapped_file *f, mp_error *err)
{
    const uint8_t *p = f->data;
    size_t n = strlen(f->path);
    if (n > 8 && strcmp(f->path + n - 8, ".partial") == 0)
        return mp_fail(err, MP_ERR_INPUT, f->path, NULL,
                       "an unfinished conversion, not a moepack container; moepack convert SRC -o %.*s --resume "
                       "continues it",
                       (int)(n - 8), f->path);
    if (f->size >= 4 && memcmp(p, "GGUF", 4) == 0)
        return mp_fail(err, MP_ERR_INPUT, f->path, NULL, "a GGUF file, not a moepack container; " CONVERT_FIRST);
    if (f->size >= 9 && rd64(p) > 0 && rd64(p) <= f->size - 8 && p[8] == '{')
        return mp_fail(err, MP_ERR_INPUT, f->path, NULL,
                       "a safetensors file, not a moepack container; " CONVERT_FIRST " (SRC: the model folder)");
    if (f->size < MP_CONTAINER_HEADER_REGION)
        return mp_fail(err, MP_ERR_INPUT, f->path, NULL, "file is %llu bytes, too short for a moepack container",
                       (unsigned long long)f->size);
    return mp_fail(err, MP_ERR_INPUT, f->path, NULL, "not a moepack container (bad magic)");
}

static int parse_header(const mp_mapped_file *f, mp_container_header *h, mp_error *err)
{
    const char *path = f->path;
    const uint8_t *p = f->data;
    if (f->size < MP_CONTAINER_HEADER_REGION || memcmp(p + H_MAGIC, MP_CONTAINER_MAGIC, 8) != 0)
        return not_a_container(f, err);
    h->version_major = rd32(p + H_VMAJOR);
    h->version_minor = rd32(p + H_VMINOR);
    if (h->version_major != MP_CONTAINER_VERSION_MAJOR)
        return mp_fail(err, MP_ERR_INPUT, path, NULL,
                       "container format version %u.%u is not supported by this moepack (it reads %u.x)%s",
                       h->version_major, h->version_minor, MP_CONTAINER_VERSION_MAJOR,
                       h->version_major > MP_CONTAINER_VERSION_MAJOR ? "; upgrade moepack or reconvert" : "");
    if (XXH3_64bits(p, H_HDR_SUM) != rd64(p + H_HDR_SUM))
        return mp_fail(err, MP_ERR_CHECK, path, NULL, "header checksum mismatch (the file is corrupt)");
    h->file_size = rd64(p + H_FILE_SIZE);
    if (h->file_size != f->size)
        return mp_fail(err, MP_ERR_INPUT, path, NULL,
                       "file is %llu bytes but its header says %llu (truncated or appended to)",
                       (unsigned long long)f->size, (unsigned long long)h->file_size);
    h->n_tensors = rd64(p + H_NTENSORS);
    h->dir_offset = rd64(p + H_DIR_OFF);
    h->dir_size = rd64(p + H_DIR_SIZE);
    h->strings_offset = rd64(p + H_STR_OFF);
    h->strings_size = rd64(p + H_STR_SIZE);
    h->meta_offset = rd64(p + H_META_OFF);
    h->meta_size = rd64(p + H_META_SIZE);
    h->tok_offset = rd64(p + H_TOK_OFF);
    h->tok_size = rd64(p + H_TOK_SIZE);
    h->tok_raw_size = rd64(p + H_TOK_RAW);
    for (int s = 0; s < MP_SECTION_COUNT; s++) {
        h->section_offset[s] = rd64(p + H_SEC_OFF + 8 * s);
        h->section_size[s] = rd64(p + H_SEC_SIZE + 8 * s);
    }
    h->dir_checksum = rd64(p + H_DIR_SUM);
    h->meta_checksum = rd64(p + H_META_SUM);
    h->tok_checksum = rd64(p + H_TOK_SUM);

    uint64_t want_dir;
    if (h->n_tensors > MAX_TENSORS || !mp_mul_u64(h->n_tensors, MP_CONTAINER_DIR_ENTRY_SIZE, &want_dir) ||
        want_dir != h->dir_size)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "directory size does not match its %llu tensors",
                       (unsigned long long)h->n_tensors);
    struct {
        const char *what;
        uint64_t off, size;
    } regions[] = {
        {"directory", h->dir_offset, h->dir_size},
        {"string table", h->strings_offset, h->strings_size},
        {"metadata", h->meta_offset, h->meta_size},
        {"tokenizer", h->tok_offset, h->tok_size},
        {"host section", h->section_offset[0], h->section_size[0]},
        {"gpu section", h->section_offset[1], h->section_size[1]},
        {"cpu section", h->section_offset[2], h->section_size[2]},
    };
    for (size_t i = 0; i < sizeof regions / sizeof regions[0]; i++)
        if (regions[i].off < MP_CONTAINER_HEADER_REGION || !mp_range_ok(regions[i].off, regions[i].size, f->size))
            return mp_fail(err, MP_ERR_INPUT, path, NULL, "%s [%llu, +%llu) lies outside the file", regions[i].what,
                           (unsigned long long)regions[i].off, (unsigned long long)regions[i].size);
    if (h->meta_size == 0 || h->meta_size > MAX_META)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "metadata size %llu is out of range",
                       (unsigned long long)h->meta_size);
    if (h->tok_raw_size > MAX_TOK_RAW)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "tokenizer size %llu is out of range",
                       (unsigned long long)h->tok_raw_size);
    return MP_OK;
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* docs/FORMAT.md: names are unique, so a lookup by name is unambiguous. */
static int check_unique_names(const mp_container *c, mp_error *err)
{
    uint64_t n = c->hdr.n_tensors;
    if (n < 2)
        return MP_OK;
    const char **names = malloc(n * sizeof *names);
    if (!names)
        return mp_fail(err, MP_ERR_INPUT, c->file.path, NULL, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        names[i] = c->tensors[i].name;
    qsort(names, n, sizeof *names, cmp_name_ptr);
    int rc = MP_OK;
    for (uint64_t i = 1; i < n && rc == MP_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = mp_fail(err, MP_ERR_INPUT, c->file.path, names[i], "two directory entries have this name");
    free(names);
    return rc;
}

/* docs/FORMAT.md §1: no two tensors share a byte. A file whose entries point
 * at the same bytes would pass every per-entry check and every checksum, and
 * then one tensor would be read as another's quantized data or scales. */
static int check_no_overlap(const mp_container *c, mp_error *err)
{
    uint64_t n = c->hdr.n_tensors, k = 0;
    if (n < 2)
        return MP_OK;
    mp_extent *x = malloc(2 * n * sizeof *x);
    if (!x)
        return mp_fail(err, MP_ERR_INPUT, c->file.path, NULL, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        const mp_ctensor *t = &c->tensors[i];
        if (t->data_size)
            x[k++] = (mp_extent){t->data_offset, t->data_offset + t->data_size, i};
        if (t->scale_size)
            x[k++] = (mp_extent){t->scale_offset, t->scale_offset + t->scale_size, i};
    }
    size_t a, b;
    bool overlap = mp_extents_overlap(x, k, &a, &b);
    free(x);
    if (overlap)
        return mp_fail(err, MP_ERR_INPUT, c->file.path, c->tensors[b].name, "its bytes overlap those of tensor %s",
                       c->tensors[a].name);
    return MP_OK;
}

static int parse_directory(mp_container *c, mp_error *err)
{
    const char *path = c->file.path;
    const mp_container_header *h = &c->hdr;
    const uint8_t *dir = c->file.data + h->dir_offset;
    const uint8_t *str = c->file.data + h->strings_offset;

    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, dir, h->dir_size);
    XXH3_64bits_update(st, str, h->strings_size);
    uint64_t sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (sum != h->dir_checksum)
        return mp_fail(err, MP_ERR_CHECK, path, NULL, "directory checksum mismatch (the file is corrupt)");

    c->strings = malloc(h->strings_size + 1);
    c->tensors = calloc(h->n_tensors ? h->n_tensors : 1, sizeof *c->tensors);
    if (!c->strings || !c->tensors)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory for %llu tensors", (unsigned long long)h->n_tensors);
    memcpy(c->strings, str, h->strings_size);
    c->strings[h->strings_size] = '\0';

    for (uint64_t i = 0; i < h->n_tensors; i++) {
        const uint8_t *e = dir + i * MP_CONTAINER_DIR_ENTRY_SIZE;
        mp_ctensor *t = &c->tensors[i];
        uint32_t noff = rd32(e + D_NAME_OFF), nlen = rd32(e + D_NAME_LEN);
        if (!mp_range_ok(noff, (uint64_t)nlen + 1, h->strings_size) || c->strings[noff + nlen] != '\0' ||
            strlen(c->strings + noff) != nlen || nlen == 0)
            return mp_fail(err, MP_ERR_INPUT, path, NULL, "tensor #%llu has a bad name reference", (unsigned long long)i);
        t->name = c->strings + noff;
        t->role = rd16(e + D_ROLE);
        t->layout = rd16(e + D_LAYOUT);
        t->quant = rd16(e + D_QUANT);
        t->section = e[D_SECTION];
        t->ndim = e[D_NDIM];
        t->layer = (int32_t)rd32(e + D_LAYER);
        t->expert = (int32_t)rd32(e + D_EXPERT);
        t->group_width = rd32(e + D_GROUP);
        for (int d = 0; d < 3; d++) {
            t->shape[d] = rd64(e + D_SHAPE + 8 * d);
            t->padded[d] = rd64(e + D_PADDED + 8 * d);
        }
        t->data_offset = rd64(e + D_DATA_OFF);
        t->data_size = rd64(e + D_DATA_SIZE);
        t->scale_offset = rd64(e + D_SCALE_OFF);
        t->scale_size = rd64(e + D_SCALE_SIZE);
        t->checksum = rd64(e + D_CHECKSUM);

        if (t->role <= MP_ROLE_UNKNOWN || t->role >= MP_ROLE_COUNT)
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "unknown role %u", (unsigned)t->role);
        /* Source-only roles: kv_b becomes W_UK/W_UV, so no kernel reads one. */
        if (t->role == MP_ROLE_KV_B || t->role == MP_ROLE_K_B || t->role == MP_ROLE_V_B)
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "role %s (%u) is never stored in a container",
                           mp_role_name(t->role), (unsigned)t->role);
        if (t->section >= MP_SECTION_COUNT)
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "unknown section %u", (unsigned)t->section);
        if (t->ndim < 1 || t->ndim > 3)
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "bad number of dimensions %u", t->ndim);
        for (uint32_t d = t->ndim; d < 3; d++)
            if (t->shape[d] != 0)
                return mp_fail(err, MP_ERR_INPUT, path, t->name, "unused dimension %u of %u has size %llu, not 0", d,
                               t->ndim, (unsigned long long)t->shape[d]);
        if (t->layer < -1 || t->layer > 100000 || t->expert < -1 || t->expert > 1000000)
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "layer %d / expert %d out of range", t->layer, t->expert);
        uint64_t padded[3], want_data, want_scale;
        if (!expected_sizes(t, padded, &want_data, &want_scale))
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "invalid combination of layout %s (%u), quant %s (%u), shape",
                           mp_layout_name(t->layout), (unsigned)t->layout, mp_quant_name(t->quant), (unsigned)t->quant);
        if (want_data != t->data_size || want_scale != t->scale_size || memcmp(padded, t->padded, sizeof padded) != 0)
            return mp_fail(err, MP_ERR_INPUT, path, t->name,
                           "stored sizes (data %llu, scale %llu) do not match its layout and shape (data %llu, scale %llu)",
                           (unsigned long long)t->data_size, (unsigned long long)t->scale_size,
                           (unsigned long long)want_data, (unsigned long long)want_scale);
        uint64_t so = h->section_offset[t->section], ss = h->section_size[t->section];
        if (t->data_offset < so || !mp_range_ok(t->data_offset - so, t->data_size, ss))
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "data lies outside its %s section",
                           mp_section_name(t->section));
        if (t->scale_size && (t->scale_offset < so || !mp_range_ok(t->scale_offset - so, t->scale_size, ss)))
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "scales lie outside its %s section",
                           mp_section_name(t->section));
        /* Kernels use aligned vector loads (and AMX tile loads) on these. */
        uint64_t align = t->section == MP_SECTION_CPU ? MP_ALIGN_TENSOR_CPU : 64;
        if (t->data_offset % align || (t->scale_size && t->scale_offset % MP_ALIGN_SCALE))
            return mp_fail(err, MP_ERR_INPUT, path, t->name, "misaligned data or scale offset");
        t->data = c->file.data + t->data_offset;
        t->scale = t->scale_size ? c->file.data + t->scale_offset : NULL;
    }
    int rc = check_unique_names(c, err);
    return rc ? rc : check_no_overlap(c, err);
}

/* docs/FORMAT.md §6: exactly one frame that records its size. ZSTD_decompress
 * alone would also take skippable or further frames after it. Walking the
 * frame's block headers is cheap, so open checks it with the other regions. */
static int check_tokenizer_frame(const mp_container *c, mp_error *err)
{
    const uint8_t *z = c->file.data + c->hdr.tok_offset;
    size_t zlen = (size_t)c->hdr.tok_size;
    unsigned long long content = ZSTD_getFrameContentSize(z, zlen);
    size_t frame = ZSTD_findFrameCompressedSize(z, zlen);
    /* a lone skippable frame would pass as one frame of content size 0 */
    bool data_frame = zlen >= 4 && rd32(z) == ZSTD_MAGICNUMBER;
    if (!data_frame || content != (unsigned long long)c->hdr.tok_raw_size || ZSTD_isError(frame) || frame != zlen)
        return mp_fail(err, MP_ERR_INPUT, c->file.path, NULL,
                       "the tokenizer region is not exactly one zstd frame of %llu bytes (tok_raw_size)",
                       (unsigned long long)c->hdr.tok_raw_size);
    return MP_OK;
}

int mp_container_open(const char *path, mp_container **out, mp_error *err)
{
    *out = NULL;
    mp_container *c = calloc(1, sizeof *c);
    if (!c)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    int rc = mp_is_directory(path) ? mp_fail(err, MP_ERR_INPUT, path, NULL,
                                             "is a folder, not a moepack container; " CONVERT_FIRST
                                             " (SRC: the model folder)")
                                   : mp_map_file(path, &c->file, err);
    if (!rc)
        rc = parse_header(&c->file, &c->hdr, err);
    if (!rc)
        rc = parse_directory(c, err);
    if (!rc) {
        const uint8_t *m = c->file.data + c->hdr.meta_offset;
        if (XXH3_64bits(m, c->hdr.meta_size) != c->hdr.meta_checksum)
            rc = mp_fail(err, MP_ERR_CHECK, path, NULL, "metadata checksum mismatch (the file is corrupt)");
        else if (XXH3_64bits(c->file.data + c->hdr.tok_offset, c->hdr.tok_size) != c->hdr.tok_checksum)
            rc = mp_fail(err, MP_ERR_CHECK, path, NULL, "tokenizer checksum mismatch (the file is corrupt)");
        else
            rc = check_tokenizer_frame(c, err);
    }
    if (!rc) {
        c->meta_json = malloc(c->hdr.meta_size + 1);
        if (!c->meta_json) {
            rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
        } else {
            memcpy(c->meta_json, c->file.data + c->hdr.meta_offset, c->hdr.meta_size);
            c->meta_json[c->hdr.meta_size] = '\0';
            json_error_t je;
            c->meta = json_loadb(c->meta_json, c->hdr.meta_size, JSON_REJECT_DUPLICATES, &je);
            if (!c->meta || !json_is_object((json_t *)c->meta))
                rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "metadata is not a JSON object: %s", je.text);
            else if ((rc = check_format_version(c->meta, path, err)) == MP_OK)
                rc = mp_model_desc_from_json(json_object_get(c->meta, "model"), path, &c->desc, err);
        }
    }
    if (rc) {
        mp_container_close(c);
        return rc;
    }
    *out = c;
    return MP_OK;
}

void mp_container_close(mp_container *c)
{
    if (!c)
        return;
    if (c->meta)
        json_decref((json_t *)c->meta);
    free(c->meta_json);
    free(c->tensors);
    free(c->strings);
    mp_unmap_file(&c->file);
    free(c);
}

const mp_ctensor *mp_container_find(const mp_container *c, mp_role role, int32_t layer, int32_t expert)
{
    for (uint64_t i = 0; i < c->hdr.n_tensors; i++) {
        const mp_ctensor *t = &c->tensors[i];
        if (t->role == role && t->layer == layer && t->expert == expert)
            return t;
    }
    return NULL;
}

const mp_ctensor *mp_container_find_name(const mp_container *c, const char *name)
{
    for (uint64_t i = 0; i < c->hdr.n_tensors; i++)
        if (!strcmp(c->tensors[i].name, name))
            return &c->tensors[i];
    return NULL;
}

static uint64_t tensor_checksum(const mp_ctensor *t)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, t->data, t->data_size);
    if (t->scale_size)
        XXH3_64bits_update(st, t->scale, t->scale_size);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

int mp_container_verify_tensor(const mp_container *c, const mp_ctensor *t, mp_error *err)
{
    if (tensor_checksum(t) != t->checksum)
        return mp_fail(err, MP_ERR_CHECK, c->file.path, t->name, "checksum mismatch: the tensor data was modified or corrupted");
    return MP_OK;
}

int mp_container_verify(const mp_container *c, int threads, mp_error *err)
{
    int64_t n = (int64_t)c->hdr.n_tensors;
    int64_t first_bad = n;
    if (threads <= 0)
        threads = omp_get_max_threads();
    /* Big tensors first would balance better, but directory order keeps the
     * "first bad tensor" well defined; dynamic scheduling absorbs the skew. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(min : first_bad)
    for (int64_t i = 0; i < n; i++)
        if (tensor_checksum(&c->tensors[i]) != c->tensors[i].checksum && i < first_bad)
            first_bad = i;
    if (first_bad < n)
        return mp_container_verify_tensor(c, &c->tensors[first_bad], err);
    return MP_OK;
}

int mp_container_tokenizer_blob(const mp_container *c, uint8_t **blob, size_t *len, mp_error *err)
{
    *blob = NULL;
    *len = 0;
    size_t raw = (size_t)c->hdr.tok_raw_size;
    uint8_t *buf = malloc(raw ? raw : 1);
    if (!buf)
        return mp_fail(err, MP_ERR_INPUT, c->file.path, NULL, "out of memory for the tokenizer");
    size_t got = ZSTD_decompress(buf, raw, c->file.data + c->hdr.tok_offset, (size_t)c->hdr.tok_size);
    if (ZSTD_isError(got) || got != raw) {
        free(buf);
        return mp_fail(err, MP_ERR_INPUT, c->file.path, NULL, "tokenizer blob does not decompress: %s",
                       ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong size");
    }
    *blob = buf;
    *len = raw;
    return MP_OK;
}

/* ---- writing -------------------------------------------------------------- */

int mp_container_plan_add(mp_container_plan *p, const mp_ctensor *spec, mp_error *err)
{
    mp_ctensor *grown = mp_array_grow(p->tensors, p->n_tensors, &p->cap, sizeof *grown, 256);
    if (!grown)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory planning the container");
    p->tensors = grown;
    mp_ctensor *t = &p->tensors[p->n_tensors];
    *t = *spec;
    t->name = strdup(spec->name);
    if (!t->name)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory planning the container");
    uint64_t padded[3], data, scale;
    if (!expected_sizes(t, padded, &data, &scale)) {
        mp_fail(err, MP_ERR_INPUT, NULL, spec->name, "invalid layout/quant/shape combination");
        free((char *)t->name);
        return MP_ERR_INPUT;
    }
    memcpy(t->padded, padded, sizeof padded);
    t->data_size = data;
    t->scale_size = scale;
    t->data = t->scale = NULL;
    p->n_tensors++;
    return MP_OK;
}

int mp_container_plan_layout(mp_container_plan *p, mp_error *err)
{
    uint64_t strings = 0;
    for (size_t i = 0; i < p->n_tensors; i++)
        strings += strlen(p->tensors[i].name) + 1;
    p->dir_offset = MP_CONTAINER_HEADER_REGION;
    p->strings_offset = p->dir_offset + (uint64_t)p->n_tensors * MP_CONTAINER_DIR_ENTRY_SIZE;
    p->strings_size = strings;
    uint64_t pos = p->strings_offset + strings;
    static const uint64_t sec_align[MP_SECTION_COUNT] = {MP_ALIGN_SECTION_HOST, MP_ALIGN_SECTION_GPU, MP_ALIGN_SECTION_CPU};
    static const uint64_t t_align[MP_SECTION_COUNT] = {MP_ALIGN_TENSOR_HOST, MP_ALIGN_TENSOR_GPU, MP_ALIGN_TENSOR_CPU};
    for (int s = 0; s < MP_SECTION_COUNT; s++) {
        pos = mp_align_up(pos, sec_align[s]);
        p->section_offset[s] = pos;
        int32_t last_layer = INT32_MIN;
        for (size_t i = 0; i < p->n_tensors; i++) {
            mp_ctensor *t = &p->tensors[i];
            if ((int)t->section != s)
                continue;
            uint64_t a = t_align[s];
            if (s == MP_SECTION_CPU && t->layer != last_layer)
                a = MP_ALIGN_CPU_LAYER; /* each layer's experts start on a huge page */
            last_layer = t->layer;
            pos = mp_align_up(pos, a);
            t->data_offset = pos;
            if (!mp_add_u64(pos, t->data_size, &pos))
                return mp_fail(err, MP_ERR_INPUT, NULL, t->name, "container would exceed 2^64 bytes");
            if (t->scale_size) {
                pos = mp_align_up(pos, MP_ALIGN_SCALE);
                t->scale_offset = pos;
                pos += t->scale_size;
            } else {
                t->scale_offset = 0;
            }
        }
        /* A section ends aligned so the next one (and the GPU upload) is whole pages. */
        pos = mp_align_up(pos, sec_align[s]);
        p->section_size[s] = pos - p->section_offset[s];
    }
    p->data_end = pos;
    return MP_OK;
}

void mp_container_plan_free(mp_container_plan *p)
{
    for (size_t i = 0; i < p->n_tensors; i++)
        free((char *)p->tensors[i].name);
    free(p->tensors);
    memset(p, 0, sizeof *p);
}

int mp_container_write_tail(mp_outfile *out, const mp_container_plan *p, const char *meta_json,
                            const uint8_t *tok_blob, size_t tok_len, mp_error *err)
{
    int rc;
    size_t meta_len = strlen(meta_json);
    uint64_t meta_off = mp_align_up(p->data_end, 8);
    if ((rc = mp_outfile_pwrite(out, meta_json, meta_len, meta_off, err)))
        return rc;

    /* Level 19: the tokenizer is small and written once; reading is what matters. */
    size_t bound = ZSTD_compressBound(tok_len);
    uint8_t *ztok = malloc(bound ? bound : 1);
    if (!ztok)
        return mp_fail(err, MP_ERR_INPUT, out->final_path, NULL, "out of memory compressing the tokenizer");
    size_t zlen = ZSTD_compress(ztok, bound, tok_blob, tok_len, 19);
    if (ZSTD_isError(zlen)) {
        free(ztok);
        return mp_fail(err, MP_ERR_INPUT, out->final_path, NULL, "zstd: %s", ZSTD_getErrorName(zlen));
    }
    uint64_t tok_off = mp_align_up(meta_off + meta_len, 8);
    rc = mp_outfile_pwrite(out, ztok, zlen, tok_off, err);
    uint64_t tok_sum = XXH3_64bits(ztok, zlen);
    free(ztok);
    if (rc)
        return rc;
    uint64_t file_size = tok_off + zlen;

    /* directory + strings */
    size_t dir_bytes = p->n_tensors * MP_CONTAINER_DIR_ENTRY_SIZE;
    uint8_t *dir = calloc(1, dir_bytes + p->strings_size + 1);
    if (!dir)
        return mp_fail(err, MP_ERR_INPUT, out->final_path, NULL, "out of memory writing the directory");
    char *str = (char *)dir + dir_bytes;
    uint64_t soff = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const mp_ctensor *t = &p->tensors[i];
        uint8_t *e = dir + i * MP_CONTAINER_DIR_ENTRY_SIZE;
        size_t nlen = strlen(t->name);
        memcpy(str + soff, t->name, nlen + 1);
        wr32(e + D_NAME_OFF, (uint32_t)soff);
        wr32(e + D_NAME_LEN, (uint32_t)nlen);
        soff += nlen + 1;
        wr16(e + D_ROLE, (uint16_t)t->role);
        wr16(e + D_LAYOUT, (uint16_t)t->layout);
        wr16(e + D_QUANT, (uint16_t)t->quant);
        e[D_SECTION] = (uint8_t)t->section;
        e[D_NDIM] = (uint8_t)t->ndim;
        wr32(e + D_LAYER, (uint32_t)t->layer);
        wr32(e + D_EXPERT, (uint32_t)t->expert);
        wr32(e + D_GROUP, t->group_width);
        wr32(e + D_FLAGS, 0);
        for (int d = 0; d < 3; d++) {
            wr64(e + D_SHAPE + 8 * d, t->shape[d]);
            wr64(e + D_PADDED + 8 * d, t->padded[d]);
        }
        wr64(e + D_DATA_OFF, t->data_offset);
        wr64(e + D_DATA_SIZE, t->data_size);
        wr64(e + D_SCALE_OFF, t->scale_offset);
        wr64(e + D_SCALE_SIZE, t->scale_size);
        wr64(e + D_CHECKSUM, t->checksum);
    }
    uint64_t dir_sum;
    {
        XXH3_state_t *st = XXH3_createState();
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, dir, dir_bytes);
        XXH3_64bits_update(st, str, p->strings_size);
        dir_sum = XXH3_64bits_digest(st);
        XXH3_freeState(st);
    }
    rc = mp_outfile_pwrite(out, dir, dir_bytes + p->strings_size, p->dir_offset, err);
    free(dir);
    if (rc)
        return rc;

    /* The header goes last: until it is written the file has no valid magic. */
    uint8_t hdr[MP_CONTAINER_HEADER_REGION];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr + H_MAGIC, MP_CONTAINER_MAGIC, 8);
    wr32(hdr + H_VMAJOR, MP_CONTAINER_VERSION_MAJOR);
    wr32(hdr + H_VMINOR, MP_CONTAINER_VERSION_MINOR);
    wr64(hdr + H_FILE_SIZE, file_size);
    wr64(hdr + H_NTENSORS, p->n_tensors);
    wr64(hdr + H_DIR_OFF, p->dir_offset);
    wr64(hdr + H_DIR_SIZE, dir_bytes);
    wr64(hdr + H_STR_OFF, p->strings_offset);
    wr64(hdr + H_STR_SIZE, p->strings_size);
    wr64(hdr + H_META_OFF, meta_off);
    wr64(hdr + H_META_SIZE, meta_len);
    wr64(hdr + H_TOK_OFF, tok_off);
    wr64(hdr + H_TOK_SIZE, zlen);
    wr64(hdr + H_TOK_RAW, tok_len);
    for (int s = 0; s < MP_SECTION_COUNT; s++) {
        wr64(hdr + H_SEC_OFF + 8 * s, p->section_offset[s]);
        wr64(hdr + H_SEC_SIZE + 8 * s, p->section_size[s]);
    }
    wr64(hdr + H_DIR_SUM, dir_sum);
    wr64(hdr + H_META_SUM, XXH3_64bits(meta_json, meta_len));
    wr64(hdr + H_TOK_SUM, tok_sum);
    wr64(hdr + H_HDR_SUM, XXH3_64bits(hdr, H_HDR_SUM));
    if ((rc = mp_outfile_pwrite(out, hdr, sizeof hdr, 0, err)))
        return rc;
    /* A resumed file may be longer than the finished one (an old tail). */
    if (ftruncate(out->fd, (off_t)file_size) != 0)
        return mp_fail_errno(err, out->partial_path, errno, "cannot truncate");
    out->size = file_size;
    return MP_OK;
}
