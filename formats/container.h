/* container: the .moepack file — one little-endian, versioned, mmap-able file
 * holding a converted model. docs/FORMAT.md is the specification; this is
 * its reader and writer.
 *
 * Reading never copies or touches tensor data: mp_container_open checks the
 * header, directory, string table, metadata and tokenizer blob (checksums and
 * bounds) and returns views into the mapping. Tensor data checksums are
 * checked only by mp_container_verify. */
#ifndef MP_CONTAINER_H
#define MP_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_desc.h"
#include "mp_error.h"
#include "mp_file.h"

#define MP_CONTAINER_MAGIC "MOEPACK\0"
#define MP_CONTAINER_VERSION_MAJOR 1
#define MP_CONTAINER_VERSION_MINOR 0
#define MP_CONTAINER_HEADER_SIZE 256u   /* bytes of the fixed header struct */
#define MP_CONTAINER_HEADER_REGION 4096u /* the header is padded to this */
#define MP_CONTAINER_DIR_ENTRY_SIZE 128u

typedef enum {
    MP_SECTION_HOST = 0, /* host memory, read by the CPU in every mode (token embedding) */
    MP_SECTION_GPU = 1,  /* uploaded once to the GPU in hybrid mode; read in place by the CPU otherwise */
    MP_SECTION_CPU = 2,  /* routed experts, read in place by the CPU, NUMA-bindable */
    MP_SECTION_COUNT = 3
} mp_section;

typedef enum {
    MP_LAYOUT_ROW_MAJOR = 1,
    MP_LAYOUT_HEADS = 2,
    MP_LAYOUT_AMX_INT8 = 3,
    MP_LAYOUT_AMX_BF16 = 4,
    MP_LAYOUT_GPU_INT4 = 5,
} mp_layout;

typedef enum {
    MP_QUANT_F32 = 1,
    MP_QUANT_BF16 = 2,
    MP_QUANT_F16 = 3,
    MP_QUANT_INT8 = 4,      /* symmetric, f32 scale per (K-group, row) + int32 row sums */
    MP_QUANT_INT4_SYM = 5,  /* w = (q - 8) * scale, f16 scale per 128 along K */
    MP_QUANT_INT4_ASYM = 6, /* w = q * scale + min, f16 scale and min per 128 along K */
} mp_quant;

/* Alignments (bytes). */
#define MP_ALIGN_SECTION_HOST 4096u
#define MP_ALIGN_SECTION_GPU 4096u
#define MP_ALIGN_SECTION_CPU (2u << 20) /* huge pages */
#define MP_ALIGN_TENSOR_HOST 256u
#define MP_ALIGN_TENSOR_GPU 256u
#define MP_ALIGN_TENSOR_CPU 4096u        /* so NUMA slices can be mbind()-ed */
#define MP_ALIGN_CPU_LAYER (2u << 20)    /* each layer's experts start on a huge page */
#define MP_ALIGN_SCALE 64u

/* One tensor of the container (the in-memory form of a directory entry). */
typedef struct mp_ctensor {
    const char *name; /* NUL-terminated, points into the reader's own copy */
    mp_role role;
    int32_t layer;  /* -1: global */
    int32_t expert; /* -1: not a routed expert */
    mp_layout layout;
    mp_quant quant;
    mp_section section;
    uint32_t ndim;        /* 1..3 */
    uint64_t shape[3];    /* logical: [N, K] for matrices; [H, R, C] for heads */
    uint64_t padded[3];   /* as stored: [Np, Kp_total] for packed layouts */
    uint32_t group_width; /* Kg of amx layouts, 128 for gpu_int4, 0 otherwise */
    uint64_t data_offset, data_size;   /* absolute file offsets */
    uint64_t scale_offset, scale_size; /* 0, 0 when there is no scale region */
    uint64_t checksum;                 /* XXH3-64 of data bytes then scale bytes */
    /* Views into the mapping (reader only; NULL in writer plans). */
    const uint8_t *data;
    const uint8_t *scale;
} mp_ctensor;

typedef struct mp_container_header {
    uint64_t file_size;
    uint32_t version_major, version_minor;
    uint64_t n_tensors;
    uint64_t dir_offset, dir_size;
    uint64_t strings_offset, strings_size;
    uint64_t meta_offset, meta_size;
    uint64_t tok_offset, tok_size, tok_raw_size;
    uint64_t section_offset[MP_SECTION_COUNT], section_size[MP_SECTION_COUNT];
    uint64_t dir_checksum, meta_checksum, tok_checksum;
} mp_container_header;

typedef struct mp_container {
    mp_mapped_file file;
    mp_container_header hdr;
    mp_ctensor *tensors; /* hdr.n_tensors entries */
    char *strings;       /* owned, NUL-terminated names */
    char *meta_json;     /* owned, NUL-terminated copy of the metadata JSON */
    void *meta;          /* json_t*, parsed metadata */
    mp_model_desc desc;  /* from meta.model */
} mp_container;

/* Opens and maps `path`, validating header, directory, strings, metadata and
 * tokenizer blob. A container from a newer major version is refused with a
 * message that says so. A checksum that does not match is MP_ERR_CHECK (a
 * check that ran and failed, as in mp_container_verify); every other
 * refusal is MP_ERR_INPUT. */
int mp_container_open(const char *path, mp_container **out, mp_error *err);
void mp_container_close(mp_container *c);

/* First tensor with this role, layer and expert (-1 to match "none"), or NULL. */
const mp_ctensor *mp_container_find(const mp_container *c, mp_role role, int32_t layer, int32_t expert);
const mp_ctensor *mp_container_find_name(const mp_container *c, const char *name);

/* Recomputes every tensor checksum with `threads` threads (0 = all cores);
 * MP_ERR_CHECK naming the first bad tensor (in directory order). */
int mp_container_verify(const mp_container *c, int threads, mp_error *err);
/* Checks the given tensors only (used by run --verify on what it will read). */
int mp_container_verify_tensor(const mp_container *c, const mp_ctensor *t, mp_error *err);

/* The decompressed tokenizer blob (malloc'd). */
int mp_container_tokenizer_blob(const mp_container *c, uint8_t **blob, size_t *len, mp_error *err);

const char *mp_layout_name(mp_layout l);
const char *mp_quant_name(mp_quant q);
const char *mp_section_name(mp_section s);

/* ---- writing --------------------------------------------------------------
 * A writer works from a complete plan: every tensor's metadata and sizes are
 * known before any data is written, so every offset is fixed up front, data
 * can be written in any order (and by several threads), and a resumed
 * conversion reproduces the same file. */

typedef struct mp_container_plan {
    mp_ctensor *tensors; /* data_offset/scale_offset/checksum filled by mp_container_plan_layout */
    size_t n_tensors, cap;
    uint64_t section_offset[MP_SECTION_COUNT], section_size[MP_SECTION_COUNT];
    uint64_t data_end; /* end of the last section */
    uint64_t strings_size, dir_offset, strings_offset;
} mp_container_plan;

/* Appends a tensor spec (name copied). data_size/scale_size must be set;
 * offsets are assigned by mp_container_plan_layout in the order tensors were
 * added within each section. */
int mp_container_plan_add(mp_container_plan *p, const mp_ctensor *spec, mp_error *err);
/* Assigns offsets: header region, directory, strings, then HOST, GPU and CPU
 * sections (CPU tensors of a new layer start on MP_ALIGN_CPU_LAYER). */
int mp_container_plan_layout(mp_container_plan *p, mp_error *err);
void mp_container_plan_free(mp_container_plan *p);

/* Finishes a file whose tensor data is already written at the planned
 * offsets: appends metadata JSON and the zstd-compressed tokenizer blob after
 * the data, then writes directory, strings and finally the header. The
 * caller commits the mp_outfile afterwards. */
int mp_container_write_tail(mp_outfile *out, const mp_container_plan *p, const char *meta_json,
                            const uint8_t *tok_blob, size_t tok_len, mp_error *err);

#endif
