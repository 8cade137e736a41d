/*
 * check.h — the checks every C test counts its failures with (the tests keep going so that one
 * run reports everything): TU_CHECK, and tu_finish for the exit code. Depends on nothing, so a
 * test linked against the static library (internal functions) uses it as well as one linked
 * against the shared library through testutil.h (which includes this file). Built as co_check.
 */
#ifndef CO_CHECK_H
#define CO_CHECK_H

extern int tu_failures;

/* Prints "FAIL file:line: message" and counts the failure. */
void tu_fail_at(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#define TU_CHECK(cond, ...)                                                                                            \
    do {                                                                                                               \
        if (!(cond)) tu_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                                      \
    } while (0)

/* Prints a summary and returns the process exit code (0 if no check failed). */
int tu_finish(const char *test_name);

#endif /* CO_CHECK_H */
