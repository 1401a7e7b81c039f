/* GPU probes through kernels/cuda/mp_cuda.h: host-to-device and
 * device-to-device copy bandwidth, device memory in use. Without CUDA (or
 * without a device) open returns no handle and the rest is never called. */
#include <stdlib.h>
#include <string.h>

#include "mp_perf.h"

#if MP_HAVE_CUDA
#include "mp_cuda.h"

struct mp_perf_gpu {
    mp_cuda_ctx *ctx;
};

int mp_perf_gpu_open(mp_perf_gpu **out, mp_error *err)
{
    *out = NULL;
    if (mp_cuda_device_count() < 1)
        return MP_OK;
    mp_perf_gpu *g = calloc(1, sizeof *g);
    if (!g)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    /* copies need no workspace: the smallest the context takes */
    int rc = mp_cuda_ctx_create(0, (size_t)1 << 20, &g->ctx, err);
    if (rc) {
        free(g);
        return rc;
    }
    *out = g;
    return MP_OK;
}

void mp_perf_gpu_close(mp_perf_gpu *g)
{
    if (!g)
        return;
    mp_cuda_ctx_destroy(g->ctx);
    free(g);
}

const char *mp_perf_gpu_name(const mp_perf_gpu *g)
{
    return g ? mp_cuda_device_name(g->ctx) : "";
}

uint64_t mp_perf_gpu_used_bytes(mp_perf_gpu *g, uint64_t *total)
{
    size_t fr = 0, tot = 0;
    mp_error err = {0};
    if (total)
        *total = 0;
    if (!g || mp_cuda_mem_info(g->ctx, &fr, &tot, &err))
        return 0;
    if (total)
        *total = tot;
    return tot - fr;
}

/* Median of `reps` timings of `copies` back-to-back copies dst <- src, in
 * seconds per copy. */
static int time_copies(mp_perf_gpu *g, mp_cuda_timer *tm, void *dst, const void *src, size_t bytes, int copies,
                       int reps, double *out, mp_error *err)
{
    double t[16];
    int rc;
    if (reps > 16)
        reps = 16;
    if ((rc = mp_cuda_copy_async(g->ctx, dst, src, bytes, err)) || (rc = mp_cuda_sync(g->ctx, err)))
        return rc; /* warm-up */
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        if ((rc = mp_cuda_timer_start(g->ctx, tm, err)))
            return rc;
        for (int i = 0; i < copies; i++)
            if ((rc = mp_cuda_copy_async(g->ctx, dst, src, bytes, err)))
                return rc;
        if ((rc = mp_cuda_timer_stop(g->ctx, tm, &ms, err)))
            return rc;
        t[r] = ms * 1e-3 / copies;
    }
    for (int i = 1; i < reps; i++) /* insertion sort: a handful of values */
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    *out = t[reps / 2];
    return MP_OK;
}

int mp_perf_gpu_copies(mp_perf_gpu *g, mp_perf_copies *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    const size_t dbytes = (size_t)1 << 30, hbytes = (size_t)256 << 20;
    void *a = NULL, *b = NULL, *h = NULL;
    mp_cuda_timer *tm = NULL;
    double sec;
    int rc = mp_cuda_timer_create(g->ctx, &tm, err);
    if (!rc)
        rc = mp_cuda_alloc(g->ctx, dbytes, "bench copy source", &a, err);
    if (!rc)
        rc = mp_cuda_alloc(g->ctx, dbytes, "bench copy target", &b, err);
    if (!rc)
        rc = mp_cuda_memset_async(g->ctx, a, 0x3c, dbytes, err);
    if (!rc && !(rc = time_copies(g, tm, b, a, dbytes, 4, 7, &sec, err)))
        out->d2d_bytes_per_second = 2.0 * (double)dbytes / sec; /* read + written */
    if (!rc)
        rc = mp_cuda_host_alloc(g->ctx, hbytes, "bench pinned buffer", &h, err);
    if (!rc) {
        memset(h, 0x5a, hbytes);
        if (!(rc = time_copies(g, tm, a, h, hbytes, 1, 7, &sec, err)))
            out->h2d_bytes_per_second = (double)hbytes / sec;
    }
    mp_cuda_host_free(g->ctx, h);
    mp_cuda_free(g->ctx, a);
    mp_cuda_free(g->ctx, b);
    mp_cuda_timer_destroy(tm);
    return rc;
}

#else

struct mp_perf_gpu {
    int unused;
};

int mp_perf_gpu_open(mp_perf_gpu **out, mp_error *err)
{
    (void)err;
    *out = NULL;
    return MP_OK;
}

void mp_perf_gpu_close(mp_perf_gpu *g)
{
    (void)g;
}

const char *mp_perf_gpu_name(const mp_perf_gpu *g)
{
    (void)g;
    return "";
}

uint64_t mp_perf_gpu_used_bytes(mp_perf_gpu *g, uint64_t *total)
{
    (void)g;
    if (total)
        *total = 0;
    return 0;
}

int mp_perf_gpu_copies(mp_perf_gpu *g, mp_perf_copies *out, mp_error *err)
{
    (void)g;
    memset(out, 0, sizeof *out);
    return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "this build has no CUDA");
}

#endif
