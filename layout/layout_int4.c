/* gpu_int4: sizes, views and the packer (docs/LAYOUTS.md §5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layout.h"

int mp_gpu_int4_layout_init(uint64_t n, uint64_t k, mp_int4_scheme scheme, mp_gpu_int4_layout *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || k == 0 || n > MP_LAYOUT_MAX_DIM || k > MP_LAYOUT_MAX_DIM)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: shape [%llu, %llu] out of range",
                       (unsigned long long)n, (unsigned long long)k);
    if (scheme != MP_INT4_SYM && scheme != MP_INT4_ASYM)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: unknown scheme %d", (int)scheme);
    out->n = (uint32_t)n;
    out->k = (uint32_t)k;
    out->scheme = scheme;
    out->np = (uint32_t)mp_align_up(n, 16);
    out->kp = (uint32_t)mp_align_up(k, MP_INT4_GROUP);
    out->groups = out->kp / MP_INT4_GROUP;
    out->row_bytes = out->kp / 2;
    uint64_t entries;
    if (!mp_mul_u64(out->np, out->row_bytes, &out->data_bytes) || !mp_mul_u64(out->np, out->groups, &entries) ||
        !mp_mul_u64(entries, 2, &out->scale_bytes) || out->data_bytes > UINT64_MAX - 63)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: size overflows");
    out->scale_offset = mp_align_up(out->data_bytes, 64);
    if (!mp_add_u64(out->scale_offset, out->scale_bytes, &out->total_bytes))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: size overflows");
    if (scheme == MP_INT4_ASYM) {
        out->min_offset = out->total_bytes;
        out->min_bytes = out->scale_bytes;
        if (!mp_add_u64(out->min_offset, out->min_bytes, &out->total_bytes))
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: size overflows");
    }
    return MP_OK;
}

void mp_gpu_int4_view_init(const mp_gpu_int4_layout *lay, const void *base, mp_gpu_int4_view *out)
{
    const uint8_t *b = base;
    out->lay = *lay;
    out->data = b;
    out->scale = (const uint16_t *)(const void *)(b + lay->scale_offset);
    out->min = lay->scheme == MP_INT4_ASYM ? (const uint16_t *)(const void *)(b + lay->min_offset) : NULL;
}

int mp_gpu_int4_pack_rows(const mp_gpu_int4_layout *lay, uint32_t n0, uint32_t n1, const uint8_t *q, size_t ldq,
                          const uint16_t *scale, const uint16_t *min, void *out, uint64_t out_size, mp_error *err)
{
    if (n0 >= n1 || n1 > lay->n)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: row range [%u, %u) not within %u rows", n0, n1,
                       lay->n);
    if (out_size < lay->total_bytes)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: buffer of %llu bytes, %llu needed",
                       (unsigned long long)out_size, (unsigned long long)lay->total_bytes);
    if (lay->scheme == MP_INT4_ASYM && !min)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: int4_asym needs mins");
    uint8_t *base = out;
    uint16_t *scale_out = (uint16_t *)(void *)(base + lay->scale_offset);
    uint16_t *min_out = lay->scheme == MP_INT4_ASYM ? (uint16_t *)(void *)(base + lay->min_offset) : NULL;
    uint32_t n_end = n1 == lay->n ? lay->np : n1;
    for (uint32_t n = n0; n < n_end; n++) {
        uint8_t *row = base + (uint64_t)n * lay->row_bytes;
        const uint8_t *src = q + (size_t)(n - n0) * ldq;
        for (uint32_t b = 0; b < lay->row_bytes; b++) {
            uint32_t k = 2 * b;
            uint8_t lo = (n < n1 && k < lay->k) ? (uint8_t)(src[k] & 15u) : 0;
            uint8_t hi = (n < n1 && k + 1 < lay->k) ? (uint8_t)(src[k + 1] & 15u) : 0;
            row[b] = (uint8_t)(lo | (hi << 4));
        }
        for (uint32_t g = 0; g < lay->groups; g++) {
            size_t at = (size_t)n * lay->groups + g;
            size_t from = (size_t)(n - n0) * lay->groups + g;
            scale_out[at] = n < n1 ? scale[from] : 0;
            if (min_out)
                min_out[at] = n < n1 ? min[from] : 0;
        }
    }
    if (n1 == lay->n)
        memset(base + lay->data_bytes, 0, lay->scale_offset - lay->data_bytes);
    return MP_OK;
}

int mp_gpu_int4_quantize_pack_rows(const mp_gpu_int4_layout *lay, mp_int4_fit fit, uint32_t n0, uint32_t n1,
                                   const float *w, size_t ldw, void *out, uint64_t out_size, mp_error *err)
{
    if (n0 >= n1 || n1 > lay->n)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: row range [%u, %u) not within %u rows", n0, n1,
                       lay->n);
    uint8_t *q = malloc(lay->k);
    uint16_t *s = malloc((size_t)lay->groups * 2 * sizeof *s);
    if (!q || !s) {
        free(q);
        free(s);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "gpu_int4: out of memory");
    }
    uint16_t *m = s + lay->groups;
    int rc = MP_OK;
    for (uint32_t n = n0; n < n1 && rc == MP_OK; n++) {
        rc = mp_quant_int4_row(w + (size_t)(n - n0) * ldw, lay->k, lay->scheme, fit, q, s, m, err);
        if (rc) {
            char where[48];
            snprintf(where, sizeof where, "row %u", n);
            mp_error_prefix(err, where);
            break;
        }
        /* one row at a time; the last call also fills the padding rows */
        rc = mp_gpu_int4_pack_rows(lay, n, n + 1, q, lay->k, s, m, out, out_size, err);
    }
    free(q);
    free(s);
    return rc;
}
