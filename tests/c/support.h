/* Helpers shared by the C tests: starting the test worker and small calls.
 * TEST_WORKER (the path of test_worker) comes from CMake. */
#ifndef MF_TEST_SUPPORT_H
#define MF_TEST_SUPPORT_H

#include "check.h"

#include <multifrost.h>

#include <stdlib.h>

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

/* Decodes one msgpack integer occupying all of [p, p+len). 1 on success. */
static inline int msgpack_int(const uint8_t *p, size_t len, long long *out) {
    if (len < 1) return 0;
    uint8_t t = p[0];
    if (t <= 0x7f || t >= 0xe0) {
        *out = (int8_t)t;
        if (t <= 0x7f) *out = t;
        return len == 1;
    }
    size_t n;
    switch (t) {
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xce: case 0xd2: n = 4; break;
    case 0xcf: case 0xd3: n = 8; break;
    default: return 0;
    }
    if (len != 1 + n) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[1 + i];
    if (t >= 0xd0 && n < 8 && (v >> (8 * n - 1))) v |= ~(uint64_t)0 << (8 * n);
    *out = (long long)v;
    return 1;
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
