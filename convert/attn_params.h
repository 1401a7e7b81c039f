/* attn_params: the attention constants the converter computes once and
 * stores in the container's metadata, so the runner never re-derives them:
 * the softmax scale with YaRN's mscale folded in, and the rotary embedding's
 * per-pair inverse frequencies and cos/sin multiplier (YaRN ramp applied). */
#ifndef MP_ATTN_PARAMS_H
#define MP_ATTN_PARAMS_H

#include "model_desc.h"

#define MP_MAX_ROPE_PAIRS (MP_MAX_ROPE_HEAD_DIM / 2)

typedef struct mp_attn_params {
    float softmax_scale;  /* qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 */
    float rope_attn_factor; /* cos/sin multiplier: mscale(factor, mscale) / mscale(factor, mscale_all_dim) */
    uint32_t rope_pairs;  /* qk_rope_head_dim / 2 */
    float inv_freq[MP_MAX_ROPE_PAIRS]; /* pair i of the rope dims rotates by pos * inv_freq[i] */
} mp_attn_params;

/* YaRN's attention-magnitude correction: 0.1 * m * ln(scale) + 1 for scale > 1. */
double mp_yarn_mscale(double scale, double m);

/* Computes the constants as the reference (Hugging Face) implementation does,
 * in the same float precision. Fails only for impossible dims. */
int mp_attn_params_compute(const mp_model_desc *d, mp_attn_params *out, mp_error *err);

#endif
