/* gguf_quants: the ggml tensor types a GGUF file may hold (block size and
 * bytes per block for every type id known here) and scalar row dequantizers
 * to f32 for the types moepack reads.
 *
 * A ggml type stores a row of n elements as n / block_size blocks of
 * type_size bytes each; plain types (F32, F16, BF16, I8...) have block size 1.
 * docs/GGUF.md describes the block formats. */
#ifndef MP_GGUF_QUANTS_H
#define MP_GGUF_QUANTS_H

#include <stdbool.h>
#include <stdint.h>

#include "mp_error.h"

/* ggml type ids as stored in a GGUF tensor info. Ids 4, 5 and 31..33, 36..38
 * were used by formats ggml has since removed; they are unknown here. */
typedef enum mp_ggml_type {
    MP_GGML_F32 = 0,
    MP_GGML_F16 = 1,
    MP_GGML_Q4_0 = 2,
    MP_GGML_Q4_1 = 3,
    MP_GGML_Q5_0 = 6,
    MP_GGML_Q5_1 = 7,
    MP_GGML_Q8_0 = 8,
    MP_GGML_Q8_1 = 9,
    MP_GGML_Q2_K = 10,
    MP_GGML_Q3_K = 11,
    MP_GGML_Q4_K = 12,
    MP_GGML_Q5_K = 13,
    MP_GGML_Q6_K = 14,
    MP_GGML_Q8_K = 15,
    MP_GGML_IQ2_XXS = 16,
    MP_GGML_IQ2_XS = 17,
    MP_GGML_IQ3_XXS = 18,
    MP_GGML_IQ1_S = 19,
    MP_GGML_IQ4_NL = 20,
    MP_GGML_IQ3_S = 21,
    MP_GGML_IQ2_S = 22,
    MP_GGML_IQ4_XS = 23,
    MP_GGML_I8 = 24,
    MP_GGML_I16 = 25,
    MP_GGML_I32 = 26,
    MP_GGML_I64 = 27,
    MP_GGML_F64 = 28,
    MP_GGML_IQ1_M = 29,
    MP_GGML_BF16 = 30,
    MP_GGML_TQ1_0 = 34,
    MP_GGML_TQ2_0 = 35,
    MP_GGML_MXFP4 = 39,
    MP_GGML_NVFP4 = 40,
    MP_GGML_Q1_0 = 41,
    MP_GGML_TYPE_LIMIT /* one past the largest id in the table */
} mp_ggml_type;

typedef struct mp_ggml_type_info {
    const char *name;      /* "Q4_K", ... as ggml spells it */
    uint32_t block_size;   /* elements per block */
    uint32_t type_size;    /* bytes per block */
    bool can_dequantize;   /* mp_gguf_dequantize_row supports it */
} mp_ggml_type_info;

/* The table entry of a type id, or NULL when the id is unknown. */
const mp_ggml_type_info *mp_ggml_type_get(uint32_t type);

/* The type's name, or "unknown" for an id not in the table. */
const char *mp_ggml_type_name(uint32_t type);

/* Bytes that n elements of `type` take. Fails (MP_ERR_INPUT) for an unknown
 * type, for n not a multiple of the block size, and on overflow. */
int mp_gguf_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes, mp_error *err);

/* Dequantizes n elements of `type` starting at src (no alignment needed) into
 * dst[0..n). n must be a multiple of the type's block size. Fails
 * (MP_ERR_INPUT) for an unknown or unsupported type or a bad n; the message
 * names the type but no file: callers prefix it. The results are bit-exact
 * with ggml's reference dequantizers (plain f32 arithmetic, no fused
 * multiply-add). */
int mp_gguf_dequantize_row(uint32_t type, const void *src, uint64_t n, float *dst, mp_error *err);

#endif
