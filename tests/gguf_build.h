/* gguf_build: a tiny GGUF writer for tests that need hand-made (often
 * deliberately broken) GGUF files. Byte order is the host's (little-endian). */
#ifndef MP_TEST_GGUF_BUILD_H
#define MP_TEST_GGUF_BUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mp_test.h"

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static inline void put(buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        REQUIRE(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static inline void put_u32(buf *b, uint32_t v)
{
    put(b, &v, 4);
}

static inline void put_u64(buf *b, uint64_t v)
{
    put(b, &v, 8);
}

static inline void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static inline void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static inline void kv_u32(buf *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, MP_GGUF_UINT32);
    put_u32(b, v);
}

static inline void kv_i32(buf *b, const char *key, int32_t v)
{
    put_str(b, key);
    put_u32(b, MP_GGUF_INT32);
    put(b, &v, 4);
}

static inline void kv_u16(buf *b, const char *key, uint16_t v)
{
    put_str(b, key);
    put_u32(b, MP_GGUF_UINT16);
    put(b, &v, 2);
}

static inline void kv_f32(buf *b, const char *key, float v)
{
    put_str(b, key);
    put_u32(b, MP_GGUF_FLOAT32);
    put(b, &v, 4);
}

static inline void kv_bool(buf *b, const char *key, bool v)
{
    uint8_t x = v;
    put_str(b, key);
    put_u32(b, MP_GGUF_BOOL);
    put(b, &x, 1);
}

static inline void kv_str(buf *b, const char *key, const char *v)
{
    put_str(b, key);
    put_u32(b, MP_GGUF_STRING);
    put_str(b, v);
}

static inline void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                               uint64_t off)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}

static inline void pad_to(buf *b, size_t alignment)
{
    static const uint8_t zero[64];
    while (b->n % alignment)
        put(b, zero, 1);
}

static inline void fill(buf *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)(seed + i * 7);
        put(b, &v, 1);
    }
}

/* Writes bytes to a file; returns the path (a mp_test_path ring slot). */
static inline const char *write_bytes(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    const char *path = mp_test_path(dir, name);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    REQUIRE(n == 0 || fwrite(p, 1, n, f) == n);
    REQUIRE(fclose(f) == 0);
    return path;
}

#endif
