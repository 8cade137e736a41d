/*
 * cpu.c — run-time CPU detection. x86: cpuid leaf 1 (FMA, OSXSAVE, AVX), leaf 7 (AVX2,
 * AVX512F) and XCR0 via xgetbv (the OS saves ymm — bits 1,2 — and opmask/zmm — bits 5,6,7);
 * a feature the CPU has but the OS does not save is not used. Elsewhere: portable.
 */
#include "kernels/cpu.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static co_isa detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CO_ISA_PORTABLE;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx || !fma) return CO_ISA_PORTABLE;
    const uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return CO_ISA_PORTABLE; /* SSE + AVX state */
    if (__get_cpuid_max(0, NULL) < 7) return CO_ISA_PORTABLE;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    if (!avx2) return CO_ISA_PORTABLE;
    if (avx512f && (xcr0 & 0xe6) == 0xe6) return CO_ISA_AVX512; /* + opmask, zmm hi256, hi16 zmm */
    return CO_ISA_AVX2;
}
#else
static co_isa detect(void) { return CO_ISA_PORTABLE; }
#endif

co_isa co_cpu_isa(void)
{
    static atomic_int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = (int)detect();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (co_isa)v;
}

const char *co_isa_name(co_isa isa)
{
    switch (isa) {
    case CO_ISA_AVX512: return "avx512";
    case CO_ISA_AVX2: return "avx2";
    default: return "portable";
    }
}
