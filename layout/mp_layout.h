/* mp_layout: the packed weight layouts of docs/LAYOUTS.md (amx_int8,
 * amx_bf16, gpu_int4), their sizes, packers and index formulas, and the split
 * of routed experts into NUMA slices.
 *
 * A layout struct is filled once, with overflow-checked arithmetic, from the
 * (possibly hostile) shape recorded in a container; afterwards every size and
 * offset derived from it fits in uint64_t. A view adds the pointers to the
 * packed bytes; kernels read views.
 *
 * Packers are streaming-friendly: they write whole 16-row blocks of a matrix
 * (rows [n0, n1), n0 a multiple of 16, n1 a multiple of 16 or N) into the
 * caller's buffer for the whole matrix, touch no other bytes and keep no state,
 * so a converter can pack one block of rows at a time. */
#ifndef MP_LAYOUT_H
#define MP_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_quant.h"

/* Largest N or K accepted (a single expert, embedding or lm_head is far below). */
#define MP_LAYOUT_MAX_DIM (1u << 28)
/* Largest K-group width of amx_int8: int32 accumulation of 127*127 products
 * stays exact well past this (and u8*s8 sums, which wrap, are corrected). */
#define MP_AMX_INT8_MAX_GROUP 65536u

/* ---- amx_int8 (layout id 3) ----------------------------------------------- */
typedef struct mp_amx_int8_layout {
    uint32_t n, k, kg;     /* logical shape; group width (kg >= k: one group) */
    uint32_t groups;       /* G = ceil(k / kg) */
    uint32_t np;           /* round_up(n, 16) */
    uint32_t kp_last;      /* round_up(width of the last group, 64) */
    uint64_t kp;           /* (G-1)*kg + kp_last: padded activation row width */
    uint64_t data_bytes;   /* np * kp */
    uint64_t scale_offset; /* f32 [G][np], 64-aligned after the data */
    uint64_t scale_bytes;
    uint64_t wsum_offset; /* int32 [G][np], right after the scales */
    uint64_t wsum_bytes;
    uint64_t total_bytes;
} mp_amx_int8_layout;

int mp_amx_int8_layout_init(uint64_t n, uint64_t k, uint64_t kg, mp_amx_int8_layout *out, mp_error *err);

/* Padded width of group g. */
static inline uint32_t mp_amx_int8_group_kp(const mp_amx_int8_layout *l, uint32_t g)
{
    return g + 1 < l->groups ? l->kg : l->kp_last;
}

typedef struct mp_amx_int8_view {
    mp_amx_int8_layout lay;
    const int8_t *data;   /* group 0, tile (0, 0) */
    const float *scale;   /* [G][np] */
    const int32_t *wsum;  /* [G][np] */
} mp_amx_int8_view;

/* A view of one packed matrix laid out as lay says from `base` on. */
void mp_amx_int8_view_init(const mp_amx_int8_layout *lay, const void *base, mp_amx_int8_view *out);
/* The K-groups [g0, g1) of a matrix as a matrix of its own (a down
 * projection's NUMA slices): same n, k = the groups' width. */
int mp_amx_int8_view_groups(const mp_amx_int8_view *full, uint32_t g0, uint32_t g1, mp_amx_int8_view *out,
                            mp_error *err);
/* Rows [n0, n1) of a one-group matrix as a matrix of its own (gate/up NUMA
 * slices); n0 % 16 == 0 and (n1 % 16 == 0 or n1 == n). */
int mp_amx_int8_view_rows(const mp_amx_int8_view *full, uint32_t n0, uint32_t n1, mp_amx_int8_view *out,
                          mp_error *err);

/* Packs quantized rows [n0, n1): row r is q[(r-n0)*ldq + k] (k values) with
 * scales scale[(r-n0)*G + g]; wsum is computed here. */
int mp_amx_int8_pack_rows(const mp_amx_int8_layout *lay, uint32_t n0, uint32_t n1, const int8_t *q, size_t ldq,
                          const float *scale, void *out, uint64_t out_size, mp_error *err);
/* Quantizes (mp_quant_int8_row) and packs f32 rows [n0, n1) (row r at
 * w[(r-n0)*ldw]). Allocates a small temporary for one 16-row block. */
int mp_amx_int8_quantize_pack_rows(const mp_amx_int8_layout *lay, uint32_t n0, uint32_t n1, const float *w,
                                   size_t ldw, void *out, uint64_t out_size, mp_error *err);

/* The doc's element formula, written out independently of the packer. */
uint64_t mp_amx_int8_offset(const mp_amx_int8_layout *lay, uint32_t n, uint32_t k);

/* ---- amx_bf16 (layout id 4) ----------------------------------------------- */
typedef struct mp_amx_bf16_layout {
    uint32_t n, k, kg; /* kg a multiple of 32 */
    uint32_t groups, np, kp_last;
    uint64_t kp;         /* (G-1)*kg + kp_last, in elements */
    uint64_t data_bytes; /* np * kp * 2 */
    uint64_t total_bytes;
} mp_amx_bf16_layout;

int mp_amx_bf16_layout_init(uint64_t n, uint64_t k, uint64_t kg, mp_amx_bf16_layout *out, mp_error *err);

static inline uint32_t mp_amx_bf16_group_kp(const mp_amx_bf16_layout *l, uint32_t g)
{
    return g + 1 < l->groups ? l->kg : l->kp_last;
}

typedef struct mp_amx_bf16_view {
    mp_amx_bf16_layout lay;
    const uint16_t *data;
} mp_amx_bf16_view;

void mp_amx_bf16_view_init(const mp_amx_bf16_layout *lay, const void *base, mp_amx_bf16_view *out);
/* Packs bf16 rows [n0, n1): row r is w[(r-n0)*ldw + k]. */
int mp_amx_bf16_pack_rows(const mp_amx_bf16_layout *lay, uint32_t n0, uint32_t n1, const uint16_t *w, size_t ldw,
                          void *out, uint64_t out_size, mp_error *err);
uint64_t mp_amx_bf16_offset(const mp_amx_bf16_layout *lay, uint32_t n, uint32_t k);

/* ---- gpu_int4 (layout id 5) ----------------------------------------------- */
typedef struct mp_gpu_int4_layout {
    uint32_t n, k;
    mp_int4_scheme scheme;
    uint32_t np, kp;    /* round_up(n, 16), round_up(k, 128) */
    uint32_t groups;    /* kp / 128 */
    uint64_t row_bytes; /* kp / 2 */
    uint64_t data_bytes;
    uint64_t scale_offset; /* f16 [np][groups], 64-aligned after the data */
    uint64_t scale_bytes;
    uint64_t min_offset; /* asym: f16 [np][groups] right after the scales; else 0 */
    uint64_t min_bytes;
    uint64_t total_bytes;
} mp_gpu_int4_layout;

int mp_gpu_int4_layout_init(uint64_t n, uint64_t k, mp_int4_scheme scheme, mp_gpu_int4_layout *out, mp_error *err);

typedef struct mp_gpu_int4_view {
    mp_gpu_int4_layout lay;
    const uint8_t *data;
    const uint16_t *scale; /* [np][groups] */
    const uint16_t *min;   /* [np][groups], NULL for sym */
} mp_gpu_int4_view;

void mp_gpu_int4_view_init(const mp_gpu_int4_layout *lay, const void *base, mp_gpu_int4_view *out);
/* Packs rows [n0, n1) (any n0 <= n1 <= n; n1 == n also zero-fills the rows
 * up to np): q[(r-n0)*ldq + k] in [0, 15], scale/min [(r-n0)*groups + g]. */
int mp_gpu_int4_pack_rows(const mp_gpu_int4_layout *lay, uint32_t n0, uint32_t n1, const uint8_t *q, size_t ldq,
                          const uint16_t *scale, const uint16_t *min, void *out, uint64_t out_size, mp_error *err);
/* Quantizes (mp_quant_int4_row with `fit`) and packs f32 rows [n0, n1). */
int mp_gpu_int4_quantize_pack_rows(const mp_gpu_int4_layout *lay, mp_int4_fit fit, uint32_t n0, uint32_t n1,
                                   const float *w, size_t ldw, void *out, uint64_t out_size, mp_error *err);
/* Byte holding q(n, k) and the shift (0 or 4) of its nibble. */
uint64_t mp_gpu_int4_byte(const mp_gpu_int4_layout *lay, uint32_t n, uint32_t k);
static inline unsigned mp_gpu_int4_shift(uint32_t k)
{
    return (k & 1u) ? 4u : 0u;
}

/* ---- routed experts split over NUMA nodes ------------------------------------ */
#define MP_EXPERT_SLICE_WIDTH 256u

typedef struct mp_byte_range {
    uint64_t offset, size;
} mp_byte_range;

/* What one node owns of one routed expert (gate/up W[I, H] packed with one
 * K-group, down W[H, I] packed with K-groups of width S). Ranges are byte
 * offsets from the start of that matrix's packed bytes (data at 0, then its
 * scale and wsum arrays); gate and up share one description. A node may own
 * no slice (more nodes than slices): then slice0 == slice1 and all sizes 0. */
typedef struct mp_expert_share {
    uint32_t slice0, slice1; /* slices [slice0, slice1) */
    uint32_t row0, row1;     /* intermediate rows [row0, row1): gate/up outputs, down K columns */
    mp_byte_range gate_up_data, gate_up_scale, gate_up_wsum;
    mp_byte_range down_data, down_scale, down_wsum;
} mp_expert_share;

/* Layouts of a routed expert's matrices as the slice rules require. */
int mp_expert_layouts(uint32_t hidden, uint32_t inter, uint32_t slice_width, mp_amx_int8_layout *gate_up,
                      mp_amx_int8_layout *down, mp_error *err);
/* Slices of node `node` of n_nodes (balanced: node j owns
 * [j*ns/n_nodes, (j+1)*ns/n_nodes) of the ns = ceil(inter/S) slices). */
int mp_expert_share_for_node(uint32_t hidden, uint32_t inter, uint32_t slice_width, uint32_t n_nodes,
                             uint32_t node, mp_expert_share *out, mp_error *err);

#endif
