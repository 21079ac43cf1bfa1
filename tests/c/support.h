/* Helpers shared by the C tests: starting the test worker and small calls.
 * TEST_WORKER (the path of test_worker) comes from CMake. */
#ifndef MF_TEST_SUPPORT_H
#define MF_TEST_SUPPORT_H

#include "check.h"
#include "msgpack_int.h"

#include <multifrost.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TEST_WORKER
#error "TEST_WORKER must name the test worker program"
#endif

/* Spawns the test worker with `opts` (NULL = defaults). On failure prints
 * why, counts a failure and returns NULL. */
static inline mf_parent *spawn_worker(const mf_options *opts) {
    mf_parent *p = NULL;
    mf_status s = mf_spawn(TEST_WORKER, NULL, opts, &p);
    if (!CHECK(s == MF_OK && p != NULL, "spawn %s: %s: %s", TEST_WORKER, mf_status_name(s), mf_last_error()))
        return NULL;
    return p;
}

/* Calls `function` with JSON args and returns the result text (caller frees
 * with mf_string_free), or NULL after counting a failure. */
static inline char *call_json_ok(mf_parent *p, const char *function, const char *args, int64_t timeout_ms) {
    char *out = NULL;
    mf_status s = mf_call_json(p, function, args, timeout_ms, &out);
    if (!CHECK(s == MF_OK, "%s%s: %s: %s", function, args, mf_status_name(s), mf_last_error())) return NULL;
    return out;
}

/* Checks that function(args) returns exactly `want` as JSON text. */
static inline void check_json_call(mf_parent *p, const char *function, const char *args, const char *want) {
    char *got = call_json_ok(p, function, args, 10000);
    if (got) {
        CHECK(strcmp(got, want) == 0, "%s%s returned %s, expected %s", function, args, got, want);
        mf_string_free(got);
    }
}

/* Waits until the parent reports `n` calls in flight; whether it did (the
 * 20 s limit is a hang guard). */
static inline int wait_in_flight(mf_parent *p, int n) {
    char want[32];
    snprintf(want, sizeof want, "\"in_flight\":%d", n);
    for (int64_t t0 = now_ms(); now_ms() - t0 < 20000;) {
        char *stats = mf_parent_stats_json(p);
        int found = stats && strstr(stats, want);
        mf_string_free(stats);
        if (found) return 1;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Waits until the test worker has `n` parked calls (park/parked/unpark in
 * test_worker.c); whether it did (the 20 s limit is a hang guard). */
static inline int wait_parked(mf_parent *p, int n) {
    char want[32];
    snprintf(want, sizeof want, "%d", n);
    for (int64_t t0 = now_ms(); now_ms() - t0 < 20000;) {
        char *got = call_json_ok(p, "parked", "[]", 10000);
        int found = got && strcmp(got, want) == 0;
        mf_string_free(got);
        if (!got || found) return found;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Encodes [a, b] as a msgpack array of two int64s; returns the length. */
static inline size_t msgpack_pair(uint8_t *buf, long long a, long long b) {
    size_t n = 0;
    buf[n++] = 0x92;
    long long v[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        buf[n++] = 0xd3;
        for (int i = 7; i >= 0; i--) buf[n++] = (uint8_t)((uint64_t)v[k] >> (8 * i));
    }
    return n;
}

#endif /* MF_TEST_SUPPORT_H */
