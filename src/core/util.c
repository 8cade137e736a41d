/*
 * util.c — allocator hook, per-thread error message, status names, shape helpers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/op.h"

/* ---- allocator ---- */
static void *default_alloc(size_t size, void *user) { (void)user; return malloc(size); }
static void default_free(void *p, void *user) { (void)user; free(p); }
static co_allocator g_allocator = {default_alloc, default_free, NULL};

co_status co_set_allocator(const co_allocator *allocator)
{
    if (allocator == NULL) {
        g_allocator.alloc = default_alloc;
        g_allocator.free = default_free;
        g_allocator.user = NULL;
        return CO_OK;
    }
    if (allocator->alloc == NULL || allocator->free == NULL)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_set_allocator: alloc and free must both be set");
    g_allocator = *allocator;
    return CO_OK;
}

void *co_alloc(size_t size) { return g_allocator.alloc(size ? size : 1, g_allocator.user); }

void *co_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) return NULL;
    const size_t bytes = n * size;
    void *p = co_alloc(bytes);
    if (p) memset(p, 0, bytes > 0 ? bytes : 1);
    return p;
}

void co_free(void *p)
{
    if (p) g_allocator.free(p, g_allocator.user);
}

char *co_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = co_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- errors: one message per thread, so a shared model needs no lock ---- */
static _Thread_local char t_message[1024];

co_status co_error(co_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_message, sizeof t_message, fmt, ap);
    va_end(ap);
    return status;
}

void co_clear_error(void) { t_message[0] = '\0'; }

const char *co_last_error(void) { return t_message; }

int co_version(void) { return CO_VERSION_NUMBER; }
const char *co_version_string(void) { return CO_VERSION_STRING; }

const char *co_status_name(co_status status)
{
    switch (status) {
    case CO_OK: return "CO_OK";
    case CO_ERR_INVALID_ARGUMENT: return "CO_ERR_INVALID_ARGUMENT";
    case CO_ERR_OUT_OF_MEMORY: return "CO_ERR_OUT_OF_MEMORY";
    case CO_ERR_IO: return "CO_ERR_IO";
    case CO_ERR_FORMAT: return "CO_ERR_FORMAT";
    case CO_ERR_NETWORK: return "CO_ERR_NETWORK";
    case CO_ERR_TENSOR: return "CO_ERR_TENSOR";
    case CO_ERR_SHAPE: return "CO_ERR_SHAPE";
    case CO_ERR_BUFFER_TOO_SMALL: return "CO_ERR_BUFFER_TOO_SMALL";
    case CO_ERR_STATE: return "CO_ERR_STATE";
    case CO_ERR_UNSUPPORTED: return "CO_ERR_UNSUPPORTED";
    }
    return "CO_ERR_UNKNOWN";
}

/* ---- shapes ---- */
int64_t co_tshape_numel(const co_tshape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

int64_t co_tshape_inner(const co_tshape *s)
{
    int64_t n = 1;
    for (int i = 2; i < s->ndim; i++) n *= s->d[i];
    return n;
}

const char *co_tshape_str(const co_tshape *s, char *buf, size_t size)
{
    size_t used = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, size - used, "(");
    for (int i = 0; i < s->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)s->d[i]);
    if (used < size) snprintf(buf + used, size - used, ")");
    return buf;
}

int co_clip_dim_to_axis(int dim, const co_tshape *s)
{
    int clip_rank = s->has_time ? s->ndim : s->ndim + 1;
    if (dim < 0) dim += clip_rank;
    if (dim < 0 || dim >= clip_rank || dim == 0 || dim == 2) return -1;
    if (dim == 1) return 1;
    return s->has_time ? dim : dim - 1;
}
