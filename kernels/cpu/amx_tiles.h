/* amx_tiles: what the AMX kernels (kern_amx.c, kern_q8v1_amx.c,
 * kern_bf16_amx.c) share: the tile configuration of their 2x2 blocking (and
 * its cache), the C block's zeroing, loads and stores, and the column mask
 * of a partial 16-output tile. Include only from files compiled with the AMX
 * flags (an `_amx.c` suffix). */
#ifndef MP_AMX_TILES_H
#define MP_AMX_TILES_H

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct __attribute__((packed, aligned(64))) tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tile numbers (macros: the tile intrinsics paste them into the asm text) */
#define T_A0 0
#define T_A1 1
#define T_B0 2
#define T_B1 3
#define T_C00 4
#define T_C01 5
#define T_C10 6
#define T_C11 7

/* A and C tiles have mr0 (first 16-row half) or mr1 (second half, may be 0:
 * then those tiles stay unconfigured and unused) rows. */
static inline void load_tile_config(int mr0, int mr1)
{
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    const int rows[8] = {mr0, mr1, 16, 16, mr0, mr0, mr1, mr1};
    for (int t = 0; t < 8; t++) {
        c.rows[t] = (uint8_t)rows[t];
        c.colsb[t] = rows[t] ? 64 : 0;
    }
    /* not _tile_loadconfig: GCC 12's version declares only 8 bytes of the
     * config as read, so the stores of rows/colsb could be dropped as dead */
    __asm__ volatile("ldtilecfg %0" ::"m"(c));
}

/* The configuration for a block of `rows` (1-32) rows, loaded only when it
 * differs from cfg (the halves' rows now loaded; -1 before the first). */
static inline void amx_set_rows(int cfg[2], int rows)
{
    const int mr0 = rows >= 16 ? 16 : rows, mr1 = rows - mr0;
    if (mr0 != cfg[0] || mr1 != cfg[1]) {
        load_tile_config(mr0, mr1);
        cfg[0] = mr0;
        cfg[1] = mr1;
    }
}

/* Full 16-row tiles, all eight zeroed: the start of the peak loops (tile
 * products with no loads). */
static inline void amx_peak_tiles(void)
{
    load_tile_config(16, 16);
    _tile_zero(T_A0);
    _tile_zero(T_A1);
    _tile_zero(T_B0);
    _tile_zero(T_B1);
    _tile_zero(T_C00);
    _tile_zero(T_C01);
    _tile_zero(T_C10);
    _tile_zero(T_C11);
}

/* The C tiles of a block (C00, and C01 / C10 / C11 when `two` outputs
 * blocks / a `lower` row half are in use) zeroed, or loaded from or stored
 * to a 32x32 block of 4-byte sums (int32 or f32) with row stride 32. */
static inline void amx_c_zero(bool two, bool lower)
{
    _tile_zero(T_C00);
    if (two)
        _tile_zero(T_C01);
    if (lower) {
        _tile_zero(T_C10);
        if (two)
            _tile_zero(T_C11);
    }
}

static inline void amx_c_load(const void *c, bool two, bool lower)
{
    const char *p = c;
    _tile_loadd(T_C00, p, 128);
    if (two)
        _tile_loadd(T_C01, p + 64, 128);
    if (lower) {
        _tile_loadd(T_C10, p + 16 * 128, 128);
        if (two)
            _tile_loadd(T_C11, p + 16 * 128 + 64, 128);
    }
}

static inline void amx_c_store(void *c, bool two, bool lower)
{
    char *p = c;
    _tile_stored(T_C00, p, 128);
    if (two)
        _tile_stored(T_C01, p + 64, 128);
    if (lower) {
        _tile_stored(T_C10, p + 16 * 128, 128);
        if (two)
            _tile_stored(T_C11, p + 16 * 128 + 64, 128);
    }
}

/* The lanes of the 16 outputs starting at c0 that lie in [n0, n1). */
static inline __mmask16 column_mask(uint32_t c0, uint32_t n0, uint32_t n1)
{
    uint32_t lo = n0 > c0 ? n0 - c0 : 0;
    uint32_t hi = n1 - c0 >= 16 ? 16 : n1 - c0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

#endif
