/* layout/: sizes, packers read back through the doc's index formulas, views
 * of K-groups and rows, and the NUMA split of routed experts. */
#include <stdlib.h>
#include <string.h>

#include "mp_layout.h"
#include "mp_test.h"
#include "test_rand.h"

static void test_sizes(void)
{
    mp_error err = {0};
    mp_amx_int8_layout l;
    /* N=300, K=100, Kg=64: G=2, Np=304, last group 36 -> 64, Kp=128 */
    REQUIRE(mp_amx_int8_layout_init(300, 100, 64, &l, &err) == MP_OK);
    CHECK(l.groups == 2 && l.np == 304 && l.kp_last == 64 && l.kp == 128);
    CHECK(l.data_bytes == 304 * 128 && l.scale_offset == 38912 && l.scale_bytes == 2 * 304 * 4);
    CHECK(l.wsum_offset == 38912 + 2432 && l.total_bytes == 38912 + 2 * 2432);
    /* V3 down: N=7168, K=2048, Kg=256 */
    REQUIRE(mp_amx_int8_layout_init(7168, 2048, 256, &l, &err) == MP_OK);
    CHECK(l.groups == 8 && l.kp == 2048 && l.data_bytes == 7168ull * 2048);
    /* unaligned data: N=1, K=100 -> 16 x 128 = 2048 bytes, scales at 2048 */
    REQUIRE(mp_amx_int8_layout_init(1, 100, 4096, &l, &err) == MP_OK);
    CHECK(l.groups == 1 && l.np == 16 && l.kp == 128 && l.scale_offset == 2048);
    REQUIRE(mp_amx_int8_layout_init(17, 10, 64, &l, &err) == MP_OK);
    CHECK(l.data_bytes == 32 * 64 && l.scale_offset == 2048);
    /* rejected shapes */
    CHECK(mp_amx_int8_layout_init(0, 64, 64, &l, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_layout_init(16, 64, 96, &l, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_layout_init(16, 64, 0, &l, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_layout_init(1ull << 40, 64, 64, &l, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_layout_init(16, 1u << 20, 1u << 20, &l, &err) == MP_ERR_INPUT); /* group too wide */
    CHECK(mp_amx_int8_layout_init(16, 1u << 20, 1ull << 33, &l, &err) == MP_ERR_INPUT);
    /* the largest accepted shape still has exact sizes */
    REQUIRE(mp_amx_int8_layout_init(MP_LAYOUT_MAX_DIM, MP_LAYOUT_MAX_DIM, 65536, &l, &err) == MP_OK);
    CHECK(l.data_bytes == (uint64_t)MP_LAYOUT_MAX_DIM * MP_LAYOUT_MAX_DIM);

    mp_amx_bf16_layout b;
    REQUIRE(mp_amx_bf16_layout_init(17, 100, 64, &b, &err) == MP_OK);
    CHECK(b.groups == 2 && b.np == 32 && b.kp_last == 64 && b.kp == 128 && b.data_bytes == 32 * 128 * 2);
    REQUIRE(mp_amx_bf16_layout_init(17, 70, 32, &b, &err) == MP_OK);
    CHECK(b.groups == 3 && b.kp_last == 32 && b.kp == 96);
    CHECK(mp_amx_bf16_layout_init(17, 70, 48, &b, &err) == MP_ERR_INPUT);

    mp_gpu_int4_layout g;
    REQUIRE(mp_gpu_int4_layout_init(300, 10944, MP_INT4_ASYM, &g, &err) == MP_OK);
    CHECK(g.np == 304 && g.kp == 11008 && g.groups == 86 && g.row_bytes == 5504);
    CHECK(g.data_bytes == 304ull * 5504 && g.scale_offset == 304ull * 5504 && g.scale_bytes == 304 * 86 * 2);
    CHECK(g.min_offset == g.scale_offset + g.scale_bytes && g.total_bytes == g.min_offset + g.scale_bytes);
    REQUIRE(mp_gpu_int4_layout_init(1, 100, MP_INT4_SYM, &g, &err) == MP_OK);
    CHECK(g.data_bytes == 16 * 64 && g.scale_offset == 1024 && g.min_bytes == 0 && g.total_bytes == 1024 + 32);
    CHECK(mp_gpu_int4_layout_init(1, 0, MP_INT4_SYM, &g, &err) == MP_ERR_INPUT);
    CHECK(mp_gpu_int4_layout_init(1, 64, (mp_int4_scheme)7, &g, &err) == MP_ERR_INPUT);
}

/* Whether padded column kk of an AMX layout with groups of kg holds an
 * element: the padding of every group but the last does not exist (the next
 * group starts at kg), the last one's runs to kp_last. */
static bool padded_k_exists(uint32_t kk, uint32_t kg, uint32_t groups, uint32_t kp_last)
{
    return kk % kg < (kk / kg + 1 < groups ? kg : kp_last);
}

/* Data bytes no element mapped to. */
static uint64_t count_unmapped(const uint8_t *seen, uint64_t data_bytes)
{
    uint64_t unseen = 0;
    for (uint64_t i = 0; i < data_bytes; i++)
        unseen += !seen[i];
    return unseen;
}

/* Packs in 16-row blocks visited in a scrambled order (streaming), then
 * reads every element through the index formula and checks that the
 * formula maps the padded matrix onto the data bytes one to one. */
static void test_amx_int8_pack(uint32_t n, uint32_t k, uint32_t kg, mp_rng *r)
{
    mp_error err = {0};
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(n, k, kg, &l, &err) == MP_OK);
    int8_t *q = malloc((size_t)n * k);
    float *s = malloc((size_t)n * l.groups * sizeof *s);
    for (size_t i = 0; i < (size_t)n * k; i++)
        q[i] = (int8_t)((int)(mp_rng_u64(r) % 255) - 127);
    for (size_t i = 0; i < (size_t)n * l.groups; i++)
        s[i] = (float)mp_rng_unif(r) + 0.5f;
    uint8_t *buf = malloc(l.total_bytes);
    memset(buf, 0xa5, l.total_bytes);
    uint32_t blocks = (n + 15) / 16, step = 7;
    while (blocks % step == 0)
        step++;
    for (uint32_t i = 0; i < blocks; i++) {
        uint32_t b = (i * step) % blocks;
        uint32_t n0 = b * 16, n1 = n0 + 16 < n ? n0 + 16 : n;
        REQUIRE(mp_amx_int8_pack_rows(&l, n0, n1, q + (size_t)n0 * k, k, s + (size_t)n0 * l.groups, buf, l.total_bytes,
                                      &err) == MP_OK);
    }
    uint8_t *seen = calloc(l.data_bytes, 1);
    int bad = 0, dup = 0;
    for (uint32_t nn = 0; nn < l.np; nn++)
        for (uint32_t kk = 0; kk < l.kp; kk++) {
            if (!padded_k_exists(kk, kg, l.groups, l.kp_last))
                continue;
            uint64_t off = mp_amx_int8_offset(&l, nn, kk);
            if (off >= l.data_bytes) {
                bad++;
                continue;
            }
            dup += seen[off]++ != 0;
            int8_t want = (nn < n && kk < k) ? q[(size_t)nn * k + kk] : 0;
            bad += (int8_t)buf[off] != want;
        }
    uint64_t unseen = count_unmapped(seen, l.data_bytes);
    CHECKF(bad == 0 && dup == 0 && unseen == 0, "amx_int8 %ux%u/%u: %d wrong, %d twice, %llu unmapped", n, k, kg, bad,
           dup, (unsigned long long)unseen);
    const float *so = (const float *)(buf + l.scale_offset);
    const int32_t *wo = (const int32_t *)(buf + l.wsum_offset);
    int bad_s = 0;
    for (uint32_t g = 0; g < l.groups; g++)
        for (uint32_t nn = 0; nn < l.np; nn++) {
            int32_t sum = 0;
            for (uint32_t kk = g * kg; kk < k && kk < (g + 1) * kg && nn < n; kk++)
                sum += q[(size_t)nn * k + kk];
            float want = nn < n ? s[(size_t)nn * l.groups + g] : 0.0f;
            bad_s += so[(size_t)g * l.np + nn] != want || wo[(size_t)g * l.np + nn] != sum;
        }
    CHECKF(bad_s == 0, "amx_int8 %ux%u/%u: %d scale/wsum entries wrong", n, k, kg, bad_s);
    for (uint64_t i = l.data_bytes; i < l.scale_offset; i++)
        bad_s += buf[i] != 0;
    CHECK(bad_s == 0);
    free(seen);
    free(buf);
    free(q);
    free(s);
}

static void test_amx_bf16_pack(uint32_t n, uint32_t k, uint32_t kg, mp_rng *r)
{
    mp_error err = {0};
    mp_amx_bf16_layout l;
    REQUIRE(mp_amx_bf16_layout_init(n, k, kg, &l, &err) == MP_OK);
    uint16_t *w = malloc((size_t)n * k * 2);
    for (size_t i = 0; i < (size_t)n * k; i++)
        w[i] = (uint16_t)(mp_rng_u64(r) | 1); /* never 0: padding is */
    uint8_t *buf = malloc(l.total_bytes);
    memset(buf, 0xa5, l.total_bytes);
    for (uint32_t n0 = 0; n0 < n; n0 += 32) { /* two blocks per call */
        uint32_t n1 = n0 + 32 < n ? n0 + 32 : n;
        REQUIRE(mp_amx_bf16_pack_rows(&l, n0, n1, w + (size_t)n0 * k, k, buf, l.total_bytes, &err) == MP_OK);
    }
    uint8_t *seen = calloc(l.data_bytes, 1);
    int bad = 0, dup = 0;
    for (uint32_t nn = 0; nn < l.np; nn++)
        for (uint32_t kk = 0; kk < l.kp; kk++) {
            if (!padded_k_exists(kk, kg, l.groups, l.kp_last))
                continue;
            uint64_t off = mp_amx_bf16_offset(&l, nn, kk);
            if (off + 2 > l.data_bytes || off % 2) {
                bad++;
                continue;
            }
            dup += seen[off]++ != 0;
            seen[off + 1]++;
            uint16_t v;
            memcpy(&v, buf + off, 2);
            bad += v != ((nn < n && kk < k) ? w[(size_t)nn * k + kk] : 0);
        }
    uint64_t unseen = count_unmapped(seen, l.data_bytes);
    CHECKF(bad == 0 && dup == 0 && unseen == 0, "amx_bf16 %ux%u/%u: %d wrong, %d twice, %llu unmapped", n, k, kg, bad,
           dup, (unsigned long long)unseen);
    free(seen);
    free(buf);
    free(w);
}

static void test_int4_pack(uint32_t n, uint32_t k, mp_int4_scheme sc, mp_rng *r)
{
    mp_error err = {0};
    mp_gpu_int4_layout l;
    REQUIRE(mp_gpu_int4_layout_init(n, k, sc, &l, &err) == MP_OK);
    uint8_t *q = malloc((size_t)n * k);
    uint16_t *s = malloc((size_t)n * l.groups * 2), *m = malloc((size_t)n * l.groups * 2);
    for (size_t i = 0; i < (size_t)n * k; i++)
        q[i] = (uint8_t)(mp_rng_u64(r) % 16);
    for (size_t i = 0; i < (size_t)n * l.groups; i++) {
        s[i] = (uint16_t)(mp_rng_u64(r) | 1);
        m[i] = (uint16_t)(mp_rng_u64(r) | 1);
    }
    uint8_t *buf = malloc(l.total_bytes);
    memset(buf, 0xa5, l.total_bytes);
    for (uint32_t n0 = 0; n0 < n; n0 += 5) { /* any row split works for int4 */
        uint32_t n1 = n0 + 5 < n ? n0 + 5 : n;
        REQUIRE(mp_gpu_int4_pack_rows(&l, n0, n1, q + (size_t)n0 * k, k, s + (size_t)n0 * l.groups,
                                      m + (size_t)n0 * l.groups, buf, l.total_bytes, &err) == MP_OK);
    }
    int bad = 0;
    for (uint32_t nn = 0; nn < l.np; nn++)
        for (uint32_t kk = 0; kk < l.kp; kk++) {
            uint64_t b = mp_gpu_int4_byte(&l, nn, kk);
            unsigned v = (buf[b] >> mp_gpu_int4_shift(kk)) & 15u;
            bad += b >= l.data_bytes || v != ((nn < n && kk < k) ? q[(size_t)nn * k + kk] : 0u);
        }
    const uint16_t *so = (const uint16_t *)(buf + l.scale_offset);
    const uint16_t *mo = (const uint16_t *)(buf + l.min_offset);
    for (uint32_t nn = 0; nn < l.np; nn++)
        for (uint32_t g = 0; g < l.groups; g++) {
            size_t at = (size_t)nn * l.groups + g;
            bad += so[at] != (nn < n ? s[at] : 0);
            if (sc == MP_INT4_ASYM)
                bad += mo[at] != (nn < n ? m[at] : 0);
        }
    CHECKF(bad == 0, "gpu_int4 %ux%u scheme %d: %d elements wrong", n, k, (int)sc, bad);
    free(buf);
    free(q);
    free(s);
    free(m);
}

static void test_packers(void)
{
    mp_rng r = {11};
    const uint32_t ns[] = {1, 17, 300};
    struct {
        uint32_t k, kg;
    } kk[] = {{64, 64}, {100, 64}, {100, 4096}, {7168, 7168}, {2048, 256}, {1408, 256}, {330, 128}};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < sizeof kk / sizeof kk[0]; b++) {
            if (ns[a] == 300 && kk[b].k > 2048)
                continue; /* keep the test fast */
            test_amx_int8_pack(ns[a], kk[b].k, kk[b].kg, &r);
        }
    test_amx_int8_pack(33, 7168, 7168, &r);
    struct {
        uint32_t k, kg;
    } kb[] = {{64, 64}, {100, 64}, {70, 32}, {7168, 7168}, {330, 96}, {1000, 256}};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < sizeof kb / sizeof kb[0]; b++)
            if (!(ns[a] == 300 && kb[b].k > 2048))
                test_amx_bf16_pack(ns[a], kb[b].k, kb[b].kg, &r);
    const uint32_t k4[] = {64, 100, 128, 7168, 10944};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 5; b++)
            for (int sc = 0; sc < 2; sc++)
                if (!(ns[a] == 300 && k4[b] > 2048))
                    test_int4_pack(ns[a], k4[b], (mp_int4_scheme)sc, &r);
    test_int4_pack(20, 10944, MP_INT4_SYM, &r);

    /* bad calls */
    mp_error err = {0};
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(40, 64, 64, &l, &err) == MP_OK);
    uint8_t *buf = malloc(l.total_bytes);
    int8_t q[40 * 64] = {0};
    float s[40] = {0};
    CHECK(mp_amx_int8_pack_rows(&l, 8, 24, q, 64, s, buf, l.total_bytes, &err) == MP_ERR_INPUT);  /* unaligned */
    CHECK(mp_amx_int8_pack_rows(&l, 16, 40, q, 64, s, buf, l.total_bytes, &err) == MP_OK);        /* ends at N */
    CHECK(mp_amx_int8_pack_rows(&l, 32, 48, q, 64, s, buf, l.total_bytes, &err) == MP_ERR_INPUT); /* past N */
    CHECK(mp_amx_int8_pack_rows(&l, 0, 16, q, 64, s, buf, l.total_bytes - 1, &err) == MP_ERR_INPUT);
    free(buf);
}

/* quantize_pack = quantize rows + pack. */
static void test_quantize_pack(void)
{
    mp_rng r = {12};
    mp_error err = {0};
    const uint32_t n = 37, k = 300;
    float *w = malloc((size_t)n * k * sizeof *w);
    for (size_t i = 0; i < (size_t)n * k; i++)
        w[i] = (float)mp_rng_gauss(&r);
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(n, k, 128, &l, &err) == MP_OK);
    uint8_t *buf = malloc(l.total_bytes);
    REQUIRE(mp_amx_int8_quantize_pack_rows(&l, 0, n, w, k, buf, l.total_bytes, &err) == MP_OK);
    int8_t q[300];
    float s[3];
    int bad = 0;
    for (uint32_t nn = 0; nn < n; nn++) {
        REQUIRE(mp_quant_int8_row(w + (size_t)nn * k, k, 128, q, s, &err) == MP_OK);
        for (uint32_t kk = 0; kk < k; kk++)
            bad += (int8_t)buf[mp_amx_int8_offset(&l, nn, kk)] != q[kk];
        for (uint32_t g = 0; g < 3; g++)
            bad += ((const float *)(buf + l.scale_offset))[g * l.np + nn] != s[g];
    }
    CHECK(bad == 0);
    w[5 * k + 9] = NAN;
    CHECK(mp_amx_int8_quantize_pack_rows(&l, 0, n, w, k, buf, l.total_bytes, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "row 5") != NULL, "%s", err.msg);

    mp_gpu_int4_layout g;
    REQUIRE(mp_gpu_int4_layout_init(n, k, MP_INT4_ASYM, &g, &err) == MP_OK);
    uint8_t *b4 = malloc(g.total_bytes);
    w[5 * k + 9] = 0.5f;
    REQUIRE(mp_gpu_int4_quantize_pack_rows(&g, MP_INT4_FIT_MSE, 0, n, w, k, b4, g.total_bytes, &err) == MP_OK);
    uint8_t q4[300];
    uint16_t s4[3], m4[3];
    for (uint32_t nn = 0; nn < n; nn++) {
        REQUIRE(mp_quant_int4_row(w + (size_t)nn * k, k, MP_INT4_ASYM, MP_INT4_FIT_MSE, q4, s4, m4, &err) == MP_OK);
        for (uint32_t kk = 0; kk < k; kk++)
            bad += ((b4[mp_gpu_int4_byte(&g, nn, kk)] >> mp_gpu_int4_shift(kk)) & 15) != q4[kk];
        for (uint32_t gg = 0; gg < 3; gg++)
            bad += ((const uint16_t *)(b4 + g.scale_offset))[nn * 3 + gg] != s4[gg] ||
                   ((const uint16_t *)(b4 + g.min_offset))[nn * 3 + gg] != m4[gg];
    }
    CHECK(bad == 0);
    free(b4);
    free(buf);
    free(w);
}

/* Views of groups and rows address the same bytes as the full matrix. */
static void test_views(void)
{
    mp_error err = {0};
    mp_amx_int8_layout l;
    REQUIRE(mp_amx_int8_layout_init(40, 1408, 256, &l, &err) == MP_OK);
    static uint8_t base[1 << 17];
    REQUIRE(l.total_bytes <= sizeof base);
    mp_amx_int8_view full, sub;
    mp_amx_int8_view_init(&l, base, &full);
    REQUIRE(mp_amx_int8_view_groups(&full, 2, 6, &sub, &err) == MP_OK);
    CHECK(sub.lay.k == 1408 - 512 && sub.lay.groups == 4 && sub.lay.np == l.np && sub.lay.kp_last == 128);
    int bad = 0;
    for (uint32_t n = 0; n < 40; n++)
        for (uint32_t k = 0; k < sub.lay.k; k++)
            bad += sub.data + mp_amx_int8_offset(&sub.lay, n, k) != full.data + mp_amx_int8_offset(&l, n, 512 + k);
    CHECK(bad == 0);
    CHECK(sub.scale == full.scale + 2 * l.np && sub.wsum == full.wsum + 2 * l.np);
    CHECK(mp_amx_int8_view_groups(&full, 3, 3, &sub, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_view_groups(&full, 0, 7, &sub, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_view_rows(&full, 0, 16, &sub, &err) == MP_ERR_INPUT); /* 6 groups */

    REQUIRE(mp_amx_int8_layout_init(40, 300, 320, &l, &err) == MP_OK);
    mp_amx_int8_view_init(&l, base, &full);
    REQUIRE(mp_amx_int8_view_rows(&full, 16, 40, &sub, &err) == MP_OK);
    CHECK(sub.lay.n == 24 && sub.lay.np == 32);
    for (uint32_t n = 0; n < 24; n++)
        for (uint32_t k = 0; k < 300; k++)
            bad += sub.data + mp_amx_int8_offset(&sub.lay, n, k) != full.data + mp_amx_int8_offset(&l, 16 + n, k);
    CHECK(bad == 0);
    CHECK(sub.scale == full.scale + 16 && sub.wsum == full.wsum + 16);
    CHECK(mp_amx_int8_view_rows(&full, 8, 40, &sub, &err) == MP_ERR_INPUT);
    CHECK(mp_amx_int8_view_rows(&full, 16, 30, &sub, &err) == MP_ERR_INPUT);
}

/* Each node's ranges: contiguous, disjoint, together the whole matrix, and
 * exactly where the index formula puts the node's elements. */
static void test_expert_shares(void)
{
    const uint32_t inters[] = {256, 1408, 1536, 2048, 200};
    const uint32_t hiddens[] = {2048, 5120, 7168};
    mp_error err = {0};
    for (size_t a = 0; a < sizeof inters / sizeof inters[0]; a++)
        for (size_t h = 0; h < 3; h++)
            for (uint32_t nodes = 1; nodes <= 8; nodes++) {
                uint32_t I = inters[a], H = hiddens[h];
                mp_amx_int8_layout gu, dn;
                REQUIRE(mp_expert_layouts(H, I, MP_EXPERT_SLICE_WIDTH, &gu, &dn, &err) == MP_OK);
                uint32_t ns = (I + 255) / 256;
                uint64_t next_gu = 0, next_dn = 0, next_gs = gu.scale_offset, next_ds = dn.scale_offset;
                uint32_t next_slice = 0;
                int bad = 0;
                for (uint32_t j = 0; j < nodes; j++) {
                    mp_expert_share s;
                    REQUIRE(mp_expert_share_for_node(H, I, MP_EXPERT_SLICE_WIDTH, nodes, j, &s, &err) == MP_OK);
                    bad += s.slice0 != next_slice || s.slice1 < s.slice0;
                    next_slice = s.slice1;
                    bad += s.row0 != (s.slice0 * 256 < I ? s.slice0 * 256 : I);
                    bad += s.gate_up_data.offset != next_gu || s.down_data.offset != next_dn;
                    bad += s.gate_up_scale.offset != next_gs || s.down_scale.offset != next_ds;
                    bad += (s.slice0 == s.slice1) != (s.gate_up_data.size == 0 || s.down_data.size == 0);
                    next_gu += s.gate_up_data.size;
                    next_dn += s.down_data.size;
                    next_gs += s.gate_up_scale.size;
                    next_ds += s.down_scale.size;
                    bad += s.gate_up_wsum.offset != s.gate_up_scale.offset - gu.scale_offset + gu.wsum_offset;
                    bad += s.down_wsum.offset != s.down_scale.offset - dn.scale_offset + dn.wsum_offset;
                    /* every element of the node's rows (gate/up) and K columns
                     * (down) falls in its ranges */
                    for (uint32_t i = s.row0; i < s.row1; i += 13) {
                        for (uint32_t k = 0; k < H; k += 97) {
                            uint64_t o = mp_amx_int8_offset(&gu, i, k);
                            bad += o < s.gate_up_data.offset || o >= s.gate_up_data.offset + s.gate_up_data.size;
                            o = mp_amx_int8_offset(&dn, k, i);
                            bad += o < s.down_data.offset || o >= s.down_data.offset + s.down_data.size;
                        }
                    }
                }
                bad += next_slice != ns || next_gu != gu.data_bytes || next_dn != dn.data_bytes;
                bad += next_gs != gu.scale_offset + gu.scale_bytes || next_ds != dn.scale_offset + dn.scale_bytes;
                CHECKF(bad == 0, "I=%u H=%u nodes=%u: %d problems", I, H, nodes, bad);
            }
    mp_expert_share s;
    CHECK(mp_expert_share_for_node(7168, 2048, 256, 0, 0, &s, &err) == MP_ERR_INPUT);
    CHECK(mp_expert_share_for_node(7168, 2048, 256, 4, 4, &s, &err) == MP_ERR_INPUT);
    CHECK(mp_expert_share_for_node(7168, 2048, 100, 4, 0, &s, &err) == MP_ERR_INPUT);
    /* 8 nodes, 1 slice: only the last node owns it */
    REQUIRE(mp_expert_share_for_node(7168, 256, 256, 8, 7, &s, &err) == MP_OK);
    CHECK(s.slice0 == 0 && s.slice1 == 1 && s.row1 == 256);
    REQUIRE(mp_expert_share_for_node(7168, 256, 256, 8, 3, &s, &err) == MP_OK);
    CHECK(s.slice0 == s.slice1 && s.down_data.size == 0);
}

int main(void)
{
    test_sizes();
    test_packers();
    test_quantize_pack();
    test_views();
    test_expert_shares();
    return mp_test_finish();
}
