/* mp_num: scalar number formats (bf16, f16, fp8 e4m3) and overflow-checked
 * size arithmetic. Header-only so every kernel's scalar reference can inline it. */
#ifndef MP_NUM_H
#define MP_NUM_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline float mp_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t mp_f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float mp_bf16_to_f32(uint16_t h)
{
    return mp_f32_from_bits((uint32_t)h << 16);
}

/* Round to nearest even, as PyTorch does; NaN stays a (quiet) NaN. */
static inline uint16_t mp_f32_to_bf16(float f)
{
    uint32_t u = mp_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE half precision, exact for all 65536 inputs. */
static inline float mp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return mp_f32_from_bits(bits);
}

/* Round to nearest even; overflow gives infinity. */
static inline uint16_t mp_f32_to_f16(float f)
{
    uint32_t u = mp_f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (au >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (au < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        float af = mp_f32_from_bits(au);
        /* 2^-24 is the subnormal step; rint rounds half to even */
        uint32_t q = (uint32_t)rintf(af * 16777216.0f);
        return (uint16_t)(sign | q);
    }
    uint32_t exp = ((au >> 23) - 127 + 15);
    uint32_t man = au & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* OCP FP8 E4M3 ("e4m3fn": no infinities, 0x7f/0xff are NaN, max 448). */
static inline float mp_fp8_e4m3_to_f32(uint8_t v)
{
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t exp = (v >> 3) & 0xfu;
    uint32_t man = v & 0x7u;
    if (exp == 0xf && man == 0x7)
        return mp_f32_from_bits(sign | 0x7fc00000u);
    if (exp == 0) {
        float m = (float)man * 0.001953125f; /* man * 2^-9 */
        return sign ? -m : m;
    }
    return mp_f32_from_bits(sign | ((exp + 127 - 7) << 23) | (man << 20));
}

/* Round to nearest even, saturating to +-448 (as torch's float8_e4m3fn cast
 * does for finite inputs in DeepSeek's quantizer, which clamps first). */
static inline uint8_t mp_f32_to_fp8_e4m3(float f)
{
    uint32_t u = mp_f32_to_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    float af = fabsf(f);
    if (af != af)
        return (uint8_t)(sign | 0x7fu);
    if (af >= 448.0f)
        return (uint8_t)(sign | 0x7eu);
    if (af < 0.015625f) { /* subnormal range: step 2^-9 */
        uint32_t q = (uint32_t)rintf(af * 512.0f);
        return (uint8_t)(sign | q); /* q == 8 lands exactly on the smallest normal */
    }
    uint32_t au = mp_f32_to_bits(af);
    uint32_t exp = (au >> 23) - 127 + 7;
    uint32_t man = au & 0x7fffffu;
    uint32_t h = (exp << 3) | (man >> 20);
    uint32_t rest = man & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (h & 1u)))
        h++;
    if (h > 0x7eu)
        h = 0x7eu;
    return (uint8_t)(sign | h);
}

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool mp_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static inline bool mp_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

static inline uint64_t mp_align_up(uint64_t v, uint64_t alignment)
{
    return (v + alignment - 1) / alignment * alignment;
}

#endif
