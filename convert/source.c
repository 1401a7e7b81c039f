#include "source.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "gguf_quants.h"
#include "model_desc_gguf.h"
#include "mp_array.h"
#include "mp_file.h"
#include "mp_num.h"

const char *mp_source_kind_name(mp_source_kind k)
{
    return k == MP_SOURCE_GGUF ? "gguf" : k == MP_SOURCE_SAFETENSORS ? "safetensors" : "unknown";
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static int add_tensor(mp_source *s, const mp_src_tensor *t, size_t *cap, mp_error *err)
{
    mp_src_tensor *grown = mp_array_grow(s->tensors, s->n_tensors, cap, sizeof *grown, 256);
    if (!grown)
        return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
    s->tensors = grown;
    s->tensors[s->n_tensors++] = *t;
    return MP_OK;
}

static int add_unknown(mp_source *s, const char *name, const char *file, size_t *cap, mp_error *err)
{
    mp_src_unknown *grown = mp_array_grow(s->unknown, s->n_unknown, cap, sizeof *grown, 16);
    if (!grown)
        return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
    s->unknown = grown;
    mp_src_unknown *u = &s->unknown[s->n_unknown++];
    u->name = name;
    u->file = file;
    u->kind = mp_unknown_tensor_kind(s->kind == MP_SOURCE_GGUF, name, &u->layer);
    return MP_OK;
}

/* A "<weight>_scale_inv" tensor: the FP8 block scale of <weight>. One
 * whose weight is not in the checkpoint means a broken FP8 checkpoint (a
 * shard or an index entry lost): refused, naming it, rather than converting
 * what is left. One whose weight is BF16, F16 or F32 is refused too: only
 * F8_E4M3 weights are read with their scale, so the others would convert
 * with it ignored, i.e. with wrong values. (Another weight dtype is left to
 * the weight's own dtype check, which names what can be read.) */
static int check_scale_has_weight(const mp_source *s, const mp_st_tensor *t, mp_error *err)
{
    static const char suffix[] = "_scale_inv";
    size_t n = strlen(t->name), ls = sizeof suffix - 1;
    if (n <= ls || strcmp(t->name + n - ls, suffix) != 0)
        return MP_OK;
    char base[MP_ST_MAX_NAME_BYTES + 1];
    snprintf(base, sizeof base, "%.*s", (int)(n - ls), t->name);
    const mp_st_tensor *w = mp_st_find(s->st, base);
    if (!w)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "an FP8 block scale whose weight %s is not in the checkpoint: the checkpoint is incomplete "
                       "(a shard or index entry missing?)",
                       base);
    if (w->dtype == MP_ST_BF16 || w->dtype == MP_ST_F16 || w->dtype == MP_ST_F32)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "an FP8 block scale whose weight %s (in %s) is %s: a scale only makes sense with F8_E4M3 "
                       "(float8_e4m3fn) weights, and converting the weight without it would give wrong values "
                       "(a checkpoint dequantized with its scales left in?)",
                       base, mp_path_basename(w->shard_path), w->dtype_name);
    return MP_OK;
}

/* Hashes the first `n` bytes of a file (its header) for provenance. */
static int hash_file_head(const char *path, uint64_t n, mp_source_file *f, mp_error *err)
{
    int fd = mp_open_input(path);
    if (fd < 0)
        return mp_fail_errno(err, path, errno, "cannot open");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return mp_fail_errno(err, path, errno, "cannot stat");
    }
    f->size = (uint64_t)st.st_size;
    f->device = (uint64_t)st.st_dev;
    f->inode = (uint64_t)st.st_ino;
    f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (n > f->size)
        n = f->size;
    char *buf;
    int rc = mp_read_head(fd, n, path, &buf, err);
    close(fd);
    if (rc)
        return rc;
    f->header_xxh3 = XXH3_64bits(buf, n);
    free(buf);
    f->path = strdup(path);
    return f->path ? MP_OK : mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
}

/* What mp_st_open is given for a file source. One shard of a set is not a
 * model (converting it fails on the first tensor another shard holds, with a
 * message about that tensor): the set is opened through its index, as a
 * GGUF split part opens its siblings; without an index the user is told to
 * pass the folder. A .json that is not an index (config.json, tokenizer.json)
 * is refused for what it is, not for lacking a weight_map. Sets *st_path to
 * a string to free, or NULL to open s->path itself. */
static int resolve_safetensors_path(const mp_source *s, char **st_path, mp_error *err)
{
    *st_path = NULL;
    if (mp_is_directory(s->path))
        return MP_OK;
    mp_split_name sn;
    if (mp_split_name_parse(s->path, ".safetensors", &sn) && sn.count > 1) {
        char *index = malloc(sn.prefix_len + sizeof ".safetensors.index.json");
        if (!index)
            return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
        sprintf(index, "%.*s.safetensors.index.json", (int)sn.prefix_len, s->path);
        if (mp_file_exists(index)) {
            *st_path = index;
            return MP_OK;
        }
        int rc = mp_fail(err, MP_ERR_INPUT, s->path, NULL,
                         "is shard %llu of %llu of a checkpoint, and there is no %s beside it to find the others: "
                         "pass the folder that holds all %llu shards (%s)",
                         (unsigned long long)sn.no, (unsigned long long)sn.count, mp_path_basename(index),
                         (unsigned long long)sn.count, s->dir);
        free(index);
        return rc;
    }
    if (!ends_with(s->path, ".json") || ends_with(s->path, ".index.json"))
        return MP_OK;
    char *text = NULL;
    size_t len = 0;
    if (mp_read_small_file(s->path, 64u << 20, &text, &len, err))
        return MP_OK; /* mp_st_open reports why it cannot be read */
    json_t *root = json_loadb(text, len, 0, NULL);
    free(text);
    bool index = json_is_object(root) && json_object_get(root, "weight_map");
    json_decref(root);
    if (index)
        return MP_OK;
    if (strcmp(mp_path_basename(s->path), "config.json") == 0)
        return mp_fail(err, MP_ERR_INPUT, s->path, NULL,
                       "config.json is not a checkpoint; pass the folder that holds it (%s)", s->dir);
    return mp_fail(err, MP_ERR_INPUT, s->path, NULL,
                   "is not a checkpoint (a .json source must be a safetensors index, with a weight_map); pass the "
                   "folder that holds the checkpoint (%s)",
                   s->dir);
}

/* The shard the user named must be one of those its index lists: an index
 * from another download beside it would convert other files silently. */
static int check_shard_in_index(const mp_source *s, const char *index, mp_error *err)
{
    for (size_t i = 0; i < mp_st_shard_count(s->st); i++)
        if (mp_same_file(s->path, mp_st_shard_path(s->st, i)))
            return MP_OK;
    return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "is not one of the shards %s lists; pass the folder", index);
}

static int open_safetensors(mp_source *s, mp_error *err)
{
    char *st_path;
    int rc = resolve_safetensors_path(s, &st_path, err);
    if (!rc)
        rc = mp_st_open(st_path ? st_path : s->path, &s->st, err);
    if (!rc && st_path)
        rc = check_shard_in_index(s, st_path, err);
    free(st_path);
    if (rc)
        return rc;
    /* config.json lives in the model folder */
    char *cfg = mp_path_join(s->dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    rc = cfg ? mp_read_small_file(cfg, 16u << 20, &text, &len, err)
             : mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
    if (!rc)
        rc = mp_model_desc_from_config_json(text, len, cfg, &s->desc, err);
    free(text);
    free(cfg);
    if (rc)
        return rc;

    size_t cap = 0, ucap = 0;
    s->n_file_tensors = mp_st_count(s->st);
    for (size_t i = 0; i < mp_st_count(s->st); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(s->st, i);
        mp_src_tensor x = {0};
        if ((rc = check_scale_has_weight(s, t, err)))
            return rc;
        if (!mp_name_map_hf(t->name, &x.id)) {
            if ((rc = add_unknown(s, t->name, t->shard_path, &ucap, err)))
                return rc;
            continue;
        }
        if (x.id.is_scale_inv) {
            s->n_scales++;
            continue; /* read together with its weight */
        }
        if (t->ndim == 1) {
            x.rows = 1;
            x.cols = t->shape[0];
        } else if (t->ndim == 2) {
            x.rows = t->shape[0];
            x.cols = t->shape[1];
        } else {
            return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name, "expected a 1-D or 2-D tensor, found %u dims",
                           t->ndim);
        }
        /* refused here, not when the converter reaches the tensor minutes later */
        if ((rc = mp_st_check_float_dtype(t, err)))
            return rc;
        x.name = t->name;
        x.st = t;
        if ((rc = add_tensor(s, &x, &cap, err)))
            return rc;
    }
    if (s->desc.fp8_block_rows && (rc = mp_st_check_fp8_scales(s->st, s->desc.fp8_block_rows, s->desc.fp8_block_cols, err)))
        return rc;

    s->n_files = mp_st_shard_count(s->st);
    s->files = calloc(s->n_files, sizeof *s->files);
    if (!s->files)
        return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
    for (size_t i = 0; i < s->n_files; i++) {
        const char *p = mp_st_shard_path(s->st, i);
        /* the header is 8 bytes of length + that many bytes of JSON */
        int fd = mp_open_input(p);
        uint8_t lenb[8] = {0};
        if (fd < 0 || pread(fd, lenb, 8, 0) != 8) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return mp_fail_errno(err, p, e ? e : EIO, "cannot read");
        }
        close(fd);
        uint64_t hl = 0;
        for (int b = 0; b < 8; b++)
            hl |= (uint64_t)lenb[b] << (8 * b);
        if ((rc = hash_file_head(p, 8 + (hl < MP_ST_MAX_HEADER_BYTES ? hl : 0), &s->files[i], err)))
            return rc;
    }
    return MP_OK;
}

static int open_gguf(mp_source *s, mp_error *err)
{
    int rc = mp_gguf_open(s->path, &s->gg, err);
    if (rc)
        return rc;
    if ((rc = mp_model_desc_from_gguf(&s->gg, s->path, &s->desc, err)))
        return rc;
    size_t cap = 0, ucap = 0;
    s->n_file_tensors = mp_gguf_tensor_count(&s->gg);
    for (uint64_t i = 0; i < mp_gguf_tensor_count(&s->gg); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(&s->gg, i);
        mp_src_tensor x = {0};
        if (!mp_name_map_gguf(t->name, &x.id)) {
            if ((rc = add_unknown(s, t->name, s->gg.files[t->file_index].map.path, &ucap, err)))
                return rc;
            continue;
        }
        x.name = t->name;
        x.gg = t;
        x.cols = t->ne[0];
        bool experts3d = x.id.expert == -1 &&
                         (x.id.role == MP_ROLE_EXP_GATE || x.id.role == MP_ROLE_EXP_UP || x.id.role == MP_ROLE_EXP_DOWN);
        if (experts3d) {
            if (t->n_dims != 3)
                return mp_fail(err, MP_ERR_INPUT, s->path, t->name, "expert tensor must have 3 dims, has %u", t->n_dims);
            if (t->ne[2] > MP_MAX_EXPERTS)
                return mp_fail(err, MP_ERR_INPUT, s->path, t->name, "%llu experts is too many",
                               (unsigned long long)t->ne[2]);
            for (uint64_t e = 0; e < t->ne[2]; e++) {
                x.id.expert = (int32_t)e;
                x.rows = t->ne[1];
                x.row_offset = e * t->ne[1];
                if ((rc = add_tensor(s, &x, &cap, err)))
                    return rc;
            }
            continue;
        }
        /* 1-D: one row; 2-D: ne reversed; 3-D k_b/v_b: heads folded into rows */
        x.rows = mp_gguf_tensor_rows(t);
        if ((rc = add_tensor(s, &x, &cap, err)))
            return rc;
    }
    s->n_files = s->gg.n_files;
    s->files = calloc(s->n_files, sizeof *s->files);
    if (!s->files)
        return mp_fail(err, MP_ERR_INPUT, s->path, NULL, "out of memory");
    for (size_t i = 0; i < s->n_files; i++)
        if ((rc = hash_file_head(s->gg.files[i].map.path, s->gg.files[i].data_offset, &s->files[i], err)))
            return rc;
    return MP_OK;
}

static int apply_config_override(mp_source *s, const char *cfg_path, mp_error *err)
{
    char *text = NULL;
    size_t len = 0;
    mp_model_desc o;
    int rc = mp_read_small_file(cfg_path, 16u << 20, &text, &len, err);
    if (!rc)
        rc = mp_model_desc_from_config_json(text, len, cfg_path, &o, err);
    free(text);
    /* a config.json stands on its own: its faults are named as its own,
     * not as the checkpoint's they are about to replace */
    if (!rc)
        rc = mp_model_desc_validate(&o, cfg_path, err);
    if (rc)
        return rc;
    char field[64] = "";
    if (!mp_model_desc_equal(&s->desc, &o, field, sizeof field))
        return mp_fail(err, MP_ERR_INPUT, cfg_path, NULL, "does not describe the model in %s: '%s' differs", s->path,
                       field);
    /* what the checkpoint states and the config only defaulted stays the checkpoint's */
    mp_model_desc_take_stated(&o, &s->desc);
    /* keep the checkpoint's FP8 encoding, which config overrides cannot change */
    o.fp8_block_rows = s->desc.fp8_block_rows;
    o.fp8_block_cols = s->desc.fp8_block_cols;
    s->desc = o;
    return MP_OK;
}

/* A tensor of a layer or a routed expert that the description does not have
 * means the description (config.json, --config or the GGUF's keys) is not
 * that of this checkpoint: converting would silently leave weights out. */
static int check_tensors_within_model(const mp_source *s, mp_error *err)
{
    const mp_model_desc *d = &s->desc;
    uint32_t layers = d->num_hidden_layers + d->num_nextn_predict_layers;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const mp_src_tensor *t = &s->tensors[i];
        const char *file = mp_source_tensor_file(s, t);
        if (t->id.layer >= 0 && (uint32_t)t->id.layer >= layers)
            return mp_fail(err, MP_ERR_INPUT, file, t->name,
                           "layer %d is beyond the model description's %u layers (num_hidden_layers %u + "
                           "num_nextn_predict_layers %u)",
                           (int)t->id.layer, layers, d->num_hidden_layers, d->num_nextn_predict_layers);
        if (t->id.expert >= 0 && (uint32_t)t->id.expert >= d->n_routed_experts)
            return mp_fail(err, MP_ERR_INPUT, file, t->name,
                           "routed expert %d is beyond the model description's %u routed experts (n_routed_experts)",
                           (int)t->id.expert, d->n_routed_experts);
    }
    return MP_OK;
}

int mp_source_open(const char *path, const char *config_override, mp_source **out, mp_error *err)
{
    *out = NULL;
    mp_source *s = calloc(1, sizeof *s);
    if (!s)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    s->path = strdup(path);
    bool is_dir = mp_is_directory(path);
    s->dir = is_dir ? strdup(path) : mp_path_dirname(path);
    int rc = (!s->path || !s->dir) ? mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory") : MP_OK;
    if (!rc && !is_dir && !mp_file_exists(path))
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "no such file or directory");
    if (!rc) {
        if (!is_dir && ends_with(path, ".gguf")) {
            s->kind = MP_SOURCE_GGUF;
            rc = open_gguf(s, err);
        } else if (is_dir || ends_with(path, ".safetensors") || ends_with(path, ".json")) {
            s->kind = MP_SOURCE_SAFETENSORS;
            rc = open_safetensors(s, err);
        } else {
            rc = mp_fail(err, MP_ERR_INPUT, path, NULL,
                         "not a model directory, .safetensors, .safetensors.index.json or .gguf file");
        }
    }
    if (!rc && config_override)
        rc = apply_config_override(s, config_override, err);
    if (!rc)
        rc = mp_model_desc_validate(&s->desc, path, err);
    if (!rc)
        rc = check_tensors_within_model(s, err);
    if (rc) {
        mp_source_close(s);
        return rc;
    }
    *out = s;
    return MP_OK;
}

void mp_source_close(mp_source *s)
{
    if (!s)
        return;
    if (s->st)
        mp_st_close(s->st);
    if (s->kind == MP_SOURCE_GGUF)
        mp_gguf_close(&s->gg);
    for (size_t i = 0; i < s->n_files; i++)
        free(s->files[i].path);
    free(s->files);
    free(s->tensors);
    free(s->unknown);
    free(s->path);
    free(s->dir);
    free(s);
}

const mp_src_tensor *mp_source_find(const mp_source *s, mp_role role, int32_t layer, int32_t expert)
{
    for (size_t i = 0; i < s->n_tensors; i++) {
        const mp_src_tensor *t = &s->tensors[i];
        if (t->id.role == role && t->id.layer == layer && t->id.expert == expert)
            return t;
    }
    return NULL;
}

int mp_source_read_rows(const mp_source *s, const mp_src_tensor *t, uint64_t row0, uint64_t n, float *out,
                        mp_error *err)
{
    if (row0 > t->rows || n > t->rows - row0)
        return mp_fail(err, MP_ERR_INPUT, s->path, t->name, "rows [%llu, +%llu) out of range (%llu rows)",
                       (unsigned long long)row0, (unsigned long long)n, (unsigned long long)t->rows);
    if (t->st)
        return mp_st_read_rows_f32(s->st, t->st, row0, n, out, s->desc.fp8_block_rows, s->desc.fp8_block_cols, err);
    return mp_gguf_tensor_dequantize_rows(&s->gg, t->gg, t->row_offset + row0, n, out, err);
}

static void byte_range(const mp_source *s, const mp_src_tensor *t, const uint8_t **p, uint64_t *n)
{
    if (t->st) {
        *p = t->st->data;
        *n = t->st->nbytes;
        return;
    }
    uint64_t row_bytes = t->gg->nbytes / mp_gguf_tensor_rows(t->gg);
    *p = t->gg->data + t->row_offset * row_bytes;
    *n = t->rows * row_bytes;
    (void)s;
}

const char *mp_source_tensor_file(const mp_source *s, const mp_src_tensor *t)
{
    if (t->st)
        return t->st->shard_path;
    return t->gg ? s->gg.files[t->gg->file_index].map.path : s->path;
}

uint64_t mp_source_tensor_bytes(const mp_source *s, const mp_src_tensor *t)
{
    const uint8_t *p;
    uint64_t n;
    byte_range(s, t, &p, &n);
    return n;
}

static void advise(const mp_source *s, const mp_src_tensor *t, int advice)
{
    const uint8_t *p;
    uint64_t n;
    byte_range(s, t, &p, &n);
    if (!p || !n)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, b = a + n;
    /* Whole pages inside the range only: a neighbour may still be in use. */
    uintptr_t lo = (a + page - 1) & ~(page - 1), hi = b & ~(page - 1);
    if (advice == MADV_WILLNEED)
        lo = a & ~(page - 1), hi = (b + page - 1) & ~(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, advice);
}

void mp_source_release(const mp_source *s, const mp_src_tensor *t) { advise(s, t, MADV_DONTNEED); }
void mp_source_prefetch(const mp_source *s, const mp_src_tensor *t) { advise(s, t, MADV_WILLNEED); }
