/* gguf_quants: ggml type table and scalar row dequantizers.
 *
 * Every dequantizer works one block at a time and evaluates the same f32
 * expressions, in the same order, as ggml's reference code (for example
 * (d * sc) * q - (dmin * m) for Q4_K), so the results are bit-exact. That
 * relies on the compiler not fusing a multiply and an add: ISO C mode
 * (-std=c17, which the build uses) keeps GCC's -ffp-contract=off default.
 * Scale fields are read with memcpy because blocks have no alignment. */
#include "gguf_quants.h"

#include <string.h>

#include "gguf_iq_grids.h"
#include "mp_num.h"

#define QK_K 256

static const mp_ggml_type_info type_table[MP_GGML_TYPE_LIMIT] = {
    [MP_GGML_F32] = {"F32", 1, 4, true},
    [MP_GGML_F16] = {"F16", 1, 2, true},
    [MP_GGML_Q4_0] = {"Q4_0", 32, 18, true},
    [MP_GGML_Q4_1] = {"Q4_1", 32, 20, true},
    [MP_GGML_Q5_0] = {"Q5_0", 32, 22, true},
    [MP_GGML_Q5_1] = {"Q5_1", 32, 24, true},
    [MP_GGML_Q8_0] = {"Q8_0", 32, 34, true},
    [MP_GGML_Q8_1] = {"Q8_1", 32, 36, false},
    [MP_GGML_Q2_K] = {"Q2_K", QK_K, 84, true},
    [MP_GGML_Q3_K] = {"Q3_K", QK_K, 110, true},
    [MP_GGML_Q4_K] = {"Q4_K", QK_K, 144, true},
    [MP_GGML_Q5_K] = {"Q5_K", QK_K, 176, true},
    [MP_GGML_Q6_K] = {"Q6_K", QK_K, 210, true},
    [MP_GGML_Q8_K] = {"Q8_K", QK_K, 292, true},
    [MP_GGML_IQ2_XXS] = {"IQ2_XXS", QK_K, 66, true},
    [MP_GGML_IQ2_XS] = {"IQ2_XS", QK_K, 74, true},
    [MP_GGML_IQ3_XXS] = {"IQ3_XXS", QK_K, 98, true},
    [MP_GGML_IQ1_S] = {"IQ1_S", QK_K, 50, true},
    [MP_GGML_IQ4_NL] = {"IQ4_NL", 32, 18, true},
    [MP_GGML_IQ3_S] = {"IQ3_S", QK_K, 110, true},
    [MP_GGML_IQ2_S] = {"IQ2_S", QK_K, 82, true},
    [MP_GGML_IQ4_XS] = {"IQ4_XS", QK_K, 136, true},
    [MP_GGML_I8] = {"I8", 1, 1, false},
    [MP_GGML_I16] = {"I16", 1, 2, false},
    [MP_GGML_I32] = {"I32", 1, 4, false},
    [MP_GGML_I64] = {"I64", 1, 8, false},
    [MP_GGML_F64] = {"F64", 1, 8, false},
    [MP_GGML_IQ1_M] = {"IQ1_M", QK_K, 56, true},
    [MP_GGML_BF16] = {"BF16", 1, 2, true},
    [MP_GGML_TQ1_0] = {"TQ1_0", QK_K, 54, true},
    [MP_GGML_TQ2_0] = {"TQ2_0", QK_K, 66, true},
    [MP_GGML_MXFP4] = {"MXFP4", 32, 17, true},
    [MP_GGML_NVFP4] = {"NVFP4", 64, 36, false},
    [MP_GGML_Q1_0] = {"Q1_0", 128, 18, false},
};

const mp_ggml_type_info *mp_ggml_type_get(uint32_t type)
{
    if (type >= MP_GGML_TYPE_LIMIT || !type_table[type].name)
        return NULL;
    return &type_table[type];
}

const char *mp_ggml_type_name(uint32_t type)
{
    const mp_ggml_type_info *ti = mp_ggml_type_get(type);
    return ti ? ti->name : "unknown";
}

/* The type of a row of n elements, checked: known, dequantizable when
 * `dequantize`, and n a whole number of its blocks. NULL with the error set
 * otherwise. */
static const mp_ggml_type_info *row_type(uint32_t type, uint64_t n, bool dequantize, mp_error *err)
{
    const mp_ggml_type_info *ti = mp_ggml_type_get(type);
    if (!ti) {
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "unknown ggml type id %u", type);
        return NULL;
    }
    if (dequantize && !ti->can_dequantize) {
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "tensor type %s (id %u) is not supported", ti->name, type);
        return NULL;
    }
    if (n % ti->block_size != 0) {
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%llu elements of %s are not a whole number of %u-element blocks",
                (unsigned long long)n, ti->name, ti->block_size);
        return NULL;
    }
    return ti;
}

int mp_gguf_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes, mp_error *err)
{
    const mp_ggml_type_info *ti = row_type(type, n, false, err);
    if (!ti)
        return MP_ERR_INPUT;
    if (!mp_mul_u64(n / ti->block_size, ti->type_size, bytes))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "%llu elements of %s: byte size overflows", (unsigned long long)n,
                       ti->name);
    return MP_OK;
}

/* ---- little-endian field readers ---------------------------------------- */

static inline float read_f16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return mp_f16_to_f32(h);
}

static inline float read_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* The 16 non-uniform levels shared by IQ4_NL and IQ4_XS. */
static const int8_t iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* E2M1 (FP4) values times two; MXFP4's scale is halved to compensate. */
static const int8_t mxfp4_levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 16 bytes of nibbles laid out as Q4_0's (low nibbles elements 0..15, high
 * nibbles 16..31), each indexing a 16-level table; value d * level. IQ4_NL,
 * IQ4_XS (per sub-block) and MXFP4 store their codes so. */
static inline void nibbles_by_table(const uint8_t *restrict qs, const int8_t levels[16], float d, float *restrict y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)levels[qs[j] & 0x0f];
        y[j + 16] = d * (float)levels[qs[j] >> 4];
    }
}

/* ---- plain formats (restrict: no aliasing checks, so the loops vectorize) */

static void deq_f16(const uint8_t *restrict p, float *restrict y, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        y[i] = read_f16(p + 2 * i);
}

static void deq_bf16(const uint8_t *restrict p, float *restrict y, uint64_t n)
{
    uint64_t i = 0;
    /* fixed-length inner loops vectorize at -O2 (no epilogue to cost) */
    for (; i + 16 <= n; i += 16) {
        uint16_t h[16];
        memcpy(h, p + 2 * i, sizeof h);
        for (int j = 0; j < 16; j++)
            y[i + j] = mp_bf16_to_f32(h[j]);
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        y[i] = mp_bf16_to_f32(h);
    }
}

/* ---- 32-element block formats -------------------------------------------- */

/* Q4_0: f16 d, 16 bytes of nibbles; low nibbles are elements 0..15, high
 * nibbles 16..31; value (q - 8) * d. */
static void deq_q4_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1: f16 d, f16 m, nibbles as Q4_0; value q * d + m. */
static void deq_q4_1(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b), m = read_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0f) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* Q5_0: f16 d, 32-bit mask of fifth bits (bit j for element j), nibbles as
 * Q4_0; value (q - 16) * d. */
static void deq_q5_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

/* Q5_1: f16 d, f16 m, fifth-bit mask, nibbles; value q * d + m. */
static void deq_q5_1(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b), m = read_f16(b + 2);
    uint32_t qh;
    memcpy(&qh, b + 4, 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = (float)lo * d + m;
        y[j + 16] = (float)hi * d + m;
    }
}

/* Q8_0: f16 d, 32 int8; value q * d. */
static void deq_q8_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++)
        y[j] = (float)qs[j] * d;
}

/* IQ4_NL: f16 d, nibbles as Q4_0 indexing a fixed 16-level table. */
static void deq_iq4_nl(const uint8_t *restrict b, float *restrict y)
{
    nibbles_by_table(b + 2, iq4nl_levels, read_f16(b), y);
}

/* MXFP4: one E8M0 exponent byte, nibbles as Q4_0 holding E2M1 codes. */
static void deq_mxfp4(const uint8_t *restrict b, float *restrict y)
{
    /* 2^(e-127) / 2, built from bits; exponents 0 and 1 land in the
     * subnormal range */
    const uint32_t e = b[0];
    const uint32_t bits = e < 2 ? 0x00200000u << e : (e - 1) << 23;
    nibbles_by_table(b + 1, mxfp4_levels, mp_f32_from_bits(bits), y);
}

/* ---- 256-element super-block formats --------------------------------------- */

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min, one per 16
 * elements), 64 bytes of 2-bit codes, f16 d, f16 dmin. Elements
 * h*128 + s*32 + l (h < 2, s < 4, l < 32) come from bits 2s..2s+1 of byte
 * h*32 + l. */
static void deq_q2_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *sc = b, *qs = b + 16;
    const float d = read_f16(b + 80), dmin = read_f16(b + 82);
    for (int h = 0; h < 2; h++) {
        for (int s = 0; s < 4; s++) {
            for (int half = 0; half < 2; half++) {
                const uint8_t scale = sc[h * 8 + s * 2 + half];
                const float dl = d * (float)(scale & 0x0f);
                const float ml = dmin * (float)(scale >> 4);
                const uint8_t *q = qs + h * 32 + half * 16;
                float *out = y + h * 128 + s * 32 + half * 16;
                for (int l = 0; l < 16; l++)
                    out[l] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
            }
        }
    }
}

/* Q3_K: 32 bytes of high bits (bit h*4+s of byte l for element
 * h*128 + s*32 + l), 64 bytes of low 2-bit codes laid out as Q2_K, 12 bytes of
 * sixteen 6-bit scales, f16 d. Code = low - (high bit clear ? 4 : 0); value
 * (d * (scale - 32)) * code. */
static void deq_q3_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *hmask = b, *qs = b + 32, *sp = b + 96;
    const float d = read_f16(b + 108);
    int scales[16];
    for (int i = 0; i < 16; i++) {
        int low = i < 8 ? (sp[i] & 0x0f) : (sp[i - 8] >> 4);
        int high = (sp[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        scales[i] = (low | (high << 4)) - 32;
    }
    for (int h = 0; h < 2; h++) {
        for (int s = 0; s < 4; s++) {
            const int hbit = h * 4 + s;
            for (int half = 0; half < 2; half++) {
                const float dl = d * (float)scales[h * 8 + s * 2 + half];
                const int l0 = half * 16;
                const uint8_t *q = qs + h * 32;
                float *out = y + h * 128 + s * 32;
                for (int l = l0; l < l0 + 16; l++) {
                    int code = ((q[l] >> (2 * s)) & 3) - (((hmask[l] >> hbit) & 1) ? 0 : 4);
                    out[l] = dl * (float)code;
                }
            }
        }
    }
}

/* The eight 6-bit (scale, min) pairs that Q4_K and Q5_K pack into 12 bytes:
 * pairs 0..3 in the low 6 bits of bytes 0..3 / 4..7; pairs 4..7 take their low
 * 4 bits from bytes 8..11 and their top 2 bits from the spare top bits of
 * bytes 0..3 / 4..7. */
static inline void k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Sub-blocks 2c and 2c+1 of a Q4_K / Q5_K super-block: their scales
 * d * sc and offsets dmin * m. */
static inline void k_pair_scales(const uint8_t *sp, int c, float d, float dmin, float ds[2], float dm[2])
{
    for (int i = 0; i < 2; i++) {
        int sc, m;
        k_scale_min(sp, 2 * c + i, &sc, &m);
        ds[i] = d * (float)sc;
        dm[i] = dmin * (float)m;
    }
}

/* Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. Sub-block
 * 2c (elements 64c..64c+31) is the low nibbles of bytes 32c..32c+31, sub-block
 * 2c+1 their high nibbles; value (d * sc) * q - (dmin * m). */
static void deq_q4_k(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b), dmin = read_f16(b + 2);
    const uint8_t *sp = b + 4, *qs = b + 16;
    for (int c = 0; c < 4; c++) {
        float ds[2], dm[2];
        k_pair_scales(sp, c, d, dmin, ds, dm);
        const uint8_t *q = qs + 32 * c;
        float *out = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            out[l] = ds[0] * (float)(q[l] & 0x0f) - dm[0];
            out[l + 32] = ds[1] * (float)(q[l] >> 4) - dm[1];
        }
    }
}

/* Q5_K: as Q4_K plus 32 bytes of fifth bits (bit j of byte l for element
 * 32j + l) between the scales and the nibbles. */
static void deq_q5_k(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b), dmin = read_f16(b + 2);
    const uint8_t *sp = b + 4, *qh = b + 16, *qs = b + 48;
    for (int c = 0; c < 4; c++) {
        float ds[2], dm[2];
        k_pair_scales(sp, c, d, dmin, ds, dm);
        const uint8_t *q = qs + 32 * c;
        float *out = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            int lo = (q[l] & 0x0f) | (((qh[l] >> (2 * c)) & 1) << 4);
            int hi = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
            out[l] = ds[0] * (float)lo - dm[0];
            out[l + 32] = ds[1] * (float)hi - dm[1];
        }
    }
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8
 * scales (one per 16 elements), f16 d. In half h (128 elements), element
 * 32s + l takes its low nibble from byte 64h + l + 32*(s&1) (low nibble for
 * s < 2, high for s >= 2) and its high bits from bits 2s.. of byte 32h + l;
 * value (d * scale) * (code - 32). */
static void deq_q6_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = read_f16(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *lo = ql + 64 * h, *hi = qh + 32 * h;
        float *out = y + 128 * h;
        for (int is = 0; is < 2; is++) {
            /* d * scale first, as ggml evaluates d * sc * q left to right */
            const float s1 = d * (float)sc[8 * h + is + 0], s2 = d * (float)sc[8 * h + is + 2];
            const float s3 = d * (float)sc[8 * h + is + 4], s4 = d * (float)sc[8 * h + is + 6];
            for (int l = 16 * is; l < 16 * is + 16; l++) {
                int q1 = ((lo[l] & 0x0f) | (((hi[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((lo[l + 32] & 0x0f) | (((hi[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((lo[l] >> 4) | (((hi[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((lo[l + 32] >> 4) | (((hi[l] >> 6) & 3) << 4)) - 32;
                out[l] = s1 * (float)q1;
                out[l + 32] = s2 * (float)q2;
                out[l + 64] = s3 * (float)q3;
                out[l + 96] = s4 * (float)q4;
            }
        }
    }
}

/* Q8_K: f32 d, 256 int8, 16 int16 partial sums (not needed here). */
static void deq_q8_k(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f32(b);
    const int8_t *qs = (const int8_t *)(b + 4);
    for (int j = 0; j < QK_K; j++)
        y[j] = d * (float)qs[j];
}

/* IQ4_XS: f16 d, 16 bits of high scale parts, 4 bytes of low scale nibbles,
 * 128 bytes of nibbles. Sub-block i (32 elements): 6-bit scale
 * low = nibble i of the 4 bytes, high = bits 2i..2i+1; its bytes 16i..16i+15
 * give elements 0..15 (low nibbles) and 16..31 (high nibbles) through the
 * IQ4_NL level table; value (d * (scale - 32)) * level. */
static void deq_iq4_xs(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    uint16_t sh;
    memcpy(&sh, b + 2, 2);
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int i = 0; i < 8; i++) {
        int ls = ((sl[i / 2] >> (4 * (i % 2))) & 0x0f) | (((sh >> (2 * i)) & 3) << 4);
        nibbles_by_table(qs + 16 * i, iq4nl_levels, d * (float)(ls - 32), y + 32 * i);
    }
}

/* TQ1_0's packing: `digits` base-3 digits of each of n bytes, digit k of
 * byte l being element n*k + l of y (see deq_tq1_0). */
static inline void tq1_digits(const uint8_t *restrict bytes, int n, int digits, float d, float *restrict y)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int k = 0; k < digits; k++)
        for (int l = 0; l < n; l++) {
            uint8_t q = (uint8_t)(bytes[l] * pow3[k]);
            y[n * k + l] = d * (float)((int)(((uint16_t)q * 3) >> 8) - 1);
        }
}

/* TQ1_0 (ternary): 48 bytes each packing five base-3 digits, 4 bytes packing
 * four, f16 d. A byte holds a fixed-point fraction: digit k is the integer
 * part of 3 * frac after multiplying the byte by 3^k (mod 256). Elements:
 * 0..159 from bytes 0..31 (digit k of byte l -> 32k + l), 160..239 from bytes
 * 32..47 (digit k of byte l -> 160 + 16k + l), 240..255 from the 4 extra bytes
 * (digit k of byte l -> 240 + 4k + l). Value d * (digit - 1). */
static void deq_tq1_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b + 52);
    tq1_digits(b, 32, 5, d, y);
    tq1_digits(b + 32, 16, 5, d, y + 160);
    tq1_digits(b + 48, 4, 4, d, y + 240);
}

/* TQ2_0 (ternary): 64 bytes of 2-bit codes laid out as Q2_K, f16 d; value
 * d * (code - 1). */
static void deq_tq2_0(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *qs = b;
    const float d = read_f16(b + 64);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                y[128 * h + 32 * s + l] = d * (float)(((qs[32 * h + l] >> (2 * s)) & 3) - 1);
}


/* ---- lattice (IQ1/IQ2/IQ3) formats ------------------------------------------
 * Groups of 8 (or 4) values are one point of a fixed lattice (gguf_iq_grids.h)
 * picked by an index, times a per-sub-block scale, with signs. The IQ2_XXS,
 * IQ2_XS and IQ3_XXS formats store 7 sign bits per 8 values; the eighth makes
 * the count of minus signs even. */

static inline uint32_t signs_from_7bits(uint32_t i)
{
    return i | ((uint32_t)(__builtin_popcount(i) & 1) << 7);
}

/* 8 values of a 2-bit-coded grid point, scaled, with sign bits. */
static inline void grid8_signed(float *restrict y, uint16_t point, const uint8_t *levels, float scale, uint32_t signs)
{
    for (int j = 0; j < 8; j++) {
        float v = scale * (float)levels[(point >> (2 * j)) & 3];
        y[j] = (signs >> j) & 1 ? -v : v;
    }
}

/* The IQ2 formats' sub-block scale for a 4-bit s: d * (0.5 + s) * 0.25. */
static inline float iq2_scale(float d, uint32_t s)
{
    return d * (0.5f + (float)s) * 0.25f;
}

/* 4 values of a 4-bit-coded grid point, scaled, with sign bits (IQ3). */
static inline void grid4_signed(float *restrict y, uint16_t point, const uint8_t *levels, float scale, uint32_t signs)
{
    for (int j = 0; j < 4; j++) {
        float v = scale * (float)levels[(point >> (4 * j)) & 15];
        y[j] = (signs >> j) & 1 ? -v : v;
    }
}

/* 8 values of a {-1, 0, 1} lattice point (2-bit codes) shifted by delta,
 * times the sub-block scale dl (IQ1). */
static inline void iq1_grid8(float *restrict y, uint16_t point, float dl, float delta)
{
    for (int j = 0; j < 8; j++)
        y[j] = dl * ((float)iq1s_grid_levels[(point >> (2 * j)) & 3] + delta);
}

/* IQ2_XXS: f16 d, then per 32 elements two u32: four 8-bit grid indices, and
 * four 7-bit sign groups plus a 4-bit scale s in the top bits;
 * scale d * (0.5 + s) * 0.25. */
static void deq_iq2_xxs(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    for (int ib = 0; ib < 8; ib++) {
        uint32_t idx, sg;
        memcpy(&idx, b + 2 + 8 * ib, 4);
        memcpy(&sg, b + 6 + 8 * ib, 4);
        const float db = iq2_scale(d, sg >> 28);
        for (int l = 0; l < 4; l++)
            grid8_signed(y + 32 * ib + 8 * l, iq2xxs_grid[(idx >> (8 * l)) & 0xff], iq2xxs_grid_levels, db,
                         signs_from_7bits((sg >> (7 * l)) & 127));
    }
}

/* IQ2_XS: f16 d, 32 u16 (9-bit grid index, 7-bit sign group), 8 bytes of
 * two 4-bit scales (one per 16 elements). */
static void deq_iq2_xs(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *sc = b + 66;
    for (int ib = 0; ib < 8; ib++) {
        const float db0 = iq2_scale(d, sc[ib] & 0x0f), db1 = iq2_scale(d, sc[ib] >> 4);
        for (int l = 0; l < 4; l++) {
            uint16_t q;
            memcpy(&q, b + 2 + 2 * (4 * ib + l), 2);
            grid8_signed(y + 32 * ib + 8 * l, iq2xs_grid[q & 511], iq2xs_grid_levels, l < 2 ? db0 : db1,
                         signs_from_7bits(q >> 9));
        }
    }
}

/* IQ2_S: f16 d, 32 low index bytes, 32 sign bytes, 8 bytes of 2-bit index
 * extensions (10-bit indices), 8 bytes of two 4-bit scales. */
static void deq_iq2_s(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *qs = b + 2, *signs = b + 34, *qh = b + 66, *sc = b + 74;
    for (int ib = 0; ib < 8; ib++) {
        const float db0 = iq2_scale(d, sc[ib] & 0x0f), db1 = iq2_scale(d, sc[ib] >> 4);
        for (int l = 0; l < 4; l++) {
            uint32_t idx = qs[4 * ib + l] | (((uint32_t)(qh[ib] >> (2 * l)) & 3) << 8);
            grid8_signed(y + 32 * ib + 8 * l, iq2s_grid[idx], iq2s_grid_levels, l < 2 ? db0 : db1,
                         signs[4 * ib + l]);
        }
    }
}

/* IQ3_XXS: f16 d, 64 bytes of 8-bit indices of 4-value points, then per 32
 * elements a u32: four 7-bit sign groups and a 4-bit scale s;
 * scale d * (0.5 + s) * 0.5. */
static void deq_iq3_xxs(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *qs = b + 2;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t sg;
        memcpy(&sg, b + 66 + 4 * ib, 4);
        const float db = d * (0.5f + (float)(sg >> 28)) * 0.5f;
        for (int l = 0; l < 4; l++) {
            const uint32_t signs = signs_from_7bits((sg >> (7 * l)) & 127);
            float *out = y + 32 * ib + 8 * l;
            grid4_signed(out, iq3xxs_grid[qs[8 * ib + 2 * l]], iq3xxs_grid_levels, db, signs);
            grid4_signed(out + 4, iq3xxs_grid[qs[8 * ib + 2 * l + 1]], iq3xxs_grid_levels, db, signs >> 4);
        }
    }
}

/* IQ3_S: f16 d, 64 low index bytes, 8 bytes of ninth index bits, 32 sign
 * bytes (one bit per element), 4 bytes of two 4-bit scales s (one per 32
 * elements); scale d * (1 + 2s). */
static void deq_iq3_s(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *qs = b + 2, *qh = b + 66, *signs = b + 74, *sc = b + 106;
    for (int ib = 0; ib < 8; ib++) {
        const float db = d * (float)(1 + 2 * ((sc[ib / 2] >> (4 * (ib % 2))) & 0x0f));
        for (int l = 0; l < 8; l++) {
            const uint16_t p = iq3s_grid[qs[8 * ib + l] | (((uint32_t)(qh[ib] >> l) & 1) << 8)];
            const uint8_t sg = signs[4 * ib + l / 2] >> (4 * (l % 2));
            grid4_signed(y + 32 * ib + 4 * l, p, iq3s_grid_levels, db, sg);
        }
    }
}

/* IQ1_S: f16 d, 32 low index bytes, 8 u16: per 32 elements four 3-bit index
 * extensions (11-bit indices into a {-1, 0, 1} lattice), a 3-bit scale s and
 * the sign of a +-1/8 shift; value d * (2s + 1) * (point + shift). */
static void deq_iq1_s(const uint8_t *restrict b, float *restrict y)
{
    const float d = read_f16(b);
    const uint8_t *qs = b + 2;
    for (int ib = 0; ib < 8; ib++) {
        uint16_t h;
        memcpy(&h, b + 34 + 2 * ib, 2);
        const float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
        const float delta = h & 0x8000 ? -0.125f : 0.125f;
        for (int l = 0; l < 4; l++) {
            const uint16_t p = iq1s_grid[qs[4 * ib + l] | (((uint32_t)(h >> (3 * l)) & 7) << 8)];
            iq1_grid8(y + 32 * ib + 8 * l, p, dl, delta);
        }
    }
}

/* IQ1_M: 32 low index bytes, 16 bytes of 4-bit fields (3 index bits and the
 * shift sign, one per 8 elements), then 4 u16 holding sixteen 3-bit scales
 * (one per 16 elements) in their low 12 bits and the f16 d spread over their
 * top nibbles. */
static void deq_iq1_m(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *qs = b, *qh = b + 32;
    uint16_t sc[4];
    memcpy(sc, b + 48, 8);
    const uint16_t dbits = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                                      (sc[3] & 0xf000));
    const float d = mp_f16_to_f32(dbits);
    for (int ib = 0; ib < 8; ib++) {
        const int shift = 6 * (ib % 2);
        const float dl1 = d * (float)(2 * ((sc[ib / 2] >> shift) & 7) + 1);
        const float dl2 = d * (float)(2 * ((sc[ib / 2] >> (shift + 3)) & 7) + 1);
        for (int l = 0; l < 4; l++) {
            const uint32_t field = (qh[2 * ib + l / 2] >> (4 * (l % 2))) & 0x0f;
            const uint16_t p = iq1s_grid[qs[4 * ib + l] | ((field & 7) << 8)];
            const float delta = field & 8 ? -0.125f : 0.125f;
            iq1_grid8(y + 32 * ib + 8 * l, p, l < 2 ? dl1 : dl2, delta);
        }
    }
}

int mp_gguf_dequantize_row(uint32_t type, const void *src, uint64_t n, float *dst, mp_error *err)
{
    const mp_ggml_type_info *ti = row_type(type, n, true, err);
    if (!ti)
        return MP_ERR_INPUT;
    const uint8_t *p = src;
    const uint64_t nb = n / ti->block_size;
    const uint32_t bs = ti->block_size, ts = ti->type_size;

    /* one switch per row, then a tight loop over its blocks */
    switch ((mp_ggml_type)type) {
    case MP_GGML_F32:
        memcpy(dst, p, n * 4);
        return MP_OK;
    case MP_GGML_F16:
        deq_f16(p, dst, n);
        return MP_OK;
    case MP_GGML_BF16:
        deq_bf16(p, dst, n);
        return MP_OK;
#define BLOCK_LOOP(fn)                                                                                                 \
    for (uint64_t i = 0; i < nb; i++)                                                                                  \
        fn(p + i * ts, dst + i * bs);                                                                                  \
    return MP_OK
    case MP_GGML_Q4_0:
        BLOCK_LOOP(deq_q4_0);
    case MP_GGML_Q4_1:
        BLOCK_LOOP(deq_q4_1);
    case MP_GGML_Q5_0:
        BLOCK_LOOP(deq_q5_0);
    case MP_GGML_Q5_1:
        BLOCK_LOOP(deq_q5_1);
    case MP_GGML_Q8_0:
        BLOCK_LOOP(deq_q8_0);
    case MP_GGML_Q2_K:
        BLOCK_LOOP(deq_q2_k);
    case MP_GGML_Q3_K:
        BLOCK_LOOP(deq_q3_k);
    case MP_GGML_Q4_K:
        BLOCK_LOOP(deq_q4_k);
    case MP_GGML_Q5_K:
        BLOCK_LOOP(deq_q5_k);
    case MP_GGML_Q6_K:
        BLOCK_LOOP(deq_q6_k);
    case MP_GGML_Q8_K:
        BLOCK_LOOP(deq_q8_k);
    case MP_GGML_IQ4_NL:
        BLOCK_LOOP(deq_iq4_nl);
    case MP_GGML_IQ4_XS:
        BLOCK_LOOP(deq_iq4_xs);
    case MP_GGML_TQ1_0:
        BLOCK_LOOP(deq_tq1_0);
    case MP_GGML_TQ2_0:
        BLOCK_LOOP(deq_tq2_0);
    case MP_GGML_MXFP4:
        BLOCK_LOOP(deq_mxfp4);
    case MP_GGML_IQ2_XXS:
        BLOCK_LOOP(deq_iq2_xxs);
    case MP_GGML_IQ2_XS:
        BLOCK_LOOP(deq_iq2_xs);
    case MP_GGML_IQ2_S:
        BLOCK_LOOP(deq_iq2_s);
    case MP_GGML_IQ3_XXS:
        BLOCK_LOOP(deq_iq3_xxs);
    case MP_GGML_IQ3_S:
        BLOCK_LOOP(deq_iq3_s);
    case MP_GGML_IQ1_S:
        BLOCK_LOOP(deq_iq1_s);
    case MP_GGML_IQ1_M:
        BLOCK_LOOP(deq_iq1_m);
#undef BLOCK_LOOP
    default:
        break;
    }
    return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "tensor type %s (id %u) is not supported", ti->name, type);
}
