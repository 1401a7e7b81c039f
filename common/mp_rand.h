/* mp_rand: splitmix64 (Steele, Lea and Flood, 2014), the one mixing function
 * the project's seeded generators and hashes of keys share, so that a seed
 * gives the same numbers on every machine. */
#ifndef MP_RAND_H
#define MP_RAND_H

#include <stdint.h>

#define MP_SPLITMIX64_GAMMA 0x9E3779B97F4A7C15ull

/* The stateless form: x + gamma, mixed. */
static inline uint64_t mp_splitmix64(uint64_t x)
{
    x += MP_SPLITMIX64_GAMMA;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The sequence form: the next value of the generator whose state is *state. */
static inline uint64_t mp_splitmix64_next(uint64_t *state)
{
    uint64_t r = mp_splitmix64(*state);
    *state += MP_SPLITMIX64_GAMMA;
    return r;
}

#endif
