/*
 * test_registry.c — the module registry and the shared element-wise formulas, from the inside
 * (linked with the static library, so internal functions are reachable).
 *
 *   test_registry          checks: every registered type is found under its own name, once;
 *                          unknown names are not; co_read_pointwise knows every functional name
 *                          of docs/format.md ("Graph nodes") and refuses others; the formulas that
 *                          only graphs reach give torch 1.13's values, NaN and signed zeros included.
 *   test_registry --list   prints every registered type name, one a line (for
 *                          tests/python/test_registry.py, which checks docs, exporter and tests).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/build.h"
#include "core/builder.h"
#include "check.h"

static void test_registry(void)
{
    const size_t n = co_registry_count();
    TU_CHECK(n >= 60, "only %zu registered types", n);
    TU_CHECK(co_registry_name(n) == NULL, "a name past the end");
    for (size_t i = 0; i < n; i++) {
        const char *name = co_registry_name(i);
        TU_CHECK(name && name[0], "entry %zu has no name", i);
        if (!name) continue;
        for (size_t j = 0; j < i; j++) TU_CHECK(strcmp(name, co_registry_name(j)) != 0, "'%s' is registered twice", name);
        co_module_reg r;
        TU_CHECK(co_registry_find(name, &r) && r.build && strcmp(r.type, name) == 0, "'%s' is not found", name);
    }
    co_module_reg r;
    const char *unknown[] = {"Conv9d", "", "relu", "conv2d", "Sequential ", "Graphs", NULL};
    for (int i = 0; unknown[i]; i++) TU_CHECK(!co_registry_find(unknown[i], &r), "'%s' found", unknown[i]);
    TU_CHECK(!co_registry_find(NULL, &r), "NULL found");
}

/* co_read_pointwise on the JSON object `json` with functional name fn. */
static co_status read_pw(const char *fn, const char *json, co_pointwise *p)
{
    static co_builder b; /* the readers use only depth and the touched keys */
    memset(&b, 0, sizeof b);
    cJSON *node = cJSON_Parse(json);
    if (!node) return CO_ERR_INVALID_ARGUMENT;
    co_status st = co_read_pointwise(&b, node, "0.op3", fn, p);
    cJSON_Delete(node);
    return st;
}

static void test_functional_names(void)
{
    /* docs/format.md, "Graph nodes", the pointwise row */
    static const char *const names[] = {
        "relu",  "relu6", "sigmoid", "tanh",  "silu",      "mish",     "hardswish",  "hardsigmoid", "selu",
        "logsigmoid", "softsign", "tanhshrink", "gelu", "elu",  "celu",       "leaky_relu", "hardtanh",    "threshold",
        "hardshrink", "softshrink", "softplus", "exp",  "log",  "abs",        "neg",        "square",      "sqrt",
        "rsqrt", "reciprocal", "sin", "cos",   "erf",       "expm1",    "log1p",      "floor",       "ceil",
        "round", "sign",  "logical_not", "identity", "clamp", NULL};
    co_pointwise p;
    int reached[CO_PW_COUNT] = {0};
    for (int i = 0; names[i]; i++) {
        const char *json = strcmp(names[i], "threshold") == 0 ? "{\"threshold\": 0.5, \"value\": 2}" : "{}";
        TU_CHECK(read_pw(names[i], json, &p) == CO_OK, "'%s' refused: %s", names[i], co_last_error());
        TU_CHECK(p.kind >= 0 && p.kind < CO_PW_COUNT, "'%s': kind %d", names[i], (int)p.kind);
        if (p.kind >= 0 && p.kind < CO_PW_COUNT) reached[p.kind] = 1;
    }
    if (read_pw("gelu", "{\"approximate\": \"tanh\"}", &p) == CO_OK && p.kind >= 0 && p.kind < CO_PW_COUNT)
        reached[p.kind] = 1;
    for (int k = 0; k < CO_PW_COUNT; k++) TU_CHECK(reached[k], "co_pw_kind %d has no functional name", k);
    TU_CHECK(read_pw("frobnicate", "{}", &p) == CO_ERR_NETWORK && strstr(co_last_error(), "0.op3") &&
              strstr(co_last_error(), "frobnicate"),
          "unknown name: %s", co_last_error());
    TU_CHECK(read_pw("ReLU", "{}", &p) == CO_ERR_NETWORK, "a module type name is not a functional name");
    TU_CHECK(read_pw("rrelu", "{}", &p) == CO_ERR_NETWORK, "rrelu is a module only");
    TU_CHECK(read_pw("threshold", "{}", &p) == CO_ERR_NETWORK && strstr(co_last_error(), "threshold"),
          "threshold needs its keys: %s", co_last_error());
    /* defaults and keys, as torch */
    TU_CHECK(read_pw("leaky_relu", "{}", &p) == CO_OK && p.kind == CO_PW_LEAKY && p.a == 0.01f, "leaky_relu default");
    TU_CHECK(read_pw("gelu", "{\"approximate\": \"tanh\"}", &p) == CO_OK && p.kind == CO_PW_GELU_TANH, "gelu tanh");
    TU_CHECK(read_pw("gelu", "{}", &p) == CO_OK && p.kind == CO_PW_GELU_ERF, "gelu default");
    TU_CHECK(read_pw("softplus", "{\"beta\": 2}", &p) == CO_OK && p.a == 2.0f && p.b == 20.0f, "softplus");
    TU_CHECK(read_pw("relu6", "{}", &p) == CO_OK && p.kind == CO_PW_HARDTANH && p.a == 0.0f && p.b == 6.0f, "relu6");
    TU_CHECK(read_pw("clamp", "{\"min\": null, \"max\": 1.5}", &p) == CO_OK && p.kind == CO_PW_HARDTANH &&
              isinf(p.a) && p.a < 0 && p.b == 1.5f,
          "clamp(max=1.5)");
    TU_CHECK(read_pw("clamp", "{\"min\": -1}", &p) == CO_OK && p.a == -1.0f && isinf(p.b) && p.b > 0, "clamp(min=-1)");
    TU_CHECK(read_pw("celu", "{\"alpha\": 0}", &p) == CO_ERR_NETWORK, "celu alpha 0");
    TU_CHECK(read_pw("softshrink", "{\"lambd\": -1}", &p) == CO_ERR_NETWORK, "softshrink lambd < 0");
}

/* bits equal (NaN == NaN, -0 != +0) */
static int same(float a, float b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (a == 0.0f && b == 0.0f) return signbit(a) == signbit(b);
    return a == b || fabsf(a - b) <= 1e-6f * fabsf(b);
}

static void expect(const char *fn, const char *json, const float *x, const float *want, int n)
{
    co_pointwise p;
    float y[16];
    if (read_pw(fn, json, &p) != CO_OK) {
        TU_CHECK(0, "'%s' refused: %s", fn, co_last_error());
        return;
    }
    co_pointwise_run(&p, x, y, n);
    for (int i = 0; i < n; i++) TU_CHECK(same(y[i], want[i]), "%s(%g) = %g, torch 1.13 gives %g", fn, x[i], y[i], want[i]);
    float z[16];
    memcpy(z, x, (size_t)n * sizeof(float));
    co_pointwise_run(&p, z, z, n); /* in place */
    for (int i = 0; i < n; i++) TU_CHECK(same(z[i], y[i]), "%s in place differs at %d", fn, i);
}

/* Values from torch 1.13 on x below (python3 -c "import torch; print(torch.<fn>(x).tolist())"). */
static void test_formulas(void)
{
    const float nan = NAN, inf = INFINITY;
    const float x[] = {nan, inf, -inf, -0.0f, 0.0f, 0.5f, -2.5f, 2.5f, 1.5f, -0.5f};
    enum { N = sizeof x / sizeof x[0] };
    {
        const float w[N] = {nan, inf, 0, -0.0f, 0, 0.5f, 0, 2.5f, 1.5f, 0};
        expect("relu", "{}", x, w, N);
    }
    {
        const float w[N] = {0, 1, -1, 0, 0, 1, -1, 1, 1, -1}; /* sign(NaN) = 0 and sign(-0) = +0 in torch 1.13 */
        expect("sign", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -inf, -0.0f, 0, 0, -2, 2, 2, -0.0f}; /* half to even */
        expect("round", "{}", x, w, N);
    }
    {
        const float w[N] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
        expect("logical_not", "{}", x, w, N);
    }
    {
        const float w[N] = {0, inf, -inf, 0, 0, 0, -2, 2, 1, 0}; /* softshrink(NaN) = 0 in torch 1.13 */
        expect("softshrink", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -inf, 0, 0, 0, -2.5f, 2.5f, 1.5f, 0};
        expect("hardshrink", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, 0, nan, -inf, inf, 1.4142135381698608f, nan, 0.6324555277824402f,
                            0.8164965510368347f, nan};
        expect("rsqrt", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, 0, -0.0f, -inf, inf, 2, -0.4000000059604645f, 0.4000000059604645f,
                            0.6666666865348816f, -2};
        expect("reciprocal", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -inf, -0.0f, 0, 0, -3, 2, 1, -1};
        expect("floor", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -inf, -0.0f, 0, 1, -2, 3, 2, -0.0f};
        expect("ceil", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, 1, -1, -0.0f, 0, 0.5204998851f, -0.9995930195f, 0.9995930195f, 0.9661051631f,
                            -0.5204998851f};
        expect("erf", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -1, -0.0f, 0, 0.6487212777f, -0.9179149866f, 11.1824942f, 3.4816890f,
                            -0.3934693336f};
        expect("expm1", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, nan, -0.0f, 0, 0.4054650962f, nan, 1.2527629137f, 0.9162907600f,
                            -0.6931471825f};
        expect("log1p", "{}", x, w, N);
    }
    {
        const float w[N] = {nan, 1, -inf, -0.0f, 0, 0.5f, -2.5f, 1, 1, -0.5f};
        expect("clamp", "{\"max\": 1}", x, w, N);
    }
    {
        const float w[N] = {nan, 2, 2, 2, 2, 2, 2, 2, 2, 2}; /* min > max: max everywhere, NaN stays */
        expect("clamp", "{\"min\": 3, \"max\": 2}", x, w, N);
    }
    {
        const float w[N] = {nan, inf, -inf, -0.0f, 0, 0.5f, -2.5f, 2.5f, 1.5f, -0.5f};
        expect("identity", "{}", x, w, N);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < co_registry_count(); i++) printf("%s\n", co_registry_name(i));
        return 0;
    }
    test_registry();
    test_functional_names();
    test_formulas();
    printf("registry: %zu types\n", co_registry_count());
    return tu_finish("test_registry");
}
