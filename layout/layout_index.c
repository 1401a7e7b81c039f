/* The element formulas of docs/LAYOUTS.md, transcribed as written. They are
 * deliberately independent of the packers (which walk storage order), so that
 * the tests can read every packed element back through them. */
#include "mp_layout.h"

uint64_t mp_amx_int8_offset(const mp_amx_int8_layout *lay, uint32_t n, uint32_t k)
{
    uint64_t Kg = lay->kg, K = lay->k, G = lay->groups, Np = lay->np;
    uint64_t g = k / Kg, kk = k % Kg;
    uint64_t Kp_g = (g < G - 1) ? Kg : mp_align_up(K - g * Kg, 64);
    return g * Np * Kg + ((n / 16) * (Kp_g / 64) + kk / 64) * 1024 + ((kk % 64) / 4) * 64 + (n % 16) * 4 + (kk % 4);
}

uint64_t mp_amx_bf16_offset(const mp_amx_bf16_layout *lay, uint32_t n, uint32_t k)
{
    uint64_t Kg = lay->kg, K = lay->k, G = lay->groups, Np = lay->np;
    uint64_t g = k / Kg, kk = k % Kg;
    uint64_t Kp_g = (g < G - 1) ? Kg : mp_align_up(K - g * Kg, 32);
    return g * Np * Kg * 2 + ((n / 16) * (Kp_g / 32) + kk / 32) * 1024 + ((kk % 32) / 2) * 64 + (n % 16) * 4 +
           (kk % 2) * 2;
}

uint64_t mp_gpu_int4_byte(const mp_gpu_int4_layout *lay, uint32_t n, uint32_t k)
{
    uint64_t Kp = lay->kp;
    return (uint64_t)n * (Kp / 2) + k / 2;
}
