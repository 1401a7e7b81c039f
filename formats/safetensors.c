/* safetensors reader: see safetensors.h. */
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mp_array.h"
#include "mp_file.h"
#include "mp_num.h"

/* Index files of the largest checkpoints are ~10 MB; 100 MB is generous. */
#define ST_MAX_INDEX_BYTES 100000000ull
/* A checkpoint in more shards than this is not one we can have been given. */
#define ST_MAX_SHARDS 65536u

/* ---- arena: stable storage for names and metadata strings -------------- */

typedef struct st_block {
    struct st_block *next;
    size_t used, cap;
    char data[];
} st_block;

static char *arena_strdup(st_block **arena, const char *s)
{
    size_t n = strlen(s) + 1;
    st_block *b = *arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        st_block *nb = malloc(sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *arena = nb;
        b = nb;
    }
    char *p = b->data + b->used;
    memcpy(p, s, n);
    b->used += n;
    return p;
}

static void arena_free(st_block *b)
{
    while (b) {
        st_block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- the reader's state --------------------------------------------------- */

typedef struct st_meta {
    const char *key, *value;
} st_meta;

typedef struct st_shard {
    mp_mapped_file map;
    st_meta *meta;
    size_t nmeta;
} st_shard;

struct mp_safetensors {
    char *path;
    st_shard *shards;
    size_t nshards;
    mp_st_tensor *tensors; /* sorted by name */
    size_t ntensors;
    st_block *arena;
};

/* ---- dtypes ------------------------------------------------------------- */

typedef struct st_dtype_info {
    const char *name;
    mp_st_dtype dtype;
    unsigned size; /* bytes per element */
} st_dtype_info;

/* Supported dtypes first, then the rest of the specification's whole-byte
 * dtypes, which are kept as MP_ST_OTHER with a known size. */
static const st_dtype_info st_dtypes[] = {
    {"BF16", MP_ST_BF16, 2},  {"F16", MP_ST_F16, 2},       {"F32", MP_ST_F32, 4},    {"F8_E4M3", MP_ST_F8_E4M3, 1},
    {"I8", MP_ST_I8, 1},      {"U8", MP_ST_U8, 1},         {"I32", MP_ST_I32, 4},    {"I64", MP_ST_I64, 8},
    {"F64", MP_ST_OTHER, 8},  {"I16", MP_ST_OTHER, 2},     {"U16", MP_ST_OTHER, 2},  {"U32", MP_ST_OTHER, 4},
    {"U64", MP_ST_OTHER, 8},  {"BOOL", MP_ST_OTHER, 1},    {"F8_E5M2", MP_ST_OTHER, 1}, {"F8_E8M0", MP_ST_OTHER, 1},
};

const char *mp_st_dtype_name(mp_st_dtype dtype)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == dtype && dtype != MP_ST_OTHER)
            return st_dtypes[i].name;
    return "other";
}

size_t mp_st_dtype_size(mp_st_dtype dtype)
{
    if (dtype == MP_ST_OTHER)
        return 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == dtype)
            return st_dtypes[i].size;
    return 0;
}

static const st_dtype_info *dtype_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return &st_dtypes[i];
    return NULL;
}

/* ---- growable tensor list ------------------------------------------------ */

typedef struct st_list {
    mp_st_tensor *v;
    size_t n, cap;
} st_list;

static mp_st_tensor *list_push(st_list *l)
{
    mp_st_tensor *v = mp_array_grow(l->v, l->n, &l->cap, sizeof *v, 256);
    if (!v)
        return NULL;
    l->v = v;
    mp_st_tensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    return t;
}

static int cmp_tensor_name_shard(const void *a, const void *b)
{
    const mp_st_tensor *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return (x->shard > y->shard) - (x->shard < y->shard);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const mp_st_tensor *x = *(const mp_st_tensor *const *)a, *y = *(const mp_st_tensor *const *)b;
    if (x->file_offset != y->file_offset)
        return x->file_offset < y->file_offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* ---- one shard's header ----------------------------------------------------- */

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void format_shape(const mp_st_tensor *t, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, len, "[");
    for (uint32_t i = 0; i < t->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

static int parse_metadata(mp_safetensors *st, st_shard *sh, json_t *meta, const char *path, mp_error *err)
{
    if (!json_is_object(meta))
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "__metadata__ is not a JSON object");
    size_t n = json_object_size(meta);
    sh->meta = calloc(n ? n : 1, sizeof *sh->meta);
    if (!sh->meta)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val)
    {
        if (!json_is_string(val))
            return mp_fail(err, MP_ERR_INPUT, path, NULL, "__metadata__ value of key '%.200s' is not a string", key);
        st_meta *m = &sh->meta[sh->nmeta];
        m->key = arena_strdup(&st->arena, key);
        m->value = arena_strdup(&st->arena, json_string_value(val));
        if (!m->key || !m->value)
            return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
        sh->nmeta++;
    }
    return MP_OK;
}

/* Checks one header entry and appends it to `out`. */
static int parse_entry(mp_safetensors *st, uint32_t shard_idx, const char *path, const char *name, json_t *obj,
                       const uint8_t *data_area, uint64_t data_size, uint64_t data_start, st_list *out,
                       mp_error *err)
{
    size_t name_len = strlen(name);
    if (name_len == 0)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "a tensor has an empty name");
    if (name_len > MP_ST_MAX_NAME_BYTES)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "tensor name '%.64s...' is longer than %d bytes", name,
                       MP_ST_MAX_NAME_BYTES);
    if (!json_is_object(obj))
        return mp_fail(err, MP_ERR_INPUT, path, name, "header entry is not a JSON object");

    json_t *jd = json_object_get(obj, "dtype");
    json_t *js = json_object_get(obj, "shape");
    json_t *jo = json_object_get(obj, "data_offsets");
    if (!jd || !js || !jo)
        return mp_fail(err, MP_ERR_INPUT, path, name, "header entry lacks '%s'",
                       !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd))
        return mp_fail(err, MP_ERR_INPUT, path, name, "dtype is not a string");
    if (!json_is_array(js))
        return mp_fail(err, MP_ERR_INPUT, path, name, "shape is not an array");
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return mp_fail(err, MP_ERR_INPUT, path, name, "data_offsets is not an array of 2 integers");

    mp_st_tensor *t = list_push(out);
    if (!t)
        return mp_fail(err, MP_ERR_INPUT, path, name, "out of memory");
    t->name = arena_strdup(&st->arena, name);
    t->shard = shard_idx;
    t->shard_path = st->shards[shard_idx].map.path;

    const char *dname = json_string_value(jd);
    const st_dtype_info *di = dtype_lookup(dname);
    if (di) {
        t->dtype = di->dtype;
        t->dtype_name = di->name;
    } else {
        /* unknown to the specification: kept, bounds-checked, unreadable */
        char shown[32];
        snprintf(shown, sizeof shown, "%s", dname);
        t->dtype = MP_ST_OTHER;
        t->dtype_name = arena_strdup(&st->arena, shown);
    }
    if (!t->name || !t->dtype_name)
        return mp_fail(err, MP_ERR_INPUT, path, name, "out of memory");

    size_t ndim = json_array_size(js);
    if (ndim > MP_ST_MAX_DIMS)
        return mp_fail(err, MP_ERR_INPUT, path, name, "shape has %zu dimensions, more than %d", ndim, MP_ST_MAX_DIMS);
    t->ndim = (uint32_t)ndim;
    /* The product of the non-zero dims must fit, so that code multiplying
     * dims of an empty tensor (e.g. [2^63, 3, 0]) cannot overflow either. */
    uint64_t nonzero = 1;
    bool overflow = false, empty = false;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            return mp_fail(err, MP_ERR_INPUT, path, name, "shape dimension %zu is not an integer", i);
        json_int_t v = json_integer_value(d);
        if (v < 0)
            return mp_fail(err, MP_ERR_INPUT, path, name, "shape dimension %zu is negative (%lld)", i, (long long)v);
        t->shape[i] = (uint64_t)v;
        if (v == 0)
            empty = true;
        else if (!mp_mul_u64(nonzero, (uint64_t)v, &nonzero))
            overflow = true;
    }
    char shape_text[256];
    format_shape(t, shape_text, sizeof shape_text);
    if (overflow)
        return mp_fail(err, MP_ERR_INPUT, path, name, "shape %s has more elements than fit in 64 bits", shape_text);
    uint64_t nelems = empty ? 0 : nonzero;
    t->nelems = nelems;

    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je))
        return mp_fail(err, MP_ERR_INPUT, path, name, "data_offsets is not an array of 2 integers");
    json_int_t b = json_integer_value(jb), e = json_integer_value(je);
    if (b < 0 || e < 0)
        return mp_fail(err, MP_ERR_INPUT, path, name, "data_offsets [%lld, %lld] are negative", (long long)b,
                       (long long)e);
    if (b > e)
        return mp_fail(err, MP_ERR_INPUT, path, name, "data_offsets [%lld, %lld]: begin is after end", (long long)b,
                       (long long)e);
    if ((uint64_t)e > data_size)
        return mp_fail(err, MP_ERR_INPUT, path, name,
                       "data_offsets [%lld, %lld] lie outside the data area (%" PRIu64 " bytes)", (long long)b,
                       (long long)e, data_size);
    t->nbytes = (uint64_t)(e - b);
    t->file_offset = data_start + (uint64_t)b;
    t->data = t->nbytes ? data_area + b : NULL;

    if (di) {
        uint64_t want, unused;
        if (!mp_mul_u64(nonzero, di->size, &unused) || !mp_mul_u64(nelems, di->size, &want))
            return mp_fail(err, MP_ERR_INPUT, path, name, "%s %s is larger than 2^64 bytes", di->name, shape_text);
        if (want != t->nbytes)
            return mp_fail(err, MP_ERR_INPUT, path, name,
                           "holds %" PRIu64 " bytes but %s %s needs %" PRIu64 " (size mismatch)", t->nbytes, di->name,
                           shape_text, want);
    }
    return MP_OK;
}

/* Parses shard `idx` (already mapped) and appends its tensors to `out`. */
static int parse_shard(mp_safetensors *st, uint32_t idx, st_list *out, mp_error *err)
{
    st_shard *sh = &st->shards[idx];
    const char *path = sh->map.path;
    uint64_t size = sh->map.size;
    if (size < 8)
        return mp_fail(err, MP_ERR_INPUT, path, NULL,
                       "truncated: the file is %" PRIu64 " bytes, too short for the 8-byte header length", size);
    uint64_t hlen = read_le64(sh->map.data);
    if (hlen > MP_ST_MAX_HEADER_BYTES)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "header length %" PRIu64 " exceeds the limit of %llu bytes",
                       hlen, MP_ST_MAX_HEADER_BYTES);
    if (hlen > size - 8)
        return mp_fail(err, MP_ERR_INPUT, path, NULL,
                       "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes): truncated?", hlen,
                       size);
    const uint8_t *header = sh->map.data + 8;
    uint64_t data_start = 8 + hlen;
    uint64_t data_size = size - data_start;
    const uint8_t *data_area = sh->map.data + data_start;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)header, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "header is not valid JSON: %s (at byte %d)", jerr.text,
                       jerr.position);
    int rc = MP_OK;
    if (!json_is_object(root)) {
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "header is not a JSON object");
        goto done;
    }
    size_t first = out->n;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (sh->meta) {
                rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "__metadata__ appears twice");
                goto done;
            }
            rc = parse_metadata(st, sh, val, path, err);
        } else {
            rc = parse_entry(st, idx, path, key, val, data_area, data_size, data_start, out, err);
        }
        if (rc)
            goto done;
    }

    /* Overlaps and holes: sort this shard's tensors by offset and walk them.
     * The specification requires the data area to be covered exactly. */
    size_t n = out->n - first;
    const mp_st_tensor **by_off = malloc((n ? n : 1) * sizeof *by_off);
    if (!by_off) {
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        by_off[i] = &out->v[first + i];
    qsort(by_off, n, sizeof *by_off, cmp_tensor_offset);
    uint64_t pos = data_start;
    const mp_st_tensor *prev = NULL;
    for (size_t i = 0; i < n && rc == MP_OK; i++) {
        const mp_st_tensor *t = by_off[i];
        if (t->file_offset < pos) {
            rc = mp_fail(err, MP_ERR_INPUT, path, t->name,
                         "overlaps tensor %s (bytes [%" PRIu64 ", %" PRIu64 ") and [%" PRIu64 ", %" PRIu64
                         ") of the data area)",
                         prev->name, prev->file_offset - data_start, prev->file_offset - data_start + prev->nbytes,
                         t->file_offset - data_start, t->file_offset - data_start + t->nbytes);
        } else if (t->file_offset > pos) {
            rc = mp_fail(err, MP_ERR_INPUT, path, t->name,
                         "%" PRIu64 " unindexed bytes of the data area lie before this tensor (a hole at [%" PRIu64
                         ", %" PRIu64 "))",
                         t->file_offset - pos, pos - data_start, t->file_offset - data_start);
        }
        if (t->nbytes > 0 || !prev) {
            pos = t->file_offset + t->nbytes;
            prev = t;
        }
    }
    if (rc == MP_OK && pos != size)
        rc = mp_fail(err, MP_ERR_INPUT, path, NULL,
                     "%" PRIu64 " bytes at the end of the data area belong to no tensor", size - pos);
    free(by_off);
done:
    json_decref(root);
    return rc;
}

/* ---- opening ---------------------------------------------------------------- */

static int add_shard(mp_safetensors *st, const char *path, mp_error *err)
{
    st_shard *sh = &st->shards[st->nshards];
    memset(sh, 0, sizeof *sh);
    sh->map.fd = -1;
    int rc = mp_map_file(path, &sh->map, err);
    if (rc)
        return rc;
    st->nshards++;
    return MP_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool shard_name_ok(const char *s)
{
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Sorts all tensors by name and rejects a name held by two files. */
static int finish_unindexed(mp_safetensors *st, st_list *all, mp_error *err)
{
    qsort(all->v, all->n, sizeof *all->v, cmp_tensor_name_shard);
    for (size_t i = 1; i < all->n; i++)
        if (strcmp(all->v[i - 1].name, all->v[i].name) == 0)
            return mp_fail(err, MP_ERR_INPUT, st->path, all->v[i].name, "tensor appears in both %s and %s",
                           all->v[i - 1].shard_path, all->v[i].shard_path);
    st->tensors = all->v;
    st->ntensors = all->n;
    all->v = NULL;
    return MP_OK;
}

static int open_files(mp_safetensors *st, char **paths, size_t npaths, mp_error *err)
{
    st->shards = calloc(npaths ? npaths : 1, sizeof *st->shards);
    if (!st->shards)
        return mp_fail(err, MP_ERR_INPUT, st->path, NULL, "out of memory");
    st_list all = {0};
    int rc = MP_OK;
    for (size_t i = 0; i < npaths && rc == MP_OK; i++) {
        rc = add_shard(st, paths[i], err);
        if (rc == MP_OK)
            rc = parse_shard(st, (uint32_t)(st->nshards - 1), &all, err);
    }
    if (rc == MP_OK)
        rc = finish_unindexed(st, &all, err);
    free(all.v);
    return rc;
}

static int open_index(mp_safetensors *st, const char *index_path, mp_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = mp_read_small_file(index_path, ST_MAX_INDEX_BYTES, &text, &len, err);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return mp_fail(err, MP_ERR_INPUT, index_path, NULL, "not valid JSON: %s (line %d)", jerr.text, jerr.line);

    char *dir = mp_path_dirname(index_path);
    const char **names = NULL;
    size_t nnames = 0;
    st_list all = {0};
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(root)) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "not a JSON object");
        goto done;
    }
    if (!wm || !json_is_object(wm)) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "weight_map is %s", wm ? "not a JSON object" : "missing");
        goto done;
    }
    size_t nmap = json_object_size(wm);
    if (nmap == 0) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "weight_map is empty");
        goto done;
    }
    names = malloc(nmap * sizeof *names);
    if (!dir || !names) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val)
    {
        if (!json_is_string(val)) {
            rc = mp_fail(err, MP_ERR_INPUT, index_path, key, "weight_map value is not a string");
            goto done;
        }
        const char *shard = json_string_value(val);
        if (!shard_name_ok(shard)) {
            rc = mp_fail(err, MP_ERR_INPUT, index_path, key,
                         "shard name '%.200s' is not a plain file name next to the index (no '/' or '..')", shard);
            goto done;
        }
        names[nnames++] = shard;
    }
    /* unique shard names, each mapped once */
    qsort(names, nnames, sizeof *names, cmp_str);
    size_t nuniq = 0;
    for (size_t i = 0; i < nnames; i++)
        if (nuniq == 0 || strcmp(names[nuniq - 1], names[i]) != 0)
            names[nuniq++] = names[i];
    if (nuniq > ST_MAX_SHARDS) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "weight_map names %zu shards, more than %u", nuniq,
                     ST_MAX_SHARDS);
        goto done;
    }
    st->shards = calloc(nuniq, sizeof *st->shards);
    if (!st->shards) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nuniq; i++) {
        char *p = mp_path_join(dir, names[i]);
        if (!p) {
            rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "out of memory");
            goto done;
        }
        if (!mp_file_exists(p)) {
            rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "weight_map names shard %s, which does not exist (%s)",
                         names[i], p);
            free(p);
            goto done;
        }
        rc = add_shard(st, p, err);
        free(p);
        if (rc == MP_OK)
            rc = parse_shard(st, (uint32_t)i, &all, err);
        if (rc)
            goto done;
    }
    qsort(all.v, all.n, sizeof *all.v, cmp_tensor_name_shard);

    /* exactly the tensors the index names, each from its shard */
    st->tensors = malloc(nmap * sizeof *st->tensors);
    if (!st->tensors) {
        rc = mp_fail(err, MP_ERR_INPUT, index_path, NULL, "out of memory");
        goto done;
    }
    json_object_foreach(wm, key, val)
    {
        const char *shard = json_string_value(val);
        const char **hit = bsearch(&shard, names, nuniq, sizeof *names, cmp_str);
        mp_st_tensor probe = {.name = key, .shard = (uint32_t)(hit - names)};
        const mp_st_tensor *t = bsearch(&probe, all.v, all.n, sizeof *all.v, cmp_tensor_name_shard);
        if (!t) {
            rc = mp_fail(err, MP_ERR_INPUT, index_path, key, "listed in shard %s, which does not hold it", shard);
            goto done;
        }
        st->tensors[st->ntensors++] = *t;
    }
    qsort(st->tensors, st->ntensors, sizeof *st->tensors, cmp_tensor_name_shard);
done:
    free(all.v);
    free(names);
    free(dir);
    json_decref(root);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool same_shard_set(const char *a, const mp_split_name *sa, const char *b, const mp_split_name *sb)
{
    return sa->count == sb->count && sa->prefix_len == sb->prefix_len && !memcmp(a, b, sa->prefix_len);
}

/* A folder without an index whose files are named as a numbered set
 * ("model-0000K-of-0000N.safetensors") must hold all N of them: a set cut
 * short (an unfinished download or copy) is refused here, naming the first
 * missing file, instead of later for a tensor that a missing shard holds
 * ("the checkpoint has no model.norm.weight"). */
static int check_shard_sets(const char *dir, char *const *paths, size_t n, mp_error *err)
{
    uint64_t *nos = malloc((n ? n : 1) * sizeof *nos);
    if (!nos)
        return mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    int rc = MP_OK;
    for (size_t i = 0; i < n && rc == MP_OK; i++) {
        mp_split_name a, b;
        if (!mp_split_name_parse(paths[i], ".safetensors", &a) || a.count < 2)
            continue;
        bool seen = false; /* the set was checked at its first file */
        for (size_t j = 0; j < i && !seen; j++)
            seen = mp_split_name_parse(paths[j], ".safetensors", &b) && same_shard_set(paths[i], &a, paths[j], &b);
        if (seen)
            continue;
        size_t k = 0;
        for (size_t j = i; j < n; j++)
            if (mp_split_name_parse(paths[j], ".safetensors", &b) && same_shard_set(paths[i], &a, paths[j], &b) &&
                b.no >= 1 && b.no <= b.count)
                nos[k++] = b.no;
        qsort(nos, k, sizeof *nos, cmp_u64);
        uint64_t held = 0, first_missing = 0;
        for (size_t j = 0; j < k; j++) {
            if (j > 0 && nos[j] == nos[j - 1])
                continue; /* the same number in two spellings (00003, 3) */
            if (!first_missing && nos[j] != held + 1)
                first_missing = held + 1;
            held++;
        }
        if (held == a.count)
            continue;
        if (!first_missing)
            first_missing = held + 1;
        /* the missing file's name: the set's prefix, the number spelt as in its
         * first file, and that file's "-of-N.safetensors" */
        const char *name = mp_path_basename(paths[i]);
        size_t name_prefix = a.prefix_len - (size_t)(name - paths[i]);
        const char *tail = paths[i] + a.prefix_len + 1 + a.no_digits;
        rc = mp_fail(err, MP_ERR_INPUT, dir, NULL,
                     "%llu of the %llu shards of a checkpoint are missing (the first: %.*s-%0*llu%s), and there is no "
                     "model.safetensors.index.json; is a download or copy unfinished?",
                     (unsigned long long)(a.count - held), (unsigned long long)a.count, (int)name_prefix, name,
                     a.no_digits, (unsigned long long)first_missing, tail);
    }
    free(nos);
    return rc;
}

static int open_directory(mp_safetensors *st, const char *dir, mp_error *err)
{
    char *index = mp_path_join(dir, "model.safetensors.index.json");
    if (!index)
        return mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
    if (mp_file_exists(index)) {
        free(st->path);
        st->path = index;
        return open_index(st, index, err);
    }
    free(index);

    DIR *d = opendir(dir);
    if (!d)
        return mp_fail_errno(err, dir, errno, "cannot open directory");
    char **paths = NULL;
    size_t n = 0, cap = 0;
    int rc = MP_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **np = cap <= ST_MAX_SHARDS ? realloc(paths, cap * sizeof *np) : NULL;
            if (!np) {
                rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "too many .safetensors files or out of memory");
                break;
            }
            paths = np;
        }
        if (!(paths[n] = mp_path_join(dir, de->d_name))) {
            rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == MP_OK && n == 0)
        rc = mp_fail(err, MP_ERR_INPUT, dir, NULL, "holds no model.safetensors.index.json and no .safetensors file");
    if (rc == MP_OK) {
        qsort(paths, n, sizeof *paths, cmp_str); /* a deterministic shard order */
        rc = check_shard_sets(dir, paths, n, err);
    }
    if (rc == MP_OK) {
        rc = open_files(st, paths, n, err);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

int mp_st_open(const char *path, mp_safetensors **out, mp_error *err)
{
    *out = NULL;
    mp_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    }
    int rc;
    if (mp_is_directory(path)) {
        rc = open_directory(st, path, err);
    } else if (ends_with(path, ".json")) {
        rc = open_index(st, path, err);
    } else {
        char *p = (char *)path;
        rc = open_files(st, &p, 1, err);
    }
    if (rc) {
        mp_st_close(st);
        return rc;
    }
    *out = st;
    return MP_OK;
}

void mp_st_close(mp_safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->nshards; i++) {
        mp_unmap_file(&st->shards[i].map);
        free(st->shards[i].meta);
    }
    /* a shard that failed to parse after mapping is counted, so unmapped
     * above; its meta array may exist too and was freed with it */
    free(st->shards);
    free(st->tensors);
    arena_free(st->arena);
    free(st->path);
    free(st);
}

/* ---- queries ------------------------------------------------------------------ */

size_t mp_st_count(const mp_safetensors *st)
{
    return st->ntensors;
}

const mp_st_tensor *mp_st_tensor_at(const mp_safetensors *st, size_t i)
{
    return i < st->ntensors ? &st->tensors[i] : NULL;
}

static int cmp_name_key(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const mp_st_tensor *)elem)->name);
}

const mp_st_tensor *mp_st_find(const mp_safetensors *st, const char *name)
{
    return bsearch(name, st->tensors, st->ntensors, sizeof *st->tensors, cmp_name_key);
}

size_t mp_st_shard_count(const mp_safetensors *st)
{
    return st->nshards;
}

const char *mp_st_shard_path(const mp_safetensors *st, size_t i)
{
    return i < st->nshards ? st->shards[i].map.path : NULL;
}

const char *mp_st_path(const mp_safetensors *st)
{
    return st->path;
}

const char *mp_st_metadata_get(const mp_safetensors *st, const char *key)
{
    for (size_t s = 0; s < st->nshards; s++)
        for (size_t i = 0; i < st->shards[s].nmeta; i++)
            if (strcmp(st->shards[s].meta[i].key, key) == 0)
                return st->shards[s].meta[i].value;
    return NULL;
}

/* ---- FP8 block scales ------------------------------------------------------- */

const mp_st_tensor *mp_st_scale_inv_of(const mp_safetensors *st, const mp_st_tensor *t)
{
    char name[MP_ST_MAX_NAME_BYTES + 16];
    snprintf(name, sizeof name, "%s_scale_inv", t->name);
    return mp_st_find(st, name);
}

int mp_st_check_fp8_scale(const mp_safetensors *st, const mp_st_tensor *t, uint32_t block_rows,
                          uint32_t block_cols, mp_error *err)
{
    if (t->dtype != MP_ST_F8_E4M3)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name, "is %s, not F8_E4M3", t->dtype_name);
    if (t->ndim != 2)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "F8_E4M3 tensor is %u-D; block-scaled FP8 weights are 2-D", t->ndim);
    if (block_rows == 0 || block_cols == 0)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "F8_E4M3 weight but no FP8 block size was given (config.json "
                       "quantization_config.weight_block_size)");
    const mp_st_tensor *s = mp_st_scale_inv_of(st, t);
    if (!s)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "F8_E4M3 weight has no companion scale tensor %s_scale_inv", t->name);
    if (s->dtype != MP_ST_F32)
        return mp_fail(err, MP_ERR_INPUT, s->shard_path, s->name, "scale of an F8_E4M3 weight is %s, expected F32",
                       s->dtype_name);
    /* ceil without overflow: rows/cols < 2^64 */
    uint64_t want_r = t->shape[0] / block_rows + (t->shape[0] % block_rows != 0);
    uint64_t want_c = t->shape[1] / block_cols + (t->shape[1] % block_cols != 0);
    if (s->ndim != 2 || s->shape[0] != want_r || s->shape[1] != want_c) {
        char got[256];
        format_shape(s, got, sizeof got);
        return mp_fail(err, MP_ERR_INPUT, s->shard_path, s->name,
                       "scale shape is %s, expected [%" PRIu64 ", %" PRIu64 "] for weight [%" PRIu64 ", %" PRIu64
                       "] in %ux%u blocks",
                       got, want_r, want_c, t->shape[0], t->shape[1], block_rows, block_cols);
    }
    return MP_OK;
}

int mp_st_check_fp8_scales(const mp_safetensors *st, uint32_t block_rows, uint32_t block_cols, mp_error *err)
{
    for (size_t i = 0; i < st->ntensors; i++) {
        if (st->tensors[i].dtype != MP_ST_F8_E4M3)
            continue;
        int rc = mp_st_check_fp8_scale(st, &st->tensors[i], block_rows, block_cols, err);
        if (rc)
            return rc;
    }
    return MP_OK;
}

/* ---- reading rows as f32 ------------------------------------------------------ */

static float load_f32(const uint8_t *p)
{
    uint32_t u;
    memcpy(&u, p, 4);
    return mp_f32_from_bits(u);
}

static uint16_t load_u16(const uint8_t *p)
{
    uint16_t u;
    memcpy(&u, p, 2);
    return u;
}

int mp_st_check_float_dtype(const mp_st_tensor *t, mp_error *err)
{
    if (t->dtype != MP_ST_BF16 && t->dtype != MP_ST_F16 && t->dtype != MP_ST_F32 && t->dtype != MP_ST_F8_E4M3)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "dtype %s cannot be read as floats (BF16, F16, F32 or F8_E4M3 expected)", t->dtype_name);
    return MP_OK;
}

int mp_st_read_rows_f32(const mp_safetensors *st, const mp_st_tensor *t, uint64_t row0, uint64_t nrows, float *out,
                        uint32_t block_rows, uint32_t block_cols, mp_error *err)
{
    int rc = mp_st_check_float_dtype(t, err);
    if (rc)
        return rc;
    if (t->ndim != 1 && t->ndim != 2)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "is %u-D; only 1-D and 2-D tensors can be read as rows", t->ndim);
    uint64_t rows = t->ndim == 1 ? 1 : t->shape[0];
    uint64_t cols = t->ndim == 1 ? t->shape[0] : t->shape[1];
    if (row0 > rows || nrows > rows - row0)
        return mp_fail(err, MP_ERR_INPUT, t->shard_path, t->name,
                       "rows [%" PRIu64 ", +%" PRIu64 ") requested, the tensor has %" PRIu64, row0, nrows, rows);
    const uint8_t *base = t->data;
    size_t esize = mp_st_dtype_size(t->dtype);
    if (nrows == 0 || cols == 0)
        return t->dtype == MP_ST_F8_E4M3 ? mp_st_check_fp8_scale(st, t, block_rows, block_cols, err) : MP_OK;

    if (t->dtype == MP_ST_F8_E4M3) {
        int rc = mp_st_check_fp8_scale(st, t, block_rows, block_cols, err);
        if (rc)
            return rc;
        const mp_st_tensor *s = mp_st_scale_inv_of(st, t);
        const uint8_t *sbase = s->data;
        uint64_t scols = s->shape[1];
        for (uint64_t r = row0; r < row0 + nrows; r++) {
            const uint8_t *q = base + r * cols;
            float *o = out + (r - row0) * cols;
            const uint8_t *srow = sbase + (r / block_rows) * scols * 4;
            for (uint64_t c0 = 0; c0 < cols; c0 += block_cols) {
                float scale = load_f32(srow + (c0 / block_cols) * 4);
                uint64_t c1 = cols - c0 < block_cols ? cols : c0 + block_cols;
                for (uint64_t c = c0; c < c1; c++)
                    o[c] = mp_fp8_e4m3_to_f32(q[c]) * scale;
            }
        }
        return MP_OK;
    }

    for (uint64_t r = row0; r < row0 + nrows; r++) {
        const uint8_t *p = base + r * cols * esize;
        float *o = out + (r - row0) * cols;
        switch (t->dtype) {
        case MP_ST_BF16:
            for (uint64_t c = 0; c < cols; c++)
                o[c] = mp_bf16_to_f32(load_u16(p + 2 * c));
            break;
        case MP_ST_F16:
            for (uint64_t c = 0; c < cols; c++)
                o[c] = mp_f16_to_f32(load_u16(p + 2 * c));
            break;
        default: /* F32 */
            memcpy(o, p, cols * 4);
            break;
        }
    }
    return MP_OK;
}
