/*
 * cpu.h — what the CPU we run on can do, found at run time (cpuid + xgetbv on x86), so that one
 * binary built without -march picks the widest kernels the CPU and the OS support.
 */
#ifndef CO_CPU_H
#define CO_CPU_H

/* Kernel sets, in order of preference. */
typedef enum co_isa {
    CO_ISA_PORTABLE = 0, /* plain C (what any compiler vectorises for the baseline target) */
    CO_ISA_AVX2 = 1,     /* x86-64 AVX2 + FMA, OS saves ymm state */
    CO_ISA_AVX512 = 2    /* x86-64 AVX-512 F, OS saves zmm/opmask state */
} co_isa;

/* The best kernel set this CPU and OS support (computed once; thread-safe). */
co_isa co_cpu_isa(void);
/* "portable", "avx2", "avx512". */
const char *co_isa_name(co_isa isa);

#endif /* CO_CPU_H */
