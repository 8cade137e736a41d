/*
 * test_loader.c — how co_model_load meets the file system and JSON (issue "Reliability"):
 *   B3  a FIFO with no writer is refused at once (no hang in open);
 *   B11 a directory and /dev/zero are refused as I/O errors ("not a regular file"), not as
 *       format errors with made-up sizes;
 *   B4  the 8-byte header length is checked before the file is read: a 2 GiB file of zeros (sparse)
 *       and a header length past the end cost no big allocation;
 *   B6  concurrent failing loads each get their own error position (JSON errors are per call);
 *   B7  a host program's own cJSON hooks are left alone: a load allocates only through
 *       co_set_allocator's hook, and the host's cJSON keeps using the host's hooks.
 * Usage: test_loader DEMO_MODEL
 */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char g_dir[256];

static void path_in_dir(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

/* ---- allocators that count ---- */
static atomic_long g_co_allocs, g_host_allocs;
static atomic_size_t g_co_largest;

static void *co_counting_alloc(size_t size, void *user)
{
    (void)user;
    atomic_fetch_add(&g_co_allocs, 1);
    size_t cur = atomic_load(&g_co_largest);
    while (size > cur && !atomic_compare_exchange_weak(&g_co_largest, &cur, size)) {
    }
    return malloc(size);
}
static void co_counting_free(void *p, void *user)
{
    (void)user;
    free(p);
}
static void *host_malloc(size_t n)
{
    atomic_fetch_add(&g_host_allocs, 1);
    return malloc(n);
}
static void host_free(void *p) { free(p); }

static void test_fifo(void)
{
    char p[300];
    path_in_dir(p, sizeof p, "fifo");
    TU_CHECK(mkfifo(p, 0600) == 0, "mkfifo %s", p);
    co_model *m = NULL;
    TU_STATUS(co_model_load(p, &m), CO_ERR_IO, "B3: FIFO with no writer");
    TU_CHECK(strstr(co_last_error(), "not a regular file") && strstr(co_last_error(), "FIFO"), "B3 message: %s",
             co_last_error());
    TU_CHECK(m == NULL, "no model");
    unlink(p);
}

static void test_not_regular(void)
{
    co_model *m = NULL;
    TU_STATUS(co_model_load(g_dir, &m), CO_ERR_IO, "B11: a directory");
    TU_CHECK(strstr(co_last_error(), "directory") != NULL, "B11 message: %s", co_last_error());
    TU_STATUS(co_model_load("/dev/zero", &m), CO_ERR_IO, "B11: /dev/zero");
    TU_CHECK(strstr(co_last_error(), "device") != NULL, "B11 message: %s", co_last_error());
    TU_STATUS(co_model_load("/nonexistent/model.safetensors", &m), CO_ERR_IO, "missing file");
}

static void test_header_first(void)
{
    char p[300];
    path_in_dir(p, sizeof p, "zeros.safetensors");
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    TU_CHECK(fd >= 0, "create %s", p);
    TU_CHECK(ftruncate(fd, (off_t)2 << 30) == 0, "ftruncate to 2 GiB (sparse)");
    close(fd);
    co_allocator a = {co_counting_alloc, co_counting_free, NULL};
    TU_STATUS(co_set_allocator(&a), CO_OK, "counting allocator");
    atomic_store(&g_co_largest, 0);
    co_model *m = NULL;
    TU_STATUS(co_model_load(p, &m), CO_ERR_FORMAT, "B4: 2 GiB of zeros");
    TU_CHECK(atomic_load(&g_co_largest) < ((size_t)1 << 20), "B4: largest allocation %zu bytes",
             (size_t)atomic_load(&g_co_largest));
    /* a header length of 100 MB in a small file */
    fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    uint8_t hdr[16] = {0x00, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    TU_CHECK(write(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr, "write");
    close(fd);
    atomic_store(&g_co_largest, 0);
    TU_STATUS(co_model_load(p, &m), CO_ERR_FORMAT, "B4: header length past the end");
    TU_CHECK(strstr(co_last_error(), "runs past the end") != NULL, "B4 message: %s", co_last_error());
    TU_CHECK(atomic_load(&g_co_largest) < 4096, "B4: largest allocation %zu", (size_t)atomic_load(&g_co_largest));
    TU_STATUS(co_set_allocator(NULL), CO_OK, "default allocator");
    unlink(p);
}

/* ---- B6: each failing load reports its own position ---- */
#define N_THREADS 8
#define N_LOADS 300
typedef struct broken {
    char bytes[128];
    size_t size;
    char want[64]; /* "at byte K" */
} broken;
static broken g_broken[N_THREADS];
static atomic_int g_wrong;

static void make_broken(int k, broken *b)
{
    /* a header whose JSON breaks at a position that depends on k */
    char json[96];
    int n = snprintf(json, sizeof json, "{\"%.*s\":", 4 + 5 * k, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    json[n++] = '@'; /* not a JSON value */
    while (n % 8) json[n++] = ' ';
    uint64_t len = (uint64_t)n;
    for (int i = 0; i < 8; i++) b->bytes[i] = (char)(len >> (8 * i));
    memcpy(b->bytes + 8, json, (size_t)n);
    b->size = 8 + (size_t)n;
    snprintf(b->want, sizeof b->want, "at byte %d", (int)(strchr(json, '@') - json));
}

static void *load_broken(void *arg)
{
    const broken *b = arg;
    for (int i = 0; i < N_LOADS; i++) {
        co_model *m = NULL;
        co_status st = co_model_load_memory(b->bytes, b->size, &m);
        if (st != CO_ERR_FORMAT || !strstr(co_last_error(), b->want)) atomic_fetch_add(&g_wrong, 1);
    }
    return NULL;
}

static void test_concurrent_errors(void)
{
    pthread_t th[N_THREADS];
    for (int k = 0; k < N_THREADS; k++) make_broken(k, &g_broken[k]);
    for (int k = 0; k < N_THREADS; k++) pthread_create(&th[k], NULL, load_broken, &g_broken[k]);
    for (int k = 0; k < N_THREADS; k++) pthread_join(th[k], NULL);
    TU_CHECK(atomic_load(&g_wrong) == 0, "B6: %d of %d concurrent failing loads got another load's message",
             atomic_load(&g_wrong), N_THREADS * N_LOADS);
}

/* ---- B7: the host's cJSON hooks ---- */
static void test_host_cjson(const char *demo)
{
    cJSON_Hooks hooks = {host_malloc, host_free};
    cJSON_InitHooks(&hooks);
    co_allocator a = {co_counting_alloc, co_counting_free, NULL};
    TU_STATUS(co_set_allocator(&a), CO_OK, "counting allocator");
    atomic_store(&g_co_allocs, 0);
    atomic_store(&g_host_allocs, 0);
    co_model *m = NULL;
    TU_STATUS(co_model_load(demo, &m), CO_OK, "load the demo");
    TU_CHECK(atomic_load(&g_host_allocs) == 0, "B7: the load made %ld allocations through the host's cJSON hooks",
             (long)atomic_load(&g_host_allocs));
    TU_CHECK(atomic_load(&g_co_allocs) > 0, "B7: the load allocated through co_set_allocator");
    co_model_free(m);
    cJSON *j = cJSON_Parse("{\"host\": [1, 2, 3]}");
    TU_CHECK(j != NULL && atomic_load(&g_host_allocs) > 0, "B7: the host's cJSON still uses the host's hooks");
    cJSON_Delete(j);
    cJSON_InitHooks(NULL);
    TU_STATUS(co_set_allocator(NULL), CO_OK, "default allocator");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_loader DEMO_MODEL\n");
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/co_test_loader_%ld", (long)getpid());
    if (mkdir(g_dir, 0700) != 0) {
        fprintf(stderr, "cannot create %s\n", g_dir);
        return 1;
    }
    test_fifo();
    test_not_regular();
    test_header_first();
    test_concurrent_errors();
    test_host_cjson(argv[1]);
    rmdir(g_dir);
    return tu_finish("test_loader");
}
