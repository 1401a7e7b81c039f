/* The probe behind part 3 of device-amx-vcpu-state.log, as it ran there (not part of the build).
 *   gcc -O2 -march=sapphirerapids -pthread device-amx-vcpu-probe2.c -o probe && ./probe [k-steps, default 2^18]
 * throwaway probe 2: tile-load latency tolerance of loop shapes. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct __attribute__((packed, aligned(64))) { uint8_t palette, start_row, res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void cfg(void) { cfg_t c; memset(&c, 0, sizeof c); c.palette = 1; for (int t = 0; t < 8; t++) { c.rows[t] = 16; c.colsb[t] = 64; } __asm__ volatile("ldtilecfg %0" ::"m"(c)); }
typedef struct { int cpu, v; uint64_t iters; double tops; } job;
#define A(k) (a + ((k) & 7) * 2048)
#define B(k) (b + ((k) & 7) * 2048)
static void *run(void *p) {
    job *j = p;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(j->cpu, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s);
    int8_t *raw = aligned_alloc(4096, 65536);
    memset(raw, 1, 65536);
    const int8_t *a = raw, *b = raw + 16384;
    cfg();
    for (int w = 0; w < 2; w++) {
        uint64_t n = w ? j->iters : 2000, tdp = 0;
        for (int t = 0; t < 8; t++) ; 
        _tile_zero(4); _tile_zero(5); _tile_zero(6); _tile_zero(7);
        double t0 = now();
        switch (j->v) {
        case 0: /* 2x2 as the kernel: loads just before use */
            for (uint64_t k = 0; k < n; k++) {
                _tile_loadd(2, B(k), 64); _tile_loadd(0, A(k), 64); _tile_dpbssd(4, 0, 2);
                _tile_loadd(3, B(k) + 1024, 64); _tile_dpbssd(5, 0, 3);
                _tile_loadd(1, A(k) + 1024, 64); _tile_dpbssd(6, 1, 2); _tile_dpbssd(7, 1, 3);
            }
            tdp = 4 * n; break;
        case 1: /* 2x2, next k-step's loads right after the last use */
            _tile_loadd(0, A(0), 64); _tile_loadd(1, A(0) + 1024, 64); _tile_loadd(2, B(0), 64); _tile_loadd(3, B(0) + 1024, 64);
            for (uint64_t k = 0; k < n; k++) {
                _tile_dpbssd(4, 0, 2); _tile_dpbssd(5, 0, 3); _tile_loadd(0, A(k + 1), 64);
                _tile_dpbssd(6, 1, 2); _tile_loadd(2, B(k + 1), 64);
                _tile_dpbssd(7, 1, 3); _tile_loadd(1, A(k + 1) + 1024, 64); _tile_loadd(3, B(k + 1) + 1024, 64);
            }
            tdp = 4 * n; break;
        case 2: /* 1x2, operands double-buffered: C 4,5; A 0/1; B 2,3 / 6,7 */
            _tile_loadd(0, A(0), 64); _tile_loadd(2, B(0), 64); _tile_loadd(3, B(0) + 1024, 64);
            for (uint64_t k = 0; k < n; k += 2) {
                _tile_loadd(1, A(k + 1), 64); _tile_loadd(6, B(k + 1), 64); _tile_loadd(7, B(k + 1) + 1024, 64);
                _tile_dpbssd(4, 0, 2); _tile_dpbssd(5, 0, 3);
                _tile_loadd(0, A(k + 2), 64); _tile_loadd(2, B(k + 2), 64); _tile_loadd(3, B(k + 2) + 1024, 64);
                _tile_dpbssd(4, 1, 6); _tile_dpbssd(5, 1, 7);
            }
            tdp = 2 * n; break;
        case 3: /* 2x2 with B double-buffered for one column: C 4,5,6 (3 tiles) -- 3 TDP, 4 loads: A0 A1 B0 B1; spare 7 */
            _tile_loadd(0, A(0), 64); _tile_loadd(1, A(0) + 1024, 64); _tile_loadd(2, B(0), 64);
            for (uint64_t k = 0; k < n; k++) {
                _tile_loadd(3, B(k) + 1024, 64);
                _tile_dpbssd(4, 0, 2); _tile_dpbssd(6, 1, 2); _tile_loadd(2, B(k + 1), 64);
                _tile_dpbssd(5, 0, 3); _tile_loadd(0, A(k + 1), 64);
                _tile_loadd(7, A(k) + 1024, 64); _tile_dpbssd(4, 7, 3);  /* 4th product into C00 again via A1 copy: timing only */
                _tile_loadd(1, A(k + 1) + 1024, 64);
            }
            tdp = 4 * n; break;
        }
        double dt = now() - t0;
        if (w) j->tops = (double)tdp * 16 * 16 * 64 * 2 / dt * 1e-12;
    }
    _tile_release();
    free(raw);
    return NULL;
}
static double group(int *cpus, int n, int v, uint64_t iters, int print) {
    pthread_t t[64]; job j[64];
    for (int i = 0; i < n; i++) { j[i] = (job){cpus[i], v, iters, 0}; pthread_create(&t[i], NULL, run, &j[i]); }
    double sum = 0;
    for (int i = 0; i < n; i++) { pthread_join(t[i], NULL); sum += j[i].tops; if (print) printf(" %.2f", j[i].tops); }
    return sum;
}
int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    uint64_t it = argc > 1 ? strtoull(argv[1], 0, 10) : (1u << 18);
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int all[64]; for (int i = 0; i < ncpu; i++) all[i] = i;
    const char *names[] = {"2x2 kernel order", "2x2 early loads", "1x2 double-buffered", "3C+spare"};
    for (int rep = 0; rep < 3; rep++) {
        printf("-- rep %d, one thread per cpu, variants 0 1 2 3 back to back\n", rep);
        for (int c = 0; c < ncpu; c++) {
            printf("cpu %2d:", c);
            for (int v = 0; v < 4; v++) printf(" v%d %.2f", v, group(&c, 1, v, it, 0));
            printf("\n");
        }
        for (int v = 0; v < 4; v++) { printf("all %d cpus v%d (%s):", ncpu, v, names[v]); double s = group(all, ncpu, v, it, 1); printf(" | sum %.2f\n", s); }
        for (int v = 0; v < 4; v++) { printf("all %d cpus v%d (%s):", ncpu, v, names[v]); double s = group(all, ncpu, v, it, 0); printf(" sum %.2f\n", s); }
        fflush(stdout);
    }
    return 0;
}
