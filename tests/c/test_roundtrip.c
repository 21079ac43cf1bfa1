/* Round trips through the test worker: every JSON value kind via
 * mf_call_json, raw msgpack via mf_call, a 1 MiB result, no-argument calls
 * and the worker's pid in the stats. Built twice: against the shared and
 * the static library. */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* echo(value) must give back `want` (the text serde would print). */
static void echo_json(mf_parent *p, const char *value, const char *want) {
    char args[512];
    snprintf(args, sizeof args, "[%s]", value);
    check_json_call(p, "echo", args, want);
}

static void json_values(mf_parent *p) {
    echo_json(p, "null", "null");
    echo_json(p, "true", "true");
    echo_json(p, "false", "false");
    echo_json(p, "0", "0");
    echo_json(p, "-1", "-1");
    echo_json(p, "127", "127");
    echo_json(p, "-33", "-33");
    echo_json(p, "65536", "65536");
    echo_json(p, "9223372036854775807", "9223372036854775807");
    echo_json(p, "-9223372036854775808", "-9223372036854775808");
    echo_json(p, "18446744073709551615", "18446744073709551615");
    echo_json(p, "-9007199254740993", "-9007199254740993");
    echo_json(p, "9007199254740993", "9007199254740993");
    echo_json(p, "1.5", "1.5");
    echo_json(p, "-0.25", "-0.25");
    echo_json(p, "0.1", "0.1");
    echo_json(p, "\"\"", "\"\"");
    /* Escapes in, UTF-8 out; quotes, backslashes and control characters stay escaped. */
    echo_json(p, "\"h\\u00e9llo \\\"q\\\" \\\\ \\n\\t \\u2713 \\ud83d\\ude00 \\/ \\u0001\"",
              "\"h\xc3\xa9llo \\\"q\\\" \\\\ \\n\\t \xe2\x9c\x93 \xf0\x9f\x98\x80 / \\u0001\"");
    echo_json(p, "\"h\xc3\xa9llo \xe2\x9c\x93\"", "\"h\xc3\xa9llo \xe2\x9c\x93\"");
    echo_json(p, "[]", "[]");
    echo_json(p, "{}", "{}");
    echo_json(p, "[[[]]]", "[[[]]]");
    echo_json(p, "{\"z\":1,\"a\":[1,{\"b\":null}],\"c\":{\"d\":[true,false,\"x\",1.5]},\"e\":[]}",
              "{\"z\":1,\"a\":[1,{\"b\":null}],\"c\":{\"d\":[true,false,\"x\",1.5]},\"e\":[]}");
    /* Whitespace in the arguments does not reach the result. */
    echo_json(p, " { \"k\" : [ 1 , 2 ] } ", "{\"k\":[1,2]}");

    /* Several arguments, and JSON results from a JSON handler. */
    check_json_call(p, "add", "[1, 2]", "3");
    check_json_call(p, "add", "[-5, 3]", "-2");
    check_json_call(p, "add", "[4611686018427387904, 4611686018427387903]", "9223372036854775807");
    /* bin results become base64 text: bytes 0, 1, 2. */
    check_json_call(p, "big", "[3]", "\"AAEC\"");
    check_json_call(p, "big", "[0]", "\"\"");
}

static void raw_msgpack(mf_parent *p) {
    mf_buffer out = {NULL, 0};
    const uint8_t add_args[] = {0x92, 0x01, 0x02};
    mf_status s = mf_call(p, "add", add_args, sizeof add_args, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        CHECK(out.len == 1 && out.data && out.data[0] == 0x03, "add [1,2] gave %zu bytes, first 0x%02x", out.len,
              out.len ? out.data[0] : 0);
        mf_buffer_free(out);
    }

    /* int64 arguments the other way round: add(-2^40, 7) */
    uint8_t pair[32];
    size_t n = msgpack_pair(pair, -(1LL << 40), 7);
    s = mf_call(p, "add", pair, n, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        long long v = 0;
        CHECK(msgpack_int(out.data, out.len, &v) && v == -(1LL << 40) + 7, "add(-2^40, 7) gave %lld", v);
        mf_buffer_free(out);
    }

    /* echo of a bin and of a map: the bytes come back as they went. */
    const uint8_t echo_bin[] = {0x91, 0xc4, 0x03, 0x00, 0xff, 0x7f};
    s = mf_call(p, "echo", echo_bin, sizeof echo_bin, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        CHECK(out.len == sizeof echo_bin - 1 && memcmp(out.data, echo_bin + 1, out.len) == 0,
              "echo(bin) gave %zu bytes", out.len);
        mf_buffer_free(out);
    }
    const uint8_t echo_map[] = {0x91, 0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xc0, 0xc3};
    s = mf_call(p, "echo", echo_map, sizeof echo_map, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        CHECK(out.len == sizeof echo_map - 1 && memcmp(out.data, echo_map + 1, out.len) == 0,
              "echo(map) gave %zu bytes", out.len);
        mf_buffer_free(out);
    }

    /* NULL with length 0 means no arguments. */
    s = mf_call(p, "pid", NULL, 0, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        long long pid = 0;
        CHECK(msgpack_int(out.data, out.len, &pid) && pid > 1, "pid() gave %lld", pid);
        mf_buffer_free(out);
        char *stats = mf_parent_stats_json(p);
        char want[64];
        snprintf(want, sizeof want, "\"worker_pid\":%lld", pid);
        CHECK_CONTAINS(stats, want);
        mf_string_free(stats);
    }
    /* An explicit empty array is the same thing. */
    const uint8_t empty[] = {0x90};
    s = mf_call(p, "pid", empty, sizeof empty, 10000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) mf_buffer_free(out);
}

static void big_result(mf_parent *p) {
    const size_t n = 1u << 20;
    const uint8_t args[] = {0x91, 0xce, 0x00, 0x10, 0x00, 0x00}; /* [1048576] */
    mf_buffer out = {NULL, 0};
    mf_status s = mf_call(p, "big", args, sizeof args, 20000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s != MF_OK) return;
    if (CHECK(out.len == n + 5, "big(1 MiB) gave %zu bytes, expected %zu", out.len, n + 5)) {
        CHECK(out.data[0] == 0xc6 && out.data[1] == 0x00 && out.data[2] == 0x10 && out.data[3] == 0x00 &&
                  out.data[4] == 0x00,
              "bin32 header of 1 MiB, got %02x %02x %02x %02x %02x", out.data[0], out.data[1], out.data[2],
              out.data[3], out.data[4]);
        size_t bad = 0, first_bad = 0;
        for (size_t i = 0; i < n; i++) {
            if (out.data[5 + i] != (uint8_t)(i & 0xff)) {
                if (!bad) first_bad = i;
                bad++;
            }
        }
        CHECK(bad == 0, "%zu wrong bytes in the 1 MiB result, the first at %zu", bad, first_bad);
    }
    mf_buffer_free(out);
}

int main(void) {
    mf_parent *p = spawn_worker(NULL);
    if (!p) return check_summary();
    json_values(p);
    raw_msgpack(p);
    big_result(p);
    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"requests_failed\":0");
    CHECK_CONTAINS(stats, "\"healthy\":true");
    mf_string_free(stats);
    mf_parent_close(p);
    return check_summary();
}
