/* safetensors: a zero-copy reader for Hugging Face safetensors checkpoints.
 *
 * Opens one .safetensors file, a sharded checkpoint through its
 * model.safetensors.index.json, or a model directory holding either. Every
 * shard is mapped read-only once; a tensor is a view (pointer + size) into its
 * shard's mapping, valid until mp_st_close.
 *
 * Every header is treated as hostile and fully checked at open: header length,
 * JSON syntax (no duplicate keys), the type of every field, shapes (at most 8
 * dims, element count and byte size computed with overflow checks), offsets
 * inside the data area, byte size == elements x dtype size, no two tensors
 * overlapping and, as the safetensors specification demands, no unindexed
 * bytes in the data area. Index files: weight_map must be an object of plain
 * shard file names (no '/', no "..") that exist next to the index, and every
 * tensor it names must be in its shard.
 *
 * Dtypes: BF16, F16, F32, F8_E4M3, I8, U8, I32, I64 are supported. Other
 * dtypes of the safetensors specification with a whole-byte size (F64, I16,
 * U16, U32, U64, BOOL, F8_E5M2, F8_E8M0) are tolerated at open, with their
 * sizes checked, as MP_ST_OTHER; a dtype string the specification does not
 * know is also tolerated (its bytes are bounds- and overlap-checked, its size
 * cannot be) as MP_ST_OTHER. Reading an MP_ST_OTHER tensor through the helpers
 * below fails with a message naming the tensor and its dtype, so a checkpoint
 * with an odd extra tensor nobody uses still opens.
 *
 * Tensor data is NOT aligned in general (the data area starts right after a
 * header of any length): read elements through memcpy or mp_st_read_rows_f32. */
#ifndef MP_SAFETENSORS_H
#define MP_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"

#define MP_ST_MAX_DIMS 8
/* Largest header the reader accepts, as the reference implementation does. */
#define MP_ST_MAX_HEADER_BYTES 100000000ull
/* Longest tensor name accepted (real names are < 100 bytes). */
#define MP_ST_MAX_NAME_BYTES 1024

typedef enum {
    MP_ST_BF16 = 0,
    MP_ST_F16,
    MP_ST_F32,
    MP_ST_F8_E4M3,
    MP_ST_I8,
    MP_ST_U8,
    MP_ST_I32,
    MP_ST_I64,
    MP_ST_OTHER, /* see above: present, bounds-checked, not readable */
} mp_st_dtype;

typedef struct mp_st_tensor {
    const char *name;
    mp_st_dtype dtype;
    const char *dtype_name; /* as written in the file ("BF16", "F64", ...) */
    uint32_t ndim;
    uint64_t shape[MP_ST_MAX_DIMS];
    uint64_t nelems;      /* product of shape (1 for a 0-d tensor) */
    const void *data;     /* into the shard's mapping; NULL when nbytes == 0 */
    uint64_t nbytes;
    uint64_t file_offset; /* absolute offset of the data in its shard */
    const char *shard_path;
    uint32_t shard; /* index of the shard, see mp_st_shard_path */
} mp_st_tensor;

typedef struct mp_safetensors mp_safetensors;

/* Opens `path`: a .safetensors file, a *.index.json, or a directory (its
 * model.safetensors.index.json when present, otherwise every *.safetensors
 * file in it, whose tensor names must then be distinct). */
int mp_st_open(const char *path, mp_safetensors **out, mp_error *err);
void mp_st_close(mp_safetensors *st);

/* Tensors are numbered 0..count-1 in strcmp order of their names. With an
 * index, exactly the tensors its weight_map names are visible (a tensor a
 * shard holds but the index does not name is checked, then ignored, as
 * Hugging Face's loader ignores it). */
size_t mp_st_count(const mp_safetensors *st);
const mp_st_tensor *mp_st_tensor_at(const mp_safetensors *st, size_t i);
const mp_st_tensor *mp_st_find(const mp_safetensors *st, const char *name);

size_t mp_st_shard_count(const mp_safetensors *st);
const char *mp_st_shard_path(const mp_safetensors *st, size_t i);
/* The file mp_st_open was given (index or single file), for messages. */
const char *mp_st_path(const mp_safetensors *st);

/* A "__metadata__" string value; with several shards, the first shard (in
 * shard order) that has the key wins. NULL when absent. */
const char *mp_st_metadata_get(const mp_safetensors *st, const char *key);

const char *mp_st_dtype_name(mp_st_dtype dtype);
/* Bytes per element; 0 for MP_ST_OTHER. */
size_t mp_st_dtype_size(mp_st_dtype dtype);

/* The FP8 companion "<name>_scale_inv" of tensor t, or NULL. */
const mp_st_tensor *mp_st_scale_inv_of(const mp_safetensors *st, const mp_st_tensor *t);

/* Checks that the FP8 tensor t has a valid companion scale: F32 of shape
 * [ceil(rows/block_rows), ceil(cols/block_cols)]. */
int mp_st_check_fp8_scale(const mp_safetensors *st, const mp_st_tensor *t, uint32_t block_rows,
                          uint32_t block_cols, mp_error *err);
/* The same for every F8_E4M3 tensor of the checkpoint (run it once before a
 * long conversion so a broken scale is found at once). */
int mp_st_check_fp8_scales(const mp_safetensors *st, uint32_t block_rows, uint32_t block_cols, mp_error *err);

/* MP_OK when t's dtype is one mp_st_read_rows_f32 reads (BF16, F16, F32,
 * F8_E4M3); else an error naming the shard, tensor and dtype. */
int mp_st_check_float_dtype(const mp_st_tensor *t, mp_error *err);

/* Reads rows [row0, row0 + nrows) of a 1-D (one row) or 2-D BF16/F16/F32 or
 * block-scaled F8_E4M3 tensor as f32 into out (nrows x cols floats). F8
 * values are dequantized as fp8_to_f32(q) * scale_inv[r / block_rows][c /
 * block_cols] with the companion "<name>_scale_inv" (which may live in another
 * shard); block_rows/block_cols come from config.json's
 * quantization_config.weight_block_size and are ignored for other dtypes. */
int mp_st_read_rows_f32(const mp_safetensors *st, const mp_st_tensor *t, uint64_t row0, uint64_t nrows, float *out,
                        uint32_t block_rows, uint32_t block_cols, mp_error *err);

#endif
