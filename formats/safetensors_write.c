#include "safetensors_write.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_array.h"
#include "mp_file.h"
#include "mp_num.h"

static const struct {
    const char *name;
    size_t size;
} dtype_info[MP_STW_DTYPE_COUNT] = {
    [MP_STW_BOOL] = {"BOOL", 1},       [MP_STW_U8] = {"U8", 1},   [MP_STW_I8] = {"I8", 1},
    [MP_STW_F8_E5M2] = {"F8_E5M2", 1}, [MP_STW_F8_E4M3] = {"F8_E4M3", 1},
    [MP_STW_I16] = {"I16", 2},         [MP_STW_U16] = {"U16", 2}, [MP_STW_F16] = {"F16", 2},
    [MP_STW_BF16] = {"BF16", 2},       [MP_STW_I32] = {"I32", 4}, [MP_STW_U32] = {"U32", 4},
    [MP_STW_F32] = {"F32", 4},         [MP_STW_F64] = {"F64", 8}, [MP_STW_I64] = {"I64", 8},
    [MP_STW_U64] = {"U64", 8},
};

const char *mp_stw_dtype_name(mp_stw_dtype dtype)
{
    return (unsigned)dtype < MP_STW_DTYPE_COUNT ? dtype_info[dtype].name : NULL;
}

size_t mp_stw_dtype_size(mp_stw_dtype dtype)
{
    return (unsigned)dtype < MP_STW_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

bool mp_stw_dtype_from_name(const char *name, mp_stw_dtype *out)
{
    for (int i = 0; i < MP_STW_DTYPE_COUNT; i++)
        if (!strcmp(name, dtype_info[i].name)) {
            *out = (mp_stw_dtype)i;
            return true;
        }
    return false;
}

int mp_stw_reference_cmp(mp_stw_dtype a_dtype, const char *a_name, mp_stw_dtype b_dtype, const char *b_name)
{
    if (a_dtype != b_dtype)
        return a_dtype > b_dtype ? -1 : 1;
    return strcmp(a_name, b_name);
}

typedef struct stw_tensor {
    char *name;
    mp_stw_dtype dtype;
    size_t ndim;
    uint64_t shape[MP_STW_MAX_DIMS];
    uint64_t nbytes;
    uint64_t begin; /* relative to the start of the data section */
    _Atomic uint64_t written;
} stw_tensor;

struct mp_st_writer {
    char *path;
    json_t *metadata; /* NULL until the first entry */
    json_t *names;    /* used as a set, for duplicate detection */
    stw_tensor *tensors;
    size_t count, cap;
    uint64_t data_bytes;
    uint64_t data_start; /* 8 + padded header length, after begin */
    bool begun;
    bool file_open;
    mp_outfile out;
    size_t cursor_tensor; /* mp_st_writer_append's position */
    uint64_t cursor_offset;
};

int mp_st_writer_open(mp_st_writer **out, const char *path, mp_error *err)
{
    *out = NULL;
    mp_st_writer *w = calloc(1, sizeof *w);
    if (!w)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    w->out.fd = -1;
    w->path = strdup(path);
    w->names = json_object();
    if (!w->path || !w->names) {
        mp_st_writer_abort(w);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    }
    *out = w;
    return MP_OK;
}

int mp_st_writer_set_metadata(mp_st_writer *w, const char *key, const char *value, mp_error *err)
{
    if (w->begun)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "metadata added after the header was written");
    if (!w->metadata && !(w->metadata = json_object()))
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "out of memory");
    if (json_object_get(w->metadata, key))
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "metadata key '%s' given twice", key);
    json_t *v = json_string(value);
    if (!v || json_object_set_new(w->metadata, key, v) != 0)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "metadata '%s' is not valid UTF-8 (or out of memory)", key);
    return MP_OK;
}

int mp_st_writer_add(mp_st_writer *w, const char *name, mp_stw_dtype dtype, const uint64_t *shape, size_t ndim,
                     size_t *index, mp_error *err)
{
    if (w->begun)
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "tensor added after the header was written");
    if (!name || !name[0] || !strcmp(name, "__metadata__"))
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "invalid tensor name '%s'", name ? name : "(null)");
    if ((unsigned)dtype >= MP_STW_DTYPE_COUNT)
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "invalid dtype %d", (int)dtype);
    if (ndim > MP_STW_MAX_DIMS)
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "%zu dimensions, more than %d", ndim, MP_STW_MAX_DIMS);
    if (json_object_get(w->names, name))
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "tensor declared twice");
    uint64_t bytes = mp_stw_dtype_size(dtype);
    for (size_t d = 0; d < ndim; d++)
        if (shape[d] > (uint64_t)INT64_MAX || !mp_mul_u64(bytes, shape[d], &bytes))
            return mp_fail(err, MP_ERR_INPUT, w->path, name, "shape overflows 64 bits");
    uint64_t end;
    if (!mp_add_u64(w->data_bytes, bytes, &end) || end > (uint64_t)INT64_MAX)
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "file would exceed 2^63 bytes");
    stw_tensor *grown = mp_array_grow(w->tensors, w->count, &w->cap, sizeof *grown, 64);
    if (!grown)
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "out of memory");
    w->tensors = grown;
    /* The name set rejects invalid UTF-8 here, so the header JSON cannot fail on it later. */
    if (json_object_set_new(w->names, name, json_true()) != 0)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "tensor name is not valid UTF-8 (or out of memory)");
    stw_tensor *t = &w->tensors[w->count];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) {
        json_object_del(w->names, name);
        return mp_fail(err, MP_ERR_INPUT, w->path, name, "out of memory");
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (size_t d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->nbytes = bytes;
    t->begin = w->data_bytes;
    atomic_init(&t->written, 0);
    w->data_bytes = end;
    if (index)
        *index = w->count;
    w->count++;
    return MP_OK;
}

/* The header JSON, compact, "__metadata__" first, tensors in declaration order,
 * each as {"dtype", "shape", "data_offsets"} like the reference writes it. */
static char *build_header(const mp_st_writer *w, size_t *len)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    if (w->metadata && json_object_set(root, "__metadata__", w->metadata) != 0)
        goto fail;
    for (size_t i = 0; i < w->count; i++) {
        const stw_tensor *t = &w->tensors[i];
        json_t *shape = json_array();
        json_t *offs = json_array();
        json_t *obj = json_object();
        if (!shape || !offs || !obj) {
            json_decref(shape);
            json_decref(offs);
            json_decref(obj);
            goto fail;
        }
        for (size_t d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_array_append_new(offs, json_integer((json_int_t)t->begin));
        json_array_append_new(offs, json_integer((json_int_t)(t->begin + t->nbytes)));
        json_object_set_new(obj, "dtype", json_string(mp_stw_dtype_name(t->dtype)));
        json_object_set_new(obj, "shape", shape);
        json_object_set_new(obj, "data_offsets", offs);
        if (json_object_set_new(root, t->name, obj) != 0)
            goto fail;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (s)
        *len = strlen(s);
    return s;
fail:
    json_decref(root);
    return NULL;
}

int mp_st_writer_begin(mp_st_writer *w, mp_error *err)
{
    if (w->begun)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "header written twice");
    size_t json_len = 0;
    char *json = build_header(w, &json_len);
    if (!json)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "cannot build the header (out of memory?)");
    /* Spaces pad the JSON so the data section starts 8-byte aligned, as the
     * reference implementation does. */
    size_t padded = (size_t)mp_align_up(json_len, 8);
    uint8_t *hdr = malloc(8 + padded);
    if (!hdr) {
        free(json);
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "out of memory");
    }
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(hdr + 8, json, json_len);
    memset(hdr + 8 + json_len, ' ', padded - json_len);
    free(json);
    int rc = mp_outfile_open(&w->out, w->path, false, err);
    if (rc == MP_OK) {
        w->file_open = true;
        rc = mp_outfile_pwrite(&w->out, hdr, 8 + padded, 0, err);
    }
    free(hdr);
    if (rc)
        return rc;
    w->data_start = 8 + (uint64_t)padded;
    /* Reserving the whole file up front makes a full disk fail now rather
     * than halfway, and halves the kernel's cost of the writes on ext4/xfs.
     * File systems without fallocate simply skip it. */
    if (w->data_bytes > 0 && fallocate(w->out.fd, 0, 0, (off_t)(w->data_start + w->data_bytes)) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
        int e = errno;
        if (e == ENOSPC || e == EFBIG || e == EDQUOT)
            return mp_fail(err, MP_ERR_INPUT, w->out.partial_path, NULL,
                           "cannot reserve %llu bytes: %s (out of disk space?)",
                           (unsigned long long)(w->data_start + w->data_bytes), strerror(e));
        return mp_fail_errno(err, w->out.partial_path, e, "cannot reserve space");
    }
    w->begun = true;
    return MP_OK;
}

size_t mp_st_writer_count(const mp_st_writer *w)
{
    return w->count;
}

uint64_t mp_st_writer_tensor_bytes(const mp_st_writer *w, size_t index)
{
    return index < w->count ? w->tensors[index].nbytes : 0;
}

uint64_t mp_st_writer_tensor_offset(const mp_st_writer *w, size_t index)
{
    return index < w->count ? w->data_start + w->tensors[index].begin : 0;
}

uint64_t mp_st_writer_file_size(const mp_st_writer *w)
{
    return w->data_start + w->data_bytes;
}

int mp_st_writer_write(mp_st_writer *w, size_t index, uint64_t offset, const void *buf, size_t n, mp_error *err)
{
    if (!w->begun)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "data written before the header");
    if (index >= w->count)
        return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "no tensor #%zu", index);
    stw_tensor *t = &w->tensors[index];
    if (!mp_range_ok(offset, n, t->nbytes))
        return mp_fail(err, MP_ERR_INPUT, w->path, t->name, "write of %zu bytes at %llu is outside the tensor's %llu bytes",
                       n, (unsigned long long)offset, (unsigned long long)t->nbytes);
    /* pwrite on the shared descriptor (not mp_outfile_pwrite, which updates the
     * outfile's size field and so is not safe from several threads). */
    const uint8_t *p = buf;
    uint64_t pos = w->data_start + t->begin + offset;
    size_t left = n;
    while (left > 0) {
        ssize_t got = pwrite(w->out.fd, p, left, (off_t)pos);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            int e = got < 0 ? errno : ENOSPC;
            if (e == ENOSPC || e == EFBIG || e == EDQUOT)
                return mp_fail(err, MP_ERR_INPUT, w->out.partial_path, t->name,
                               "cannot write: %s (out of disk space or over the file size limit?)", strerror(e));
            return mp_fail(err, MP_ERR_INPUT, w->out.partial_path, t->name, "cannot write: %s", strerror(e));
        }
        p += got;
        left -= (size_t)got;
        pos += (uint64_t)got;
    }
    atomic_fetch_add(&t->written, (uint64_t)n);
    return MP_OK;
}

int mp_st_writer_append(mp_st_writer *w, const void *buf, size_t n, mp_error *err)
{
    const uint8_t *p = buf;
    while (n > 0) {
        while (w->cursor_tensor < w->count && w->cursor_offset == w->tensors[w->cursor_tensor].nbytes) {
            w->cursor_tensor++;
            w->cursor_offset = 0;
        }
        if (w->cursor_tensor >= w->count)
            return mp_fail(err, MP_ERR_INPUT, w->path, NULL, "%zu bytes appended past the last tensor", n);
        uint64_t room = w->tensors[w->cursor_tensor].nbytes - w->cursor_offset;
        size_t k = room < n ? (size_t)room : n;
        int rc = mp_st_writer_write(w, w->cursor_tensor, w->cursor_offset, p, k, err);
        if (rc)
            return rc;
        w->cursor_offset += k;
        p += k;
        n -= k;
    }
    return MP_OK;
}

static void writer_free(mp_st_writer *w)
{
    for (size_t i = 0; i < w->count; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    json_decref(w->metadata);
    json_decref(w->names);
    free(w->path);
    free(w);
}

int mp_st_writer_commit(mp_st_writer *w, mp_error *err)
{
    int rc = MP_OK;
    if (!w->begun)
        rc = mp_fail(err, MP_ERR_INPUT, w->path, NULL, "committed before the header was written");
    for (size_t i = 0; rc == MP_OK && i < w->count; i++) {
        const stw_tensor *t = &w->tensors[i];
        uint64_t got = atomic_load(&t->written);
        if (got != t->nbytes)
            rc = mp_fail(err, MP_ERR_INPUT, w->path, t->name, "%llu of %llu bytes written%s", (unsigned long long)got,
                         (unsigned long long)t->nbytes, got > t->nbytes ? " (overlapping writes)" : "");
    }
    if (rc == MP_OK) {
        rc = mp_outfile_commit(&w->out, err);
        if (rc == MP_OK)
            w->file_open = false;
    }
    if (rc)
        mp_st_writer_abort(w);
    else
        writer_free(w);
    return rc;
}

void mp_st_writer_abort(mp_st_writer *w)
{
    if (!w)
        return;
    if (w->file_open)
        mp_outfile_abort(&w->out);
    writer_free(w);
}

int mp_st_write_index(const char *path, uint64_t total_size, const mp_st_index_entry *entries, size_t count,
                      mp_error *err)
{
    json_t *root = json_object();
    json_t *meta = json_object();
    json_t *map = json_object();
    if (!root || !meta || !map) {
        json_decref(root);
        json_decref(meta);
        json_decref(map);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total_size));
    json_object_set_new(root, "metadata", meta);
    json_object_set_new(root, "weight_map", map);
    for (size_t i = 0; i < count; i++) {
        if (json_object_get(map, entries[i].tensor)) {
            json_decref(root);
            return mp_fail(err, MP_ERR_INPUT, path, entries[i].tensor, "listed twice in the index");
        }
        json_t *f = json_string(entries[i].file);
        if (!f || json_object_set_new(map, entries[i].tensor, f) != 0) {
            json_decref(root);
            return mp_fail(err, MP_ERR_INPUT, path, entries[i].tensor, "name is not valid UTF-8 (or out of memory)");
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    const mp_file_part parts[] = {{text, strlen(text)}, {"\n", 1}};
    int rc = mp_write_file_parts(path, parts, 2, err);
    free(text);
    return rc;
}
