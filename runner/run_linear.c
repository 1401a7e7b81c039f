/* Matrix-times-activations for every weight layout, and the row-parallel split. */
#include <omp.h>

#include "mp_forward.h"

void mp_linear_run(const mp_cpu_kernels *kern, const mp_linear *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                   uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    switch (w->kind) {
    case MP_LIN_F32:
        kern->gemm_f32(w->f32, w->k, w->k, m, x, ldx, n0, n1, y, ldy, accumulate);
        break;
    case MP_LIN_BF16:
        kern->gemm_bf16_rm(w->bf16, w->k, w->k, m, x, ldx, n0, n1, y, ldy, accumulate);
        break;
    case MP_LIN_INT4:
        kern->gemm_int4(&w->int4, m, x, ldx, n0, n1, y, ldy, accumulate);
        break;
    case MP_LIN_BF16_AMX:
        kern->gemm_bf16_amx(&w->amx_bf16, m, x, ldx, n0, n1, y, ldy, accumulate);
        break;
    case MP_LIN_Q8:
        break; /* needs quantized activations: the expert code calls gemm_q8 itself */
    }
}

/* Column chunks: multiples of 64 (whole AMX/AVX-512 blocks), about four per
 * thread so uneven progress evens out, and no chunk so small that the
 * parallel region costs more than the work. */
static uint32_t chunk_for(uint32_t n, size_t m, uint32_t k, int threads)
{
    uint64_t work = (uint64_t)n * k * (m ? m : 1);
    if (threads <= 1 || work < MP_PAR_MIN_WORK)
        return n;
    uint32_t c = (uint32_t)((n + 4u * (uint32_t)threads - 1) / (4u * (uint32_t)threads));
    c = (c + 63u) & ~63u;
    return c < 64 ? 64 : c;
}

void mp_linear_par(const mp_model *mod, const mp_linear *w, size_t m, const float *x, size_t ldx, float *y, size_t ldy,
                   bool accumulate)
{
    uint32_t chunk = chunk_for(w->n, m, w->k, mod->threads);
    uint32_t nchunks = (w->n + chunk - 1) / chunk;
    if (nchunks <= 1) {
        mp_linear_run(mod->kern, w, m, x, ldx, 0, w->n, y, ldy, accumulate);
        return;
    }
    int nt = mod->threads < (int)nchunks ? mod->threads : (int)nchunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (uint32_t c = 0; c < nchunks; c++) {
        uint32_t n0 = c * chunk, n1 = n0 + chunk < w->n ? n0 + chunk : w->n;
        mp_linear_run(mod->kern, w, m, x, ldx, n0, n1, y, ldy, accumulate);
    }
}

void mp_rmsnorm_rows(const mp_model *mod, size_t m, const float *x, size_t ldx, const float *w, uint32_t dim,
                     float *y, size_t ldy)
{
    float eps = mod->d->rms_norm_eps;
    int nt = mp_threads_for(mod, (uint64_t)m * dim * 8, m);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t r = 0; r < m; r++)
        mod->kern->rmsnorm(dim, x + r * ldx, w, eps, y + r * ldy);
}
