/* Helpers shared by the runner's files; not part of its API. */
#ifndef MP_RUN_INTERNAL_H
#define MP_RUN_INTERNAL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* count * size bytes, 64-byte aligned (AVX-512 rows, AMX tile rows), zeroed;
 * NULL on overflow or when out of memory. Free with free(). */
static inline void *mp_run_calloc64(size_t count, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(count, size, &n))
        return NULL;
    n = (n + 63) & ~(size_t)63;
    if (n == 0)
        n = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0)
        return NULL;
    memset(p, 0, n);
    return p;
}

#endif
