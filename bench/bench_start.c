/* Time to first token, split into its parts, and the decode speed:
 *   open     mp_model_load minus the GPU's share (container, tokenizer,
 *            views; the prefault when asked)
 *   context  CUDA context, cuBLAS and workspace (hybrid)
 *   upload   the GPU section's copy to the GPU (hybrid)
 *   session  KV cache and scratch
 *   prefill  the first prompt of N tokens (random ids), up to its logits
 * then D greedy decode steps (tokens/s), in hybrid mode with CUDA Graphs and,
 * with --eager-too, again without them.
 *
 * With --check-cpu (hybrid only) the same prompt also runs on the CPU path
 * of the same container: max |logit difference| over every prompt row, top-1
 * agreement, and how many of D greedy tokens agree.
 *
 * usage: bench_start FILE [--prompt N] [--decode D] [--cpu-only] [--prefault]
 *                    [--threads T] [--eager-too] [--check-cpu] [--label TEXT] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_forward.h"
#include "mp_gpu.h"
#include "mp_perf.h"
#include "mp_runner.h"

static int32_t argmax(const float *v, uint32_t n)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return (int32_t)b;
}

/* D greedy steps after the prompt; tokens per second. */
static double decode(mp_model *m, const int32_t *prompt, uint32_t N, uint32_t D, double *prefill_s, mp_error *err)
{
    mp_session *s = NULL;
    if (mp_session_new(m, N + D + 1, &s, err))
        return -1;
    const uint32_t V = mp_model_vocab(m);
    float *logits = malloc((size_t)V * sizeof *logits);
    double t0 = mp_perf_now();
    if (mp_session_eval(s, prompt, N, logits, NULL, err))
        return -1;
    if (prefill_s)
        *prefill_s = mp_perf_now() - t0;
    int32_t next = argmax(logits, V);
    double t1 = mp_perf_now();
    for (uint32_t i = 0; i < D; i++) {
        if (mp_session_eval(s, &next, 1, logits, NULL, err))
            return -1;
        next = argmax(logits, V);
    }
    double dt = mp_perf_now() - t1;
    free(logits);
    mp_session_free(s);
    return D ? D / dt : 0;
}

/* Prompt logits (every row) and greedy tokens of a model. */
static int prompt_and_greedy(mp_model *m, const int32_t *prompt, uint32_t N, uint32_t D, float *rows, int32_t *tok,
                             mp_error *err)
{
    const uint32_t V = mp_model_vocab(m);
    mp_session *s = NULL;
    int rc = mp_session_new(m, N + D + 1, &s, err);
    if (rc)
        return rc;
    float *l = malloc((size_t)V * sizeof *l);
    rc = mp_session_eval(s, prompt, N, NULL, rows, err);
    int32_t next = argmax(rows + (size_t)(N - 1) * V, V);
    for (uint32_t i = 0; i < D && !rc; i++) {
        tok[i] = next;
        rc = mp_session_eval(s, &next, 1, l, NULL, err);
        next = argmax(l, V);
    }
    free(l);
    mp_session_free(s);
    return rc;
}

static int check_against_cpu(mp_model *hy, const char *file, const int32_t *prompt, uint32_t N, uint32_t D,
                             mp_error *err)
{
    mp_model_opts mo;
    mp_model_opts_default(&mo);
    mo.cpu_only = true;
    mp_model *cpu = NULL;
    int rc = mp_model_load(file, &mo, &cpu, err);
    if (rc)
        return rc;
    const uint32_t V = mp_model_vocab(hy);
    float *a = malloc((size_t)N * V * sizeof *a), *b = malloc((size_t)N * V * sizeof *b);
    int32_t *ta = calloc(D + 1, sizeof *ta), *tb = calloc(D + 1, sizeof *tb);
    if (!(rc = prompt_and_greedy(hy, prompt, N, D, a, ta, err)) && !(rc = prompt_and_greedy(cpu, prompt, N, D, b, tb, err))) {
        double diff = 0, scale = 0;
        uint32_t top1 = 0, same = 0;
        for (uint32_t r = 0; r < N; r++) {
            const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
            for (uint32_t i = 0; i < V; i++) {
                diff = fmax(diff, fabs((double)x[i] - y[i]));
                scale = fmax(scale, fabs((double)y[i]));
            }
            top1 += argmax(x, V) == argmax(y, V);
        }
        while (same < D && ta[same] == tb[same])
            same++;
        printf("  hybrid vs cpu-only: %u prompt rows, max |logit diff| %.3e (largest |logit| %.2f), top-1 %u/%u, "
               "greedy %u/%u identical\n",
               N, diff, scale, top1, N, same, D);
    }
    free(a);
    free(b);
    free(ta);
    free(tb);
    mp_model_free(cpu);
    return rc;
}

int main(int argc, char **argv)
{
    const char *file = NULL, *label = "";
    uint32_t N = 128, D = 32;
    int threads = 0;
    bool cpu_only = false, prefault = false, eager_too = false, check_cpu = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc)
            N = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc)
            D = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!strcmp(argv[i], "--cpu-only"))
            cpu_only = true;
        else if (!strcmp(argv[i], "--prefault"))
            prefault = true;
        else if (!strcmp(argv[i], "--eager-too"))
            eager_too = true;
        else if (!strcmp(argv[i], "--check-cpu"))
            check_cpu = true;
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else {
            fprintf(stderr, "usage: bench_start FILE [--prompt N] [--decode D] [--cpu-only] [--prefault] [--threads T] "
                            "[--eager-too] [--label TEXT]\n");
            return 1;
        }
    }
    if (!file || N == 0)
        return 1;
    mp_error err = {0};
    mp_model_opts mo;
    mp_model_opts_default(&mo);
    mo.cpu_only = cpu_only;
    mo.prefault = prefault;
    mo.threads = threads;
    double t0 = mp_perf_now();
    mp_model *m = NULL;
    if (mp_model_load(file, &mo, &m, &err)) {
        fprintf(stderr, "bench_start: %s\n", err.msg);
        return 2;
    }
    double t_load = mp_perf_now() - t0;
    mp_gpu_load_stats gs = {0};
    if (m->gpu)
        mp_gpu_model_stats(m->gpu, &gs);
    const uint32_t V = mp_model_vocab(m);
    int32_t *prompt = malloc(N * sizeof *prompt);
    for (uint32_t i = 0; i < N; i++)
        prompt[i] = (int32_t)(3 + (i * 2654435761u) % (V - 3));
    mp_session *s = NULL;
    double t1 = mp_perf_now();
    if (mp_session_new(m, N + 1, &s, &err)) {
        fprintf(stderr, "bench_start: %s\n", err.msg);
        return 2;
    }
    double t_sess = mp_perf_now() - t1;
    float *logits = malloc((size_t)V * sizeof *logits);
    double t2 = mp_perf_now();
    if (mp_session_eval(s, prompt, N, logits, NULL, &err)) {
        fprintf(stderr, "bench_start: %s\n", err.msg);
        return 2;
    }
    double t_prefill = mp_perf_now() - t2;
    mp_session_free(s);
    printf("%s%s: %s, %d threads%s\n", label, file, mp_model_backend_name(m), mp_model_threads(m),
           prefault ? ", --prefault" : "");
    /* the GPU's context and upload run on their own thread during the load */
    printf("  time to first token %.3f s = load %.3f (prefault %.3f s of %.0f MB%s; GPU thread alongside: context "
           "%.3f + upload %.3f of %.0f MB at %.1f GB/s, %s, pinning %.3f) + session %.3f + prefill %.3f (%u tokens, "
           "%.0f tok/s)\n",
           t_load + t_sess + t_prefill, t_load, m->load_info.prefault_seconds, m->load_info.prefault_bytes * 1e-6,
           !prefault ? "" : m->load_info.hugepage_advice ? ", MADV_HUGEPAGE taken" : ", MADV_HUGEPAGE refused",
           gs.context_seconds, gs.upload_seconds, gs.section_bytes * 1e-6,
           gs.upload_seconds > 0 ? gs.section_bytes / gs.upload_seconds * 1e-9 : 0.0,
           gs.registered ? "registered" : "staged", gs.pin_seconds, t_sess, t_prefill, N, N / t_prefill);
    if (D) {
        double pf = 0;
        double tps = decode(m, prompt, N, D, &pf, &err);
        if (tps < 0) {
            fprintf(stderr, "bench_start: %s\n", err.msg);
            return 2;
        }
        uint64_t gsteps = 0, batches = 0;
        if (m->gpu)
            mp_gpu_model_steps(m->gpu, &gsteps, &batches);
        printf("  second prompt: prefill %.3f s (%.0f tok/s); decode %u tokens: %.1f tok/s (%llu steps from CUDA "
               "Graphs)\n",
               pf, N / pf, D, tps, (unsigned long long)gsteps);
        if (eager_too && m->gpu) {
            mp_gpu_model *saved = m->gpu, *eager = NULL;
            mp_gpu_opts go;
            mp_gpu_opts_default(&go);
            go.no_graphs = true;
            if (mp_gpu_model_create(m, &go, &eager, &err)) {
                fprintf(stderr, "bench_start: %s\n", err.msg);
                return 2;
            }
            m->gpu = eager;
            double te = decode(m, prompt, N, D, NULL, &err);
            m->gpu = saved;
            mp_gpu_model_free(eager);
            printf("  decode without CUDA Graphs: %.1f tok/s (graphs: %.2fx)\n", te, tps / te);
        }
    }
    if (check_cpu && m->gpu && check_against_cpu(m, file, prompt, N, D, &err)) {
        fprintf(stderr, "bench_start: %s\n", err.msg);
        return 2;
    }
    free(prompt);
    free(logits);
    mp_model_free(m);
    return 0;
}
