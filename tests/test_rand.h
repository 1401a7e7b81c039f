/* Deterministic random numbers for the tests and benchmarks (splitmix64). */
#ifndef MP_TEST_RAND_H
#define MP_TEST_RAND_H

#include <math.h>
#include <stdint.h>

#include "mp_rand.h"

typedef struct mp_rng {
    uint64_t s;
} mp_rng;

static inline uint64_t mp_rng_u64(mp_rng *r)
{
    return mp_splitmix64_next(&r->s);
}

/* uniform in [0, 1) */
static inline double mp_rng_unif(mp_rng *r)
{
    return (double)(mp_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double mp_rng_gauss(mp_rng *r)
{
    double u = mp_rng_unif(r), v = mp_rng_unif(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* Student-t with nu degrees of freedom: heavy tails for nu small. */
static inline double mp_rng_student_t(mp_rng *r, int nu)
{
    double z = mp_rng_gauss(r), chi = 0.0;
    for (int i = 0; i < nu; i++) {
        double g = mp_rng_gauss(r);
        chi += g * g;
    }
    return z / sqrt(chi / nu);
}

#endif
