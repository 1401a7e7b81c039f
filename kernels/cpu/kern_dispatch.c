/* Runtime dispatch: which ISAs this CPU and OS support (CPUID + XCR0, and for
 * AMX the Linux tile-data permission), and one kernel table per ISA, built
 * once per process. */
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kern_internal.h"

static const char *const isa_names[MP_ISA_COUNT] = {"scalar", "avx2", "avx512", "amx"};

static mp_cpu_kernels tables[MP_ISA_COUNT];
static bool available[MP_ISA_COUNT];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

const char *mp_isa_name(mp_isa isa)
{
    return (unsigned)isa < MP_ISA_COUNT ? isa_names[isa] : "?";
}

bool mp_isa_parse(const char *name, mp_isa *out)
{
    for (int i = 0; i < MP_ISA_COUNT; i++)
        if (!strcasecmp(name, isa_names[i])) {
            *out = (mp_isa)i;
            return true;
        }
    return false;
}

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    /* xgetbv with ecx = 0; only called when CPUID says OSXSAVE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* Linux >= 5.16 keeps AMX tile data off until a process asks for it. */
static bool request_amx_permission(void)
{
#if defined(__linux__) && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return false;
#endif
}

static void detect(void)
{
    unsigned a, b, c, d;
    available[MP_ISA_SCALAR] = true;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    if (!osxsave || !avx)
        return;
    uint64_t xcr0 = read_xcr0();
    bool os_avx = (xcr0 & 0x6) == 0x6;         /* SSE and AVX state */
    bool os_avx512 = (xcr0 & 0xe6) == 0xe6;    /* + opmask, ZMM_Hi256, Hi16_ZMM */
    bool os_amx = (xcr0 & 0x60000) == 0x60000; /* XTILECFG, XTILEDATA */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    bool avx2 = b & (1u << 5);
    bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    bool vnni = c & (1u << 11);
    bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24), amx_int8 = d & (1u << 25);
    available[MP_ISA_AVX2] = os_avx && avx2 && fma && f16c;
    available[MP_ISA_AVX512] = available[MP_ISA_AVX2] && os_avx512 && f && dq && bw && vl && vnni;
    available[MP_ISA_AMX] = available[MP_ISA_AVX512];
    /* MOEPACK_ISA_MAX caps what counts as available (to try a smaller
     * machine's paths, and their "not available" errors, on a big one) */
    const char *cap = getenv("MOEPACK_ISA_MAX");
    mp_isa max = MP_ISA_AMX;
    if (cap && *cap && mp_isa_parse(cap, &max))
        for (int i = max + 1; i < MP_ISA_COUNT; i++)
            available[i] = false;
    available[MP_ISA_AMX] = available[MP_ISA_AMX] && os_amx && amx_tile && amx_int8 && amx_bf16 &&
                            request_amx_permission();
}

static void init_tables(void)
{
    detect();
    for (int i = 0; i < MP_ISA_COUNT; i++) {
        mp_kern_fill_scalar(&tables[i]);
        if (i >= MP_ISA_AVX2)
            mp_kern_fill_avx2(&tables[i]);
        if (i >= MP_ISA_AVX512)
            mp_kern_fill_avx512(&tables[i]);
        if (i >= MP_ISA_AMX) {
            mp_kern_fill_amx(&tables[i]);
            mp_kern_fill_bf16_amx(&tables[i]);
        }
        tables[i].isa = (mp_isa)i;
    }
}

bool mp_isa_available(mp_isa isa)
{
    pthread_once(&init_once, init_tables);
    return (unsigned)isa < MP_ISA_COUNT && available[isa];
}

mp_isa mp_isa_best(void)
{
    mp_isa best = MP_ISA_SCALAR;
    for (int i = 0; i < MP_ISA_COUNT; i++)
        if (mp_isa_available((mp_isa)i))
            best = (mp_isa)i;
    return best;
}

static void list_available(char *buf, size_t size)
{
    buf[0] = 0;
    for (int i = 0; i < MP_ISA_COUNT; i++)
        if (available[i]) {
            if (buf[0])
                strncat(buf, ", ", size - strlen(buf) - 1);
            strncat(buf, isa_names[i], size - strlen(buf) - 1);
        }
}

const mp_cpu_kernels *mp_cpu_kernels_get(mp_isa isa, mp_error *err)
{
    if (!mp_isa_available(isa)) {
        char have[64];
        list_available(have, sizeof have);
        const char *cap = getenv("MOEPACK_ISA_MAX");
        mp_fail(err, MP_ERR_USAGE, NULL, NULL, "instruction set '%s' is not available on this machine (it has: %s%s%s)",
                mp_isa_name(isa), have, cap && *cap ? "; MOEPACK_ISA_MAX=" : "", cap && *cap ? cap : "");
        return NULL;
    }
    return &tables[isa];
}

const mp_cpu_kernels *mp_cpu_kernels_best(mp_error *err)
{
    const char *forced = getenv("MOEPACK_ISA");
    if (forced && *forced) {
        mp_isa isa;
        if (!mp_isa_parse(forced, &isa)) {
            mp_fail(err, MP_ERR_USAGE, NULL, NULL, "MOEPACK_ISA=%s: unknown (use scalar, avx2, avx512 or amx)",
                    forced);
            return NULL;
        }
        const mp_cpu_kernels *t = mp_cpu_kernels_get(isa, err);
        if (!t)
            mp_error_prefix(err, "MOEPACK_ISA");
        return t;
    }
    return mp_cpu_kernels_get(mp_isa_best(), err);
}
