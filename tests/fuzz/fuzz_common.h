/*
 * fuzz_common.h — what the libFuzzer targets share: the model they step (CO_FUZZ_MODEL, else the
 * small model of many module types, tests/fuzz/tiny.safetensors), loaded once.
 */
#ifndef CO_FUZZ_COMMON_H
#define CO_FUZZ_COMMON_H

#include <continual.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef CO_FUZZ_DEFAULT_MODEL
#define CO_FUZZ_DEFAULT_MODEL "tests/fuzz/tiny.safetensors"
#endif

/* The model of the step and restore targets; exits (the harness, not the library) if missing. */
static co_model *fuzz_model(void)
{
    static co_model *m;
    if (!m) {
        const char *path = getenv("CO_FUZZ_MODEL");
        if (!path) path = CO_FUZZ_DEFAULT_MODEL;
        if (co_model_load(path, &m) != CO_OK) {
            fprintf(stderr, "fuzz: cannot load %s: %s\n", path, co_last_error());
            exit(1);
        }
    }
    return m;
}

static size_t fuzz_numel(const co_shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= (size_t)s->dims[i];
    return n;
}

#endif
