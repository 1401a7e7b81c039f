/* The probe behind part 2 of device-amx-vcpu-state.log, as it ran there (not part of the build).
 *   gcc -O2 -march=sapphirerapids -pthread device-amx-vcpu-probe1.c -o probe && ./probe [k-steps, default 2^18]
 * throwaway probe: where does the fed 2x2 loop's slow mode come from?. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct __attribute__((packed, aligned(64))) { uint8_t palette, start_row, res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void cfg(void) { cfg_t c; memset(&c, 0, sizeof c); c.palette = 1; for (int t = 0; t < 8; t++) { c.rows[t] = 16; c.colsb[t] = 64; } __asm__ volatile("ldtilecfg %0" ::"m"(c)); }
typedef struct { int cpu, mode, off; uint64_t iters; double tops; } job;
static void *run(void *p) {
    job *j = p;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(j->cpu, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s);
    char *raw = NULL;
    if (j->mode == 2) { raw = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); madvise(raw, 4 << 20, MADV_HUGEPAGE); }
    else raw = aligned_alloc(4096, 65536 + 8192);
    memset(raw, 1, 65536 + 8192);
    int8_t *a = (int8_t *)raw + j->off, *b = a + 16384;
    cfg();
    _tile_zero(4); _tile_zero(5); _tile_zero(6); _tile_zero(7);
    for (int w = 0; w < 2; w++) {
        uint64_t n = w ? j->iters : 2000;
        double t0 = now();
        if (j->mode == 1) { /* no loads */
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (uint64_t i = 0; i < n; i++) { _tile_dpbssd(4, 0, 2); _tile_dpbssd(5, 0, 3); _tile_dpbssd(6, 1, 2); _tile_dpbssd(7, 1, 3); }
        } else if (j->mode == 3) { /* loads only */
            for (uint64_t i = 0; i < n; i++) { size_t k = i & 7; _tile_loadd(2, b + k * 2048, 64); _tile_loadd(0, a + k * 2048, 64); _tile_loadd(3, b + k * 2048 + 1024, 64); _tile_loadd(1, a + k * 2048 + 1024, 64); }
        } else {
            for (uint64_t i = 0; i < n; i++) {
                size_t k = i & 7;
                _tile_loadd(2, b + k * 2048, 64); _tile_loadd(0, a + k * 2048, 64); _tile_dpbssd(4, 0, 2);
                _tile_loadd(3, b + k * 2048 + 1024, 64); _tile_dpbssd(5, 0, 3);
                _tile_loadd(1, a + k * 2048 + 1024, 64); _tile_dpbssd(6, 1, 2); _tile_dpbssd(7, 1, 3);
            }
        }
        double dt = now() - t0;
        if (w) j->tops = (double)n * 4 * 16 * 16 * 64 * 2 / dt * 1e-12;
    }
    _tile_release();
    if (j->mode == 2) munmap(raw, 4 << 20); else free(raw);
    return NULL;
}
static void group(const char *name, int *cpus, int n, int mode, int off, uint64_t iters) {
    pthread_t t[64]; job j[64];
    for (int i = 0; i < n; i++) { j[i] = (job){cpus[i], mode, off, iters, 0}; pthread_create(&t[i], NULL, run, &j[i]); }
    double sum = 0; printf("%-28s mode %d off %4d:", name, mode, off);
    for (int i = 0; i < n; i++) { pthread_join(t[i], NULL); sum += j[i].tops; if (n <= 16) printf(" %d:%.2f", cpus[i], j[i].tops); }
    printf("  | sum %.2f\n", sum); fflush(stdout);
}
int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    uint64_t it = argc > 1 ? strtoull(argv[1], 0, 10) : (1u << 18);
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int all[64]; for (int i = 0; i < ncpu; i++) all[i] = i;
    for (int rep = 0; rep < 2; rep++) {
        printf("-- rep %d: one thread on each cpu in turn (fed / no-load / loads only)\n", rep);
        for (int c = 0; c < ncpu; c++) { char nm[32]; snprintf(nm, 32, "cpu %d alone", c); group(nm, &c, 1, 0, 0, it); }
        for (int c = 0; c < ncpu; c += 5) { char nm[32]; snprintf(nm, 32, "cpu %d alone", c); group(nm, &c, 1, 1, 0, it); group(nm, &c, 1, 3, 0, it); }
        printf("-- offsets on cpu 0\n");
        int offs[] = {0, 64, 1024, 2048, 4032};
        for (int i = 0; i < 5; i++) { int c = 0; group("cpu 0 alone", &c, 1, 0, offs[i], it); }
        { int c = 0; group("cpu 0 alone hugepage", &c, 1, 2, 0, it); }
        printf("-- concurrency\n");
        int p01[] = {0, 1}; group("cpus 0,1", p01, 2, 0, 0, it);
        int p08[] = {0, ncpu / 2}; group("cpus 0,n/2", p08, 2, 0, 0, it);
        int ev[32], ne = 0; for (int i = 0; i < ncpu; i += 2) ev[ne++] = i; group("even cpus", ev, ne, 0, 0, it);
        int lo[32]; for (int i = 0; i < ncpu / 2; i++) lo[i] = i; group("first half", lo, ncpu / 2, 0, 0, it);
        group("all cpus", all, ncpu, 0, 0, it);
        group("all cpus no-load", all, ncpu, 1, 0, it);
        group("all cpus loads only", all, ncpu, 3, 0, it);
    }
    return 0;
}
