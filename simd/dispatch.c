/* dispatch.c — detect the CPU once and pick the kernel table.
 *
 * x86-64: cpuid says what the CPU implements; xgetbv(XCR0) says which register
 * state the OS saves on a context switch. A table is usable only when both
 * agree: AVX2 needs the YMM state (XCR0 bits 1-2), AVX-512 also the opmask and
 * upper-ZMM state (bits 5-7). Preference: avx512 > avx2 > scalar.
 * aarch64: Advanced SIMD (NEON) is reported by getauxval(AT_HWCAP) & HWCAP_ASIMD;
 * preference neon > scalar.
 *
 * Tables: the scalar one is kernels_scalar; every other starts as a copy of it
 * and the ISA's init function replaces what the ISA implements (kernels_build,
 * BLIS's reference-then-override), once the CPU is known to run it.
 *
 * Initialisation happens once (call_once) on the first call of any function
 * here; it also reads the environment variable KVLAB_ISA (same names as
 * kernels_select). kernels_select() afterwards overrides it. */
#include "kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#endif

/* One entry per ISA name this code knows, usable or not. */
typedef struct {
    const char *name;
    const Kernels *table;    /* built once usable (NULL otherwise) */
    int usable;
    char why_not[160];       /* reason when !usable */
} Isa;

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_NEON, N_ISA };

static Isa isas[N_ISA] = {
    [ISA_SCALAR] = { .name = "scalar" },
    [ISA_AVX2] = { .name = "avx2" },
    [ISA_AVX512] = { .name = "avx512" },
    [ISA_NEON] = { .name = "neon" },
};
static Kernels built[N_ISA];          /* the ISA tables (scalar's is kernels_scalar itself) */
static int best = ISA_SCALAR;
static _Atomic(const Kernels *) current;
static once_flag init_once = ONCE_FLAG_INIT;

/* BLIS's reference-then-override (kernels.h). */
void kernels_build(Kernels *k, KernelsInit *init) {
    *k = kernels_scalar;
    if (init) init(k);
}

/* Mark an ISA usable and build its table from the reference and init. */
static void make_usable(int isa, KernelsInit *init) {
    kernels_build(&built[isa], init);
    isas[isa].table = &built[isa];
    isas[isa].usable = 1;
}

#if defined(__x86_64__)

static void append(char *buf, size_t size, const char *word) {
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%s%s", len ? ", " : "", word);
}

typedef struct { const char *name; int have; } Feature;

/* An x86 ISA is usable when the CPU has every feature it needs and the OS saves
 * its registers; then its table is built, else why_not says which is missing. */
static int judge_x86(int isa, const Feature *need, size_t n_need, int os_saves, const char *state,
                     KernelsInit *init) {
    char lacks[128] = "";
    for (size_t i = 0; i < n_need; i++)
        if (!need[i].have) append(lacks, sizeof lacks, need[i].name);
    if (lacks[0]) {
        snprintf(isas[isa].why_not, sizeof isas[0].why_not, "this CPU lacks %s", lacks);
        return 0;
    }
    if (!os_saves) {
        snprintf(isas[isa].why_not, sizeof isas[0].why_not,
                 "the OS does not enable the %s register state (XCR0)", state);
        return 0;
    }
    make_usable(isa, init);
    return 1;
}

static void detect_x86(void) {
    unsigned a, b, c, d;
    unsigned c1 = 0, b7 = 0, a71 = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) c1 = c;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        b7 = b;
        if (a >= 1) { __cpuid_count(7, 1, a, b, c, d); a71 = a; }
    }
    unsigned long long xcr0 = 0;
    if (c1 & (1u << 27)) {          /* OSXSAVE: xgetbv is allowed */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (unsigned long long)hi << 32 | lo;
    }
    const int os_avx = (xcr0 & 0x06) == 0x06;        /* XMM + YMM state */
    const int os_avx512 = (xcr0 & 0xE6) == 0xE6;     /* + opmask, ZMM_Hi256, Hi16_ZMM */
    const Feature need2[] = {
        { "avx", (c1 >> 28) & 1 }, { "avx2", (b7 >> 5) & 1 }, { "fma", (c1 >> 12) & 1 },
        { "f16c", (c1 >> 29) & 1 },
    };
    const Feature need512[] = {
        { "avx512f", (b7 >> 16) & 1 }, { "avx512dq", (b7 >> 17) & 1 },
        { "avx512bw", (b7 >> 30) & 1 }, { "avx512vl", (b7 >> 31) & 1 },
        { "fma", (c1 >> 12) & 1 }, { "f16c", (c1 >> 29) & 1 },
    };
    const int have_bf16 = (a71 >> 5) & 1;

    judge_x86(ISA_AVX2, need2, sizeof need2 / sizeof need2[0], os_avx, "AVX", kernels_init_avx2);
    if (judge_x86(ISA_AVX512, need512, sizeof need512 / sizeof need512[0], os_avx512, "AVX-512",
                  kernels_init_avx512) && have_bf16)
        kernels_init_avx512_bf16(&built[ISA_AVX512]);   /* + matmul_bf16_dpbf16 */

    snprintf(isas[ISA_NEON].why_not, sizeof isas[0].why_not,
             "this is an x86-64 build (neon is for aarch64)");
}
#elif defined(__aarch64__)
static void detect_arm(void) {
    if (getauxval(AT_HWCAP) & HWCAP_ASIMD) make_usable(ISA_NEON, kernels_init_neon);
    else snprintf(isas[ISA_NEON].why_not, sizeof isas[0].why_not, "this CPU lacks asimd");
    snprintf(isas[ISA_AVX2].why_not, sizeof isas[0].why_not, "this is an aarch64 build (avx2 is for x86-64)");
    snprintf(isas[ISA_AVX512].why_not, sizeof isas[0].why_not, "this is an aarch64 build (avx512 is for x86-64)");
}
#endif

static int select_locked(const char *isa, const char *label, char *err_msg, int err_size);

static void init(void) {
    isas[ISA_SCALAR].table = &kernels_scalar;
    isas[ISA_SCALAR].usable = 1;
#if defined(__x86_64__)
    detect_x86();
#elif defined(__aarch64__)
    detect_arm();
#else
    for (int i = ISA_AVX2; i < N_ISA; i++)
        snprintf(isas[i].why_not, sizeof isas[0].why_not, "this build has only the scalar kernels");
#endif
    best = ISA_SCALAR;
    for (int i = 0; i < N_ISA; i++)
        if (isas[i].usable) best = i;        /* the enum is in order of preference */
    atomic_store(&current, isas[best].table);

    const char *env = getenv("KVLAB_ISA");
    if (env && *env) {
        char err[256];
        if (select_locked(env, "KVLAB_ISA=", err, sizeof err) != 0)
            fprintf(stderr, "kvlab: %s; using %s\n", err, isas[best].name);
    }
}

static void ensure_init(void) { call_once(&init_once, init); }

/* label is how the choice was made, for the message: "--isa " or "KVLAB_ISA=". */
static int select_locked(const char *isa, const char *label, char *err_msg, int err_size) {
    if (!isa || !*isa || !strcmp(isa, "auto")) {
        atomic_store(&current, isas[best].table);
        return 0;
    }
    for (int i = 0; i < N_ISA; i++) {
        if (strcmp(isa, isas[i].name) != 0) continue;
        if (isas[i].usable) {
            atomic_store(&current, isas[i].table);
            return 0;
        }
        char avail[96] = "";
        for (int j = 0; j < N_ISA; j++)
            if (isas[j].usable) {
                size_t len = strlen(avail);
                snprintf(avail + len, sizeof avail - len, "%s%s", len ? ", " : "", isas[j].name);
            }
        if (err_msg && err_size > 0)
            snprintf(err_msg, (size_t)err_size, "%s%s: %s (available: %s)", label, isa, isas[i].why_not, avail);
        return -1;
    }
    if (err_msg && err_size > 0)
        snprintf(err_msg, (size_t)err_size,
                 "%s%s: unknown instruction set (choose auto, scalar, avx2, avx512 or neon)", label, isa);
    return -1;
}

const Kernels *kernels_get(void) {
    ensure_init();
    return atomic_load(&current);
}

int kernels_select(const char *isa, char *err_msg, int err_size) {
    ensure_init();
    return select_locked(isa, "--isa ", err_msg, err_size);
}

const char *kernels_detected(void) {
    ensure_init();
    return isas[best].name;
}

int kernels_available(const Kernels **tables, int max_tables) {
    ensure_init();
    int n = 0;
    for (int i = 0; i < N_ISA; i++)
        if (isas[i].usable && n < max_tables) tables[n++] = isas[i].table;
    return n;
}
