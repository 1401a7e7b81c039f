/* mp_array: heap arrays that grow one element at a time, doubling their
 * capacity when full (amortized constant time per element). */
#ifndef MP_ARRAY_H
#define MP_ARRAY_H

#include <stddef.h>

/* Makes room for element n of an array of elem_size-byte elements with
 * capacity *cap: returns items itself while n < *cap, else items reallocated
 * to twice *cap (first_cap when *cap is 0) and *cap updated. Returns NULL
 * when out of memory or when the size overflows; items (still the caller's
 * to free) and *cap are then unchanged. */
void *mp_array_grow(void *items, size_t n, size_t *cap, size_t elem_size, size_t first_cap);

#endif
