#include "attn_params.h"

#include <math.h>
#include <string.h>

double mp_yarn_mscale(double scale, double m)
{
    if (scale <= 1.0)
        return 1.0;
    return 0.1 * m * log(scale) + 1.0;
}

/* The rotation-count -> dimension inversion of YaRN ("find_correction_dim"). */
static double correction_dim(double rotations, double dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * log(base));
}

int mp_attn_params_compute(const mp_model_desc *d, mp_attn_params *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    uint32_t dim = d->qk_rope_head_dim;
    if (dim == 0 || dim % 2 || dim / 2 > MP_MAX_ROPE_PAIRS)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "qk_rope_head_dim %u must be even and at most %u", dim,
                       2 * MP_MAX_ROPE_PAIRS);
    if (!(d->rope_theta > 1.0))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "rope_theta %g must be > 1", d->rope_theta);
    uint32_t pairs = dim / 2;
    out->rope_pairs = pairs;

    double scale = 1.0 / sqrt((double)mp_qk_head_dim(d));
    out->rope_attn_factor = 1.0f;
    const mp_yarn *y = &d->yarn;
    if (y->enabled && y->factor > 1.0f) {
        if (y->mscale_all_dim != 0.0f) {
            double m = mp_yarn_mscale(y->factor, y->mscale_all_dim);
            scale *= m * m;
        }
        /* As the reference: the ratio when both mscales are set, else plain
         * mscale(factor) (which is 1 + 0.1 ln factor, not 1). */
        if (y->mscale != 0.0f && y->mscale_all_dim != 0.0f)
            out->rope_attn_factor =
                (float)(mp_yarn_mscale(y->factor, y->mscale) / mp_yarn_mscale(y->factor, y->mscale_all_dim));
        else
            out->rope_attn_factor = (float)mp_yarn_mscale(y->factor, 1.0);
    }
    out->softmax_scale = (float)scale;

    /* The reference computes the frequencies in float32 tensors; doing the
     * same keeps rope bit-compatible with it. */
    for (uint32_t i = 0; i < pairs; i++) {
        float pos_freq = powf((float)d->rope_theta, (float)(2 * i) / (float)dim);
        float extrap = 1.0f / pos_freq;
        if (!(y->enabled && y->factor > 1.0f)) {
            out->inv_freq[i] = extrap;
            continue;
        }
        float interp = 1.0f / (y->factor * pos_freq);
        double lo = floor(correction_dim(y->beta_fast, dim, d->rope_theta, y->original_max_position_embeddings));
        double hi = ceil(correction_dim(y->beta_slow, dim, d->rope_theta, y->original_max_position_embeddings));
        if (lo < 0)
            lo = 0;
        if (hi > dim - 1)
            hi = dim - 1;
        if (lo == hi)
            hi += 0.001; /* avoid a zero-width ramp, as the reference does */
        float ramp = (float)(((double)i - lo) / (hi - lo));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float extrap_factor = 1.0f - ramp;
        out->inv_freq[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
    return MP_OK;
}
