/* amx_int8 and amx_bf16: sizes, views and packers (docs/LAYOUTS.md §3, §4).
 * The packers walk the destination in storage order (group, row block, tile,
 * tile row) and fetch each source element; the index formula that the tests
 * check them against is written separately in layout_index.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layout.h"

/* Shared by both AMX layouts: group count, padded widths, checked sizes. */
static int amx_common(uint64_t n, uint64_t k, uint64_t kg, uint32_t k_align, uint32_t elem, const char *what,
                      uint32_t *groups, uint32_t *np, uint32_t *kp_last, uint64_t *kp, uint64_t *data_bytes,
                      mp_error *err)
{
    if (n == 0 || k == 0 || n > MP_LAYOUT_MAX_DIM || k > MP_LAYOUT_MAX_DIM)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%s: shape [%llu, %llu] out of range", what,
                       (unsigned long long)n, (unsigned long long)k);
    if (kg == 0 || kg % k_align != 0 || kg > UINT32_MAX)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%s: group width %llu is not a positive multiple of %u",
                       what, (unsigned long long)kg, k_align);
    *groups = mp_group_count((uint32_t)k, (uint32_t)kg);
    *np = (uint32_t)mp_align_up(n, 16);
    uint64_t head = (uint64_t)(*groups - 1) * kg; /* < k: no overflow */
    *kp_last = (uint32_t)mp_align_up(k - head, k_align);
    *kp = head + *kp_last;
    uint64_t bytes;
    if (!mp_mul_u64(*np, *kp, &bytes) || !mp_mul_u64(bytes, elem, data_bytes))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%s: size overflows", what);
    return MP_OK;
}

int mp_amx_int8_layout_init(uint64_t n, uint64_t k, uint64_t kg, mp_amx_int8_layout *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = amx_common(n, k, kg, 64, 1, "amx_int8", &out->groups, &out->np, &out->kp_last, &out->kp,
                        &out->data_bytes, err);
    if (rc)
        return rc;
    if ((kg < k ? kg : k) > MP_AMX_INT8_MAX_GROUP)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: group width %llu exceeds %u",
                       (unsigned long long)(kg < k ? kg : k), MP_AMX_INT8_MAX_GROUP);
    out->n = (uint32_t)n;
    out->k = (uint32_t)k;
    out->kg = (uint32_t)kg;
    uint64_t entries, arr;
    if (!mp_mul_u64(out->groups, out->np, &entries) || !mp_mul_u64(entries, 4, &arr) ||
        out->data_bytes > UINT64_MAX - 63)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: size overflows");
    out->scale_offset = mp_align_up(out->data_bytes, 64);
    out->scale_bytes = arr;
    out->wsum_bytes = arr;
    if (!mp_add_u64(out->scale_offset, arr, &out->wsum_offset) ||
        !mp_add_u64(out->wsum_offset, arr, &out->total_bytes))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: size overflows");
    return MP_OK;
}

void mp_amx_int8_view_init(const mp_amx_int8_layout *lay, const void *base, mp_amx_int8_view *out)
{
    const uint8_t *b = base;
    out->lay = *lay;
    out->data = (const int8_t *)b;
    out->scale = (const float *)(const void *)(b + lay->scale_offset);
    out->wsum = (const int32_t *)(const void *)(b + lay->wsum_offset);
}

int mp_amx_int8_view_groups(const mp_amx_int8_view *full, uint32_t g0, uint32_t g1, mp_amx_int8_view *out,
                            mp_error *err)
{
    const mp_amx_int8_layout *l = &full->lay;
    if (g0 >= g1 || g1 > l->groups)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: group range [%u, %u) not within [0, %u)", g0, g1,
                       l->groups);
    uint64_t k0 = (uint64_t)g0 * l->kg;
    uint64_t k1 = (uint64_t)g1 * l->kg < l->k ? (uint64_t)g1 * l->kg : l->k;
    mp_amx_int8_layout sub;
    int rc = mp_amx_int8_layout_init(l->n, k1 - k0, l->kg, &sub, err);
    if (rc)
        return rc;
    out->lay = sub;
    out->data = full->data + (uint64_t)g0 * l->np * l->kg;
    out->scale = full->scale + (uint64_t)g0 * l->np;
    out->wsum = full->wsum + (uint64_t)g0 * l->np;
    return MP_OK;
}

int mp_amx_int8_view_rows(const mp_amx_int8_view *full, uint32_t n0, uint32_t n1, mp_amx_int8_view *out,
                          mp_error *err)
{
    const mp_amx_int8_layout *l = &full->lay;
    if (l->groups != 1)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: a row range needs a one-group matrix");
    if (n0 >= n1 || n1 > l->n || n0 % 16 || (n1 % 16 && n1 != l->n))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: row range [%u, %u) not 16-aligned within %u", n0,
                       n1, l->n);
    mp_amx_int8_layout sub;
    int rc = mp_amx_int8_layout_init(n1 - n0, l->k, l->kg, &sub, err);
    if (rc)
        return rc;
    out->lay = sub;
    out->data = full->data + (uint64_t)n0 * l->kp;
    out->scale = full->scale + n0;
    out->wsum = full->wsum + n0;
    return MP_OK;
}

static int check_rows(uint32_t n, uint32_t n0, uint32_t n1, uint64_t need, uint64_t out_size, const char *what,
                      mp_error *err)
{
    if (n0 >= n1 || n1 > n || n0 % 16 || (n1 % 16 && n1 != n))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%s: row block [%u, %u) not 16-aligned within %u rows", what,
                       n0, n1, n);
    if (out_size < need)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%s: buffer of %llu bytes, %llu needed", what,
                       (unsigned long long)out_size, (unsigned long long)need);
    return MP_OK;
}

int mp_amx_int8_pack_rows(const mp_amx_int8_layout *lay, uint32_t n0, uint32_t n1, const int8_t *q, size_t ldq,
                          const float *scale, void *out, uint64_t out_size, mp_error *err)
{
    int rc = check_rows(lay->n, n0, n1, lay->total_bytes, out_size, "amx_int8", err);
    if (rc)
        return rc;
    uint8_t *base = out;
    float *scale_out = (float *)(void *)(base + lay->scale_offset);
    int32_t *wsum_out = (int32_t *)(void *)(base + lay->wsum_offset);
    /* blocks up to np when this call ends the matrix: padding rows are zero */
    uint32_t nb_end = n1 == lay->n ? lay->np / 16 : n1 / 16;
    for (uint32_t g = 0; g < lay->groups; g++) {
        uint32_t kpg = mp_amx_int8_group_kp(lay, g);
        uint32_t kbase = g * lay->kg;
        uint8_t *dst = base + (uint64_t)g * lay->np * lay->kg + (uint64_t)(n0 / 16) * kpg * 16;
        for (uint32_t nb = n0 / 16; nb < nb_end; nb++) {
            for (uint32_t kb = 0; kb < kpg / 64; kb++) {
                for (uint32_t r = 0; r < 16; r++) {
                    for (uint32_t c = 0; c < 16; c++) {
                        uint32_t n = nb * 16 + c;
                        for (uint32_t j = 0; j < 4; j++) {
                            uint32_t k = kbase + kb * 64 + 4 * r + j;
                            *dst++ = (n < n1 && k < lay->k) ? (uint8_t)q[(size_t)(n - n0) * ldq + k] : 0;
                        }
                    }
                }
            }
        }
        for (uint32_t n = n0; n < nb_end * 16; n++) {
            size_t at = (size_t)g * lay->np + n;
            if (n >= n1) {
                scale_out[at] = 0.0f;
                wsum_out[at] = 0;
                continue;
            }
            uint32_t kend = lay->k - kbase < lay->kg ? lay->k : kbase + lay->kg;
            int32_t sum = 0;
            for (uint32_t k = kbase; k < kend; k++)
                sum += q[(size_t)(n - n0) * ldq + k];
            scale_out[at] = scale[(size_t)(n - n0) * lay->groups + g];
            wsum_out[at] = sum;
        }
    }
    if (n1 == lay->n) /* the gap between data and scales */
        memset(base + lay->data_bytes, 0, lay->scale_offset - lay->data_bytes);
    return MP_OK;
}

int mp_amx_int8_quantize_pack_rows(const mp_amx_int8_layout *lay, uint32_t n0, uint32_t n1, const float *w,
                                   size_t ldw, void *out, uint64_t out_size, mp_error *err)
{
    int rc = check_rows(lay->n, n0, n1, lay->total_bytes, out_size, "amx_int8", err);
    if (rc)
        return rc;
    int8_t *q = malloc((size_t)16 * lay->k);
    float *s = malloc((size_t)16 * lay->groups * sizeof *s);
    if (!q || !s) {
        free(q);
        free(s);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "amx_int8: out of memory");
    }
    for (uint32_t b0 = n0; b0 < n1 && rc == MP_OK; b0 += 16) {
        uint32_t b1 = n1 - b0 > 16 ? b0 + 16 : n1;
        for (uint32_t n = b0; n < b1 && rc == MP_OK; n++) {
            rc = mp_quant_int8_row(w + (size_t)(n - n0) * ldw, lay->k, lay->kg, q + (size_t)(n - b0) * lay->k,
                                   s + (size_t)(n - b0) * lay->groups, err);
            if (rc) {
                char where[48];
                snprintf(where, sizeof where, "row %u", n);
                mp_error_prefix(err, where);
            }
        }
        if (rc == MP_OK)
            rc = mp_amx_int8_pack_rows(lay, b0, b1, q, lay->k, s, out, out_size, err);
    }
    free(q);
    free(s);
    return rc;
}

/* ---- amx_bf16 --------------------------------------------------------------- */

int mp_amx_bf16_layout_init(uint64_t n, uint64_t k, uint64_t kg, mp_amx_bf16_layout *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = amx_common(n, k, kg, 32, 2, "amx_bf16", &out->groups, &out->np, &out->kp_last, &out->kp,
                        &out->data_bytes, err);
    if (rc)
        return rc;
    out->n = (uint32_t)n;
    out->k = (uint32_t)k;
    out->kg = (uint32_t)kg;
    out->total_bytes = out->data_bytes;
    return MP_OK;
}

void mp_amx_bf16_view_init(const mp_amx_bf16_layout *lay, const void *base, mp_amx_bf16_view *out)
{
    out->lay = *lay;
    out->data = base;
}

int mp_amx_bf16_pack_rows(const mp_amx_bf16_layout *lay, uint32_t n0, uint32_t n1, const uint16_t *w, size_t ldw,
                          void *out, uint64_t out_size, mp_error *err)
{
    int rc = check_rows(lay->n, n0, n1, lay->total_bytes, out_size, "amx_bf16", err);
    if (rc)
        return rc;
    uint16_t *base = out;
    uint32_t nb_end = n1 == lay->n ? lay->np / 16 : n1 / 16;
    for (uint32_t g = 0; g < lay->groups; g++) {
        uint32_t kpg = mp_amx_bf16_group_kp(lay, g);
        uint32_t kbase = g * lay->kg;
        uint16_t *dst = base + (uint64_t)g * lay->np * lay->kg + (uint64_t)(n0 / 16) * kpg * 16;
        for (uint32_t nb = n0 / 16; nb < nb_end; nb++)
            for (uint32_t kb = 0; kb < kpg / 32; kb++)
                for (uint32_t r = 0; r < 16; r++)
                    for (uint32_t c = 0; c < 16; c++) {
                        uint32_t n = nb * 16 + c;
                        for (uint32_t j = 0; j < 2; j++) {
                            uint32_t k = kbase + kb * 32 + 2 * r + j;
                            *dst++ = (n < n1 && k < lay->k) ? w[(size_t)(n - n0) * ldw + k] : 0;
                        }
                    }
    }
    return MP_OK;
}
