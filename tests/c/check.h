/* A tiny assertion kit for the C tests: CHECK counts and reports, it never
 * aborts, so one run shows every failure. Each program ends with
 * `return check_summary();`, which prints "N passed, N failed" and gives the
 * exit status (0 only when nothing failed). Thread-safe counters, so
 * CHECK may be used from worker threads and callbacks too. */
#ifndef MF_TEST_CHECK_H
#define MF_TEST_CHECK_H

#include <multifrost.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int check_passed_count;
static atomic_int check_failed_count;

static inline int check_report(int ok, const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static inline int check_report(int ok, const char *file, int line, const char *cond, const char *fmt, ...) {
    if (ok) {
        atomic_fetch_add(&check_passed_count, 1);
        return 1;
    }
    atomic_fetch_add(&check_failed_count, 1);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d: FAILED: %s: %s\n", file, line, cond, msg);
    fflush(stderr);
    return 0;
}

/* CHECK(cond, fmt, ...): records a pass or prints file:line and the message.
 * Evaluates to 1 if cond held, so a test can skip what depends on it. */
#define CHECK(cond, ...) check_report(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)

/* The status a call returned, with mf_last_error() read on this thread. */
#define CHECK_STATUS(got, want)                                                                   \
    do {                                                                                          \
        mf_status check_got_ = (got);                                                             \
        mf_status check_want_ = (want);                                                           \
        CHECK(check_got_ == check_want_, "status %s, expected %s (last error: \"%s\")",           \
              mf_status_name(check_got_), mf_status_name(check_want_), mf_last_error());          \
    } while (0)

#define CHECK_STR_EQ(got, want)                                                                   \
    do {                                                                                          \
        const char *check_g_ = (got);                                                             \
        const char *check_w_ = (want);                                                            \
        CHECK(check_g_ && strcmp(check_g_, check_w_) == 0, "got \"%s\", expected \"%s\"",         \
              check_g_ ? check_g_ : "(null)", check_w_);                                          \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                               \
    do {                                                                                          \
        const char *check_h_ = (hay);                                                             \
        const char *check_n_ = (needle);                                                          \
        CHECK(check_h_ && strstr(check_h_, check_n_) != NULL, "\"%s\" does not contain \"%s\"",  \
              check_h_ ? check_h_ : "(null)", check_n_);                                          \
    } while (0)

/* Prints the tally and returns the exit status for main. */
static inline int check_summary(void) {
    int passed = atomic_load(&check_passed_count);
    int failed = atomic_load(&check_failed_count);
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 && passed > 0 ? 0 : 1;
}

/* Monotonic milliseconds, for hang guards and "waited at least" checks. */
static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif /* MF_TEST_CHECK_H */
