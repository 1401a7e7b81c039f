/* Routed experts cut into slices of S intermediate rows, and which slices
 * (and so which contiguous byte ranges) each NUMA node owns. */
#include "mp_layout.h"

int mp_expert_layouts(uint32_t hidden, uint32_t inter, uint32_t slice_width, mp_amx_int8_layout *gate_up,
                      mp_amx_int8_layout *down, mp_error *err)
{
    if (slice_width == 0 || slice_width % 64)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "expert slice width %u is not a positive multiple of 64",
                       slice_width);
    /* gate/up: one K-group spanning all of hidden */
    int rc = mp_amx_int8_layout_init(inter, hidden, mp_align_up(hidden, 64), gate_up, err);
    if (rc == MP_OK)
        rc = mp_amx_int8_layout_init(hidden, inter, slice_width, down, err);
    return rc;
}

int mp_expert_share_for_node(uint32_t hidden, uint32_t inter, uint32_t slice_width, uint32_t n_nodes,
                             uint32_t node, mp_expert_share *out, mp_error *err)
{
    mp_amx_int8_layout gu, dn;
    int rc = mp_expert_layouts(hidden, inter, slice_width, &gu, &dn, err);
    if (rc)
        return rc;
    if (n_nodes == 0 || node >= n_nodes)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "node %u of %u nodes", node, n_nodes);
    uint64_t ns = dn.groups; /* slices == down's K-groups */
    uint32_t s0 = (uint32_t)(ns * node / n_nodes);
    uint32_t s1 = (uint32_t)(ns * (node + 1) / n_nodes);
    out->slice0 = s0;
    out->slice1 = s1;
    out->row0 = s0 * slice_width < inter ? s0 * slice_width : inter;
    out->row1 = s1 * slice_width < inter ? s1 * slice_width : inter;
    /* gate/up: rows [row0, row1) are whole 16-row blocks (S % 64 == 0); the
     * node owning the last slice also owns the padding rows up to np */
    uint64_t r0 = out->row0, r1 = s1 == ns ? gu.np : out->row1;
    if (s0 == s1)
        r0 = r1 = out->row0;
    out->gate_up_data = (mp_byte_range){r0 * gu.kp, (r1 - r0) * gu.kp};
    out->gate_up_scale = (mp_byte_range){gu.scale_offset + r0 * 4, (r1 - r0) * 4};
    out->gate_up_wsum = (mp_byte_range){gu.wsum_offset + r0 * 4, (r1 - r0) * 4};
    /* down: slice s is K-group s, stored at s*np*S; the last one is Kp_last wide */
    uint64_t d0 = (uint64_t)s0 * dn.np * dn.kg;
    uint64_t d1 = s1 == ns ? dn.data_bytes : (uint64_t)s1 * dn.np * dn.kg;
    if (s0 == s1)
        d1 = d0;
    out->down_data = (mp_byte_range){d0, d1 - d0};
    out->down_scale = (mp_byte_range){dn.scale_offset + (uint64_t)s0 * dn.np * 4, (uint64_t)(s1 - s0) * dn.np * 4};
    out->down_wsum = (mp_byte_range){dn.wsum_offset + (uint64_t)s0 * dn.np * 4, (uint64_t)(s1 - s0) * dn.np * 4};
    return MP_OK;
}
