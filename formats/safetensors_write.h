/* safetensors_write: a streaming writer for the safetensors format.
 *
 * File layout (as the reference implementation writes it): an 8-byte
 * little-endian header length N, N bytes of compact JSON padded with spaces to
 * a multiple of 8, then the tensors' bytes back to back with no gaps, each at
 * its header "data_offsets" relative to the end of the header.
 *
 * Use:
 *   mp_st_writer_open(&w, path)              nothing is written yet
 *   mp_st_writer_set_metadata(w, k, v) ...    optional "__metadata__" strings
 *   mp_st_writer_add(w, name, dtype, shape)   every tensor, in file order
 *   mp_st_writer_begin(w)                     header computed and written
 *   mp_st_writer_write(w, i, off, buf, n)     any number of times, any order,
 *                                             from any thread, disjoint ranges
 *   (or mp_st_writer_append(w, buf, n)        the data in file order, in chunks)
 *   mp_st_writer_commit(w)                    checks every byte was written,
 *                                             fsyncs, renames FILE.partial
 *   (or mp_st_writer_abort(w) at any point: removes FILE.partial)
 * Output goes to FILE.partial until commit (mp_outfile), so an interrupted run
 * never leaves a truncated file under the final name.
 *
 * The writer keeps tensors in the order given. The reference implementation
 * sorts them by dtype (widest kind first, see mp_stw_reference_cmp) and then
 * by name; a caller that wants byte-identical files sorts the same way. */
#ifndef MP_SAFETENSORS_WRITE_H
#define MP_SAFETENSORS_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"

/* The dtypes a writer accepts, listed in the reference implementation's enum
 * order (which its sort uses). */
typedef enum {
    MP_STW_BOOL = 0,
    MP_STW_U8,
    MP_STW_I8,
    MP_STW_F8_E5M2,
    MP_STW_F8_E4M3,
    MP_STW_I16,
    MP_STW_U16,
    MP_STW_F16,
    MP_STW_BF16,
    MP_STW_I32,
    MP_STW_U32,
    MP_STW_F32,
    MP_STW_F64,
    MP_STW_I64,
    MP_STW_U64,
    MP_STW_DTYPE_COUNT
} mp_stw_dtype;

/* "BF16", "F8_E4M3", ... as written in headers; NULL for an invalid value. */
const char *mp_stw_dtype_name(mp_stw_dtype dtype);
/* Bytes per element (0 for an invalid value). */
size_t mp_stw_dtype_size(mp_stw_dtype dtype);
/* Parses a header dtype name; false when unknown. */
bool mp_stw_dtype_from_name(const char *name, mp_stw_dtype *out);

/* Orders two tensors as the reference serializer lays them out: higher dtype
 * first, then names in byte order. Returns <0, 0, >0 like strcmp. */
int mp_stw_reference_cmp(mp_stw_dtype a_dtype, const char *a_name, mp_stw_dtype b_dtype, const char *b_name);

typedef struct mp_st_writer mp_st_writer;

enum { MP_STW_MAX_DIMS = 8 };

/* Prepares a writer for `path` (the file itself is created by begin). */
int mp_st_writer_open(mp_st_writer **out, const char *path, mp_error *err);

/* Adds a "__metadata__" entry; keys are unique. Only before begin. */
int mp_st_writer_set_metadata(mp_st_writer *w, const char *key, const char *value, mp_error *err);

/* Declares the next tensor. Names are unique, non-empty, not "__metadata__".
 * A dimension may be 0 (an empty tensor). Only before begin. On success
 * *index (if non-NULL) is the tensor's index for mp_st_writer_write. */
int mp_st_writer_add(mp_st_writer *w, const char *name, mp_stw_dtype dtype, const uint64_t *shape, size_t ndim,
                     size_t *index, mp_error *err);

/* Computes the header, creates FILE.partial and writes the header. */
int mp_st_writer_begin(mp_st_writer *w, mp_error *err);

size_t mp_st_writer_count(const mp_st_writer *w);
/* Byte size of tensor `index`'s data (0 for an invalid index). */
uint64_t mp_st_writer_tensor_bytes(const mp_st_writer *w, size_t index);
/* Absolute file offset of tensor `index`'s first byte (valid after begin). */
uint64_t mp_st_writer_tensor_offset(const mp_st_writer *w, size_t index);
/* Total file size once complete (valid after begin). */
uint64_t mp_st_writer_file_size(const mp_st_writer *w);

/* Writes n bytes of tensor `index` starting `offset` bytes into it. Thread-safe
 * for disjoint ranges; a range outside the tensor is refused. */
int mp_st_writer_write(mp_st_writer *w, size_t index, uint64_t offset, const void *buf, size_t n, mp_error *err);

/* Sequential alternative to mp_st_writer_write: appends n bytes of data in
 * file order, crossing from one tensor to the next as each fills up. Not
 * for use from several threads at once; do not mix with writes to the
 * ranges it covers. Refuses data beyond the last tensor. */
int mp_st_writer_append(mp_st_writer *w, const void *buf, size_t n, mp_error *err);

/* Checks that every tensor received exactly its byte count, then fsyncs and
 * renames FILE.partial to FILE. The writer is freed whatever the outcome
 * (on failure FILE.partial is removed). */
int mp_st_writer_commit(mp_st_writer *w, mp_error *err);

/* Removes FILE.partial (if created) and frees the writer. NULL is fine. */
void mp_st_writer_abort(mp_st_writer *w);

/* Writes a Hugging Face `model.safetensors.index.json`:
 *   {"metadata": {"total_size": N}, "weight_map": {tensor: file, ...}}
 * indented by 2 with a final newline, entries in the order given (Hugging
 * Face's save_pretrained sorts them by tensor name). Through mp_outfile. */
typedef struct mp_st_index_entry {
    const char *tensor;
    const char *file;
} mp_st_index_entry;

int mp_st_write_index(const char *path, uint64_t total_size, const mp_st_index_entry *entries, size_t count,
                      mp_error *err);

#endif
