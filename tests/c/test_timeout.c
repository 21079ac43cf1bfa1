/* A call that outlives its timeout fails with MF_ERR_TIMEOUT at the limit,
 * not when the worker finally answers; the late answer is dropped and the
 * next calls still work. The calls are parked: the worker answers them only
 * when told to (unpark), so each timeout is seen while its call is still
 * unanswered in the worker. */
#include "support.h"

#include <stdio.h>

int main(void) {
    /* Parked calls ignore the cancel their timeout sends: a grace of 0
     * keeps the parent from stopping the worker for them. */
    mf_options *patient = mf_options_new();
    mf_options_set_cancel_grace(patient, 0);
    mf_parent *p = spawn_worker(patient);
    mf_options_free(patient);
    if (!p) return check_summary();

    char *out = NULL;
    int64_t t0 = now_ms();
    mf_status s = mf_call_json(p, "park", "[1]", 200, &out);
    int64_t took = now_ms() - t0;
    CHECK_STATUS(s, MF_ERR_TIMEOUT);
    CHECK(mf_last_error()[0] != '\0', "a timeout has a message");
    CHECK(took >= 150, "timeout 200 ms returned after %lld ms", (long long)took); /* it waited */
    CHECK(out == NULL, "out was written on timeout");
    check_json_call(p, "parked", "[]", "1"); /* not answered: the timer ended it */

    /* The next call works while the first is still parked in the worker. */
    check_json_call(p, "add", "[1, 2]", "3");

    /* mf_call has the same timeout path. */
    mf_buffer buf = {NULL, 0};
    const uint8_t args[] = {0x91, 0x02}; /* [2] */
    t0 = now_ms();
    s = mf_call(p, "park", args, sizeof args, 100, &buf);
    took = now_ms() - t0;
    CHECK_STATUS(s, MF_ERR_TIMEOUT);
    CHECK(took >= 50, "timeout 100 ms returned after %lld ms", (long long)took);
    CHECK(buf.data == NULL, "out was written on timeout");
    check_json_call(p, "parked", "[]", "2");

    /* The late answers (sent before unpark's own) are dropped, and the
     * caller sees only its own results. */
    check_json_call(p, "unpark", "[]", "2");
    check_json_call(p, "add", "[20, 22]", "42");
    check_json_call(p, "echo", "[\"after\"]", "\"after\"");

    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"timeouts\":2");
    CHECK_CONTAINS(stats, "\"in_flight\":0");
    CHECK_CONTAINS(stats, "\"circuit_state\":\"closed\"");
    mf_string_free(stats);
    /* timeout_ms 0 is the parent's default (30 s here), < 0 is no limit. */
    check_json_call(p, "add", "[3, 4]", "7");
    out = NULL;
    CHECK_STATUS(mf_call_json(p, "sleep_ms", "[50]", 0, &out), MF_OK);
    mf_string_free(out);
    out = NULL;
    CHECK_STATUS(mf_call_json(p, "sleep_ms", "[50]", -1, &out), MF_OK);
    mf_string_free(out);
    mf_parent_close(p);

    /* mf_options_set_default_timeout is what timeout_ms 0 means. */
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_default_timeout(o, 300), MF_OK);
    CHECK_STATUS(mf_options_set_cancel_grace(o, 0), MF_OK);
    p = spawn_worker(o);
    mf_options_free(o);
    if (p) {
        out = NULL;
        t0 = now_ms();
        s = mf_call_json(p, "park", "[3]", 0, &out);
        took = now_ms() - t0;
        CHECK_STATUS(s, MF_ERR_TIMEOUT);
        CHECK(took >= 250, "default timeout 300 ms returned after %lld ms", (long long)took);
        CHECK_CONTAINS(mf_last_error(), "300 ms");
        check_json_call(p, "unpark", "[]", "1");
        /* An explicit timeout overrides the default. */
        check_json_call(p, "sleep_ms", "[400]", "400");
        mf_parent_close(p);
    }
    return check_summary();
}
