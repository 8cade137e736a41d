/*
 * check.c — see check.h.
 */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>

int tu_failures = 0;

void tu_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    tu_failures++;
}

int tu_finish(const char *test_name)
{
    if (tu_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", test_name, tu_failures);
        return 1;
    }
    printf("%s: all checks passed\n", test_name);
    return 0;
}
