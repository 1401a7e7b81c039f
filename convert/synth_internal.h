/* synth_internal: the pieces of `moepack synth` shared between its files:
 * the resolved model shape (synth_model.c: presets and config.json), the
 * tokenizer writer (synth_tokenizer.c) and the weight generator
 * (synth_weights.c). Not part of the library's public interface. */
#ifndef MP_SYNTH_INTERNAL_H
#define MP_SYNTH_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "mp_error.h"
#include "synth.h"

typedef enum {
    MP_SYNTH_FAMILY_V3 = 0, /* deepseek_v3 config keys, V3 tokenizer (tiny, V3, R1) */
    MP_SYNTH_FAMILY_V2,     /* deepseek_v2 config keys, DeepSeek LLM tokenizer */
} mp_synth_family;

/* The model being written, with every option applied. */
typedef struct mp_synth_model {
    mp_synth_preset preset;
    mp_synth_family family;
    uint32_t vocab, hidden, intermediate, moe_intermediate;
    uint32_t layers, dense;
    uint32_t heads;
    uint32_t n_routed, n_shared, topk, n_group, topk_group;
    uint32_t q_lora; /* 0: plain q_proj (V2-Lite) */
    uint32_t kv_lora, nope, rope, v_head;
    bool fp8, mtp;
    uint32_t bos_id, eos_id; /* where the tokenizer put them */
    uint64_t shard_bytes;
} mp_synth_model;

int mp_synth_model_resolve(const mp_synth_options *o, mp_synth_model *m, mp_error *err);

/* config.json text, byte for byte as Hugging Face writes the official file
 * (keys sorted, indent 2, Python float spelling, final newline). malloc'd;
 * NULL when out of memory. */
char *mp_synth_config_json(const mp_synth_model *m);

/* The text synth_tokenizer.c learns merges from (synth_corpus.c). */
extern const char mp_synth_corpus[];

/* Writes tokenizer.json and tokenizer_config.json into dir. */
int mp_synth_write_tokenizer(const mp_synth_model *m, const char *dir, mp_error *err);

/* ---- weights ---------------------------------------------------------- */

typedef enum {
    MP_SYNTH_KIND_EMBED,      /* token embeddings */
    MP_SYNTH_KIND_LINEAR,     /* projections into a block (q, kv, gate, up, eh_proj, heads) */
    MP_SYNTH_KIND_LINEAR_OUT, /* projections back to the residual stream (o_proj, down_proj) */
    MP_SYNTH_KIND_ROUTER,     /* mlp.gate.weight */
    MP_SYNTH_KIND_NORM,       /* RMSNorm weights */
    MP_SYNTH_KIND_BIAS,       /* e_score_correction_bias */
} mp_synth_kind;

/* How one tensor's values are drawn. Values depend only on (key, element
 * position): never on how the work is split into jobs or threads. */
typedef struct mp_synth_values {
    uint64_t key; /* from the seed and the tensor's name */
    mp_synth_kind kind;
    uint32_t rows, cols; /* a 1-D tensor is one row */
    float std;
} mp_synth_values;

/* The key for a tensor: a hash of its name under the seed. */
uint64_t mp_synth_tensor_key(uint64_t seed, const char *name);

/* Fills mp_synth_values for a tensor of this kind and shape (scale chosen
 * from the kind and the input width). */
void mp_synth_values_init(mp_synth_values *v, uint64_t key, mp_synth_kind kind, uint32_t rows, uint32_t cols);

/* A 65536-entry table of standard normal quantiles, indexed by 16 random bits. */
enum { MP_SYNTH_NORMAL_TABLE = 65536 };
void mp_synth_normal_table(float *table);

/* The per-column factors (outlier columns) of a tensor into colf[0 .. cols). */
void mp_synth_col_factors(const mp_synth_values *v, float *colf);

/* Row r's values as floats into out[0 .. cols), given the column factors. */
void mp_synth_row_f32(const mp_synth_values *v, const float *normal, const float *colf, uint32_t r, float *out);

/* FP8 E4M3 with DeepSeek's 128x128 block scales for rows [r0, r0 + nrows)
 * (r0 a multiple of 128, nrows <= 128): codes into q[nrows * cols], the
 * dequantization scales (weight_scale_inv, w = code * scale) for the
 * ceil(cols / 128) blocks into scale_inv. work holds nrows * cols floats. */
void mp_synth_band_fp8(const mp_synth_values *v, const float *normal, const float *colf, uint32_t r0, uint32_t nrows,
                       float *work, uint8_t *q, float *scale_inv);

/* float -> FP8 E4M3, round to nearest even, saturating at 448: the same
 * results as mp_f32_to_fp8_e4m3 for every non-NaN input (test_synth checks),
 * but branch-free, so that a row of codes costs about as much as a row of
 * random numbers. Normal range: round the f32 mantissa at bit 20 and rebias
 * the exponent (127 -> 7); below 2^-6, adding 2^14 makes the FPU round to
 * multiples of 2^-9, the subnormal step. */
static inline uint8_t mp_synth_fp8_e4m3(float x)
{
    uint32_t u, m;
    memcpy(&u, &x, 4);
    uint32_t sign = (u >> 24) & 0x80u, a = u & 0x7fffffffu;
    uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
    uint32_t normal = (r >> 20) - (120u << 3);
    normal = normal > 0x7eu ? 0x7eu : normal;
    float y = fabsf(x) + 16384.0f;
    memcpy(&m, &y, 4);
    uint32_t sub = m - 0x46800000u; /* the bits of 16384.0f */
    return (uint8_t)(sign | (a < 0x3c800000u ? sub : normal));
}

#endif
