/* gguf: a reader for GGUF files (versions 2 and 3), including models split
 * by gguf-split into NAME-0000K-of-0000N.gguf parts.
 *
 * The files are mapped read-only; metadata values and tensor data are read
 * in place. Everything in the file is treated as hostile: counts, lengths,
 * shapes and offsets are bounds-checked at open, so that after a successful
 * mp_gguf_open every tensor's [data, data + nbytes) lies inside its mapped
 * file and every string and array lies inside the header.
 *
 * Decisions (see docs/GGUF.md):
 * - Arrays of arrays are rejected at open (ggml cannot read them either and
 *   no converter writes them).
 * - A tensor type id that is not in the ggml type table (gguf_quants.h) is
 *   an error at open, naming the tensor and the id: without its block size
 *   the tensor's extent, and so the file's layout, cannot be checked. A type
 *   that is known but cannot be dequantized opens fine and fails only when
 *   its data is dequantized.
 * - Duplicate keys and duplicate tensor names (also across split parts) are
 *   errors.
 * - In a split model the metadata of part 1 is the model's metadata; the
 *   other parts contribute only tensors. */
#ifndef MP_GGUF_H
#define MP_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_file.h"

/* Metadata value types, numbered as in the file. */
typedef enum mp_gguf_vtype {
    MP_GGUF_UINT8 = 0,
    MP_GGUF_INT8 = 1,
    MP_GGUF_UINT16 = 2,
    MP_GGUF_INT16 = 3,
    MP_GGUF_UINT32 = 4,
    MP_GGUF_INT32 = 5,
    MP_GGUF_FLOAT32 = 6,
    MP_GGUF_BOOL = 7,
    MP_GGUF_STRING = 8,
    MP_GGUF_ARRAY = 9,
    MP_GGUF_UINT64 = 10,
    MP_GGUF_INT64 = 11,
    MP_GGUF_FLOAT64 = 12,
    MP_GGUF_VTYPE_COUNT
} mp_gguf_vtype;

typedef struct mp_gguf_kv {
    char *key;               /* NUL-terminated copy */
    mp_gguf_vtype type;
    mp_gguf_vtype elem_type; /* ARRAY: the elements' type */
    uint64_t count;          /* ARRAY: element count; STRING: length in bytes */
    const uint8_t *value;    /* in the mapping: the scalar, the string's bytes
                                or the first array element */
    char *str;               /* STRING: NUL-terminated copy */
    uint64_t *str_offsets;   /* ARRAY of STRING: each element's offset from
                                `value` (its u64 length prefix) */
} mp_gguf_kv;

#define MP_GGUF_MAX_DIMS 4

typedef struct mp_gguf_tensor {
    char *name;                     /* NUL-terminated copy */
    uint32_t n_dims;                /* 0..4 (0: a scalar) */
    uint64_t ne[MP_GGUF_MAX_DIMS];  /* ne[0] is the contiguous (innermost)
                                       dimension; unused dims are 1 */
    uint32_t type;                  /* ggml type id (mp_ggml_type) */
    uint64_t n_elements;
    uint64_t nbytes;
    uint64_t offset;                /* from the start of its file's data section */
    const uint8_t *data;            /* in the mapping of file `file_index` */
    uint32_t file_index;            /* which split part (0 for a single file) */
} mp_gguf_tensor;

typedef struct mp_gguf_file {
    mp_mapped_file map;
    uint32_t version;
    uint64_t alignment;   /* general.alignment, default 32 */
    uint64_t data_offset; /* start of the data section in the file */
} mp_gguf_file;

typedef struct mp_gguf {
    uint32_t n_files; /* split parts, in split order */
    mp_gguf_file *files;
    uint64_t n_kv;
    mp_gguf_kv *kv; /* part 1's metadata, in file order */
    uint64_t n_tensors;
    mp_gguf_tensor *tensors; /* part 1's tensors, then part 2's, ... */
    uint64_t *by_name;       /* tensor indices sorted by name */
} mp_gguf;

/* Opens a GGUF file. When it is one part of a split model (its split.count
 * is above 1), every part is opened, whichever part `path` names. On failure
 * *g is left empty (mp_gguf_close is then a no-op). */
int mp_gguf_open(const char *path, mp_gguf *g, mp_error *err);
void mp_gguf_close(mp_gguf *g);

/* The path of part 1 (for messages). */
const char *mp_gguf_path(const mp_gguf *g);

/* ---- metadata ---------------------------------------------------------- */

/* The entry for `key`, or NULL when absent. */
const mp_gguf_kv *mp_gguf_find_kv(const mp_gguf *g, const char *key);
const char *mp_gguf_vtype_name(uint32_t type);

/* Typed getters. Each fails with MP_ERR_INPUT, naming the file and key, when
 * the key is absent, has an incompatible type or a value out of range.
 * Integer getters accept every integer type whose value fits (converters
 * write the same key as u32, i32 or u64); the float getters also accept
 * integers; get_str returns part of *g (valid until mp_gguf_close). */
int mp_gguf_get_u32(const mp_gguf *g, const char *key, uint32_t *out, mp_error *err);
int mp_gguf_get_u64(const mp_gguf *g, const char *key, uint64_t *out, mp_error *err);
int mp_gguf_get_i64(const mp_gguf *g, const char *key, int64_t *out, mp_error *err);
int mp_gguf_get_f32(const mp_gguf *g, const char *key, float *out, mp_error *err);
int mp_gguf_get_f64(const mp_gguf *g, const char *key, double *out, mp_error *err);
int mp_gguf_get_bool(const mp_gguf *g, const char *key, bool *out, mp_error *err);
int mp_gguf_get_str(const mp_gguf *g, const char *key, const char **out, mp_error *err);

/* The same conversions on an entry (or an array element, below). */
int mp_gguf_kv_u64(const mp_gguf *g, const mp_gguf_kv *kv, uint64_t *out, mp_error *err);
int mp_gguf_kv_i64(const mp_gguf *g, const mp_gguf_kv *kv, int64_t *out, mp_error *err);
int mp_gguf_kv_f64(const mp_gguf *g, const mp_gguf_kv *kv, double *out, mp_error *err);

/* Arrays: mp_gguf_get_array finds `key` and checks that it is an array
 * (element type and count are in the entry). Element getters check the
 * index and convert like the scalar getters. */
int mp_gguf_get_array(const mp_gguf *g, const char *key, const mp_gguf_kv **out, mp_error *err);
int mp_gguf_arr_i64(const mp_gguf *g, const mp_gguf_kv *arr, uint64_t i, int64_t *out, mp_error *err);
int mp_gguf_arr_u64(const mp_gguf *g, const mp_gguf_kv *arr, uint64_t i, uint64_t *out, mp_error *err);
int mp_gguf_arr_f64(const mp_gguf *g, const mp_gguf_kv *arr, uint64_t i, double *out, mp_error *err);
/* A string element: *s points into the mapping, is NOT NUL-terminated and is
 * *len bytes long. */
int mp_gguf_arr_str(const mp_gguf *g, const mp_gguf_kv *arr, uint64_t i, const char **s, uint64_t *len,
                    mp_error *err);

/* ---- tensors ----------------------------------------------------------- */

uint64_t mp_gguf_tensor_count(const mp_gguf *g);
const mp_gguf_tensor *mp_gguf_tensor_at(const mp_gguf *g, uint64_t i);
/* NULL when there is no tensor of that name. */
const mp_gguf_tensor *mp_gguf_find_tensor(const mp_gguf *g, const char *name);

/* The PyTorch shape of a tensor: ggml's ne reversed (a [out, in] matrix has
 * ne = [in, out]; the 3-D expert tensors have ne = [in, out, n_expert], so
 * [n_expert, out, in]). Writes n_dims values, returns n_dims. */
uint32_t mp_gguf_tensor_shape_torch(const mp_gguf_tensor *t, uint64_t shape[MP_GGUF_MAX_DIMS]);

/* Elements per row (ne[0]) and rows (ne[1] * ne[2] * ne[3]). */
static inline uint64_t mp_gguf_tensor_rows(const mp_gguf_tensor *t)
{
    return t->n_elements / t->ne[0];
}

/* Dequantizes rows [row0, row0 + n_rows) (of ne[0] elements each) to f32 in
 * dst. Errors name the file and the tensor (unsupported type, rows out of
 * range). */
int mp_gguf_tensor_dequantize_rows(const mp_gguf *g, const mp_gguf_tensor *t, uint64_t row0, uint64_t n_rows,
                                   float *dst, mp_error *err);

#endif
