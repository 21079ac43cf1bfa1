/* Streams through the C API: mf_stream_open / mf_stream_next hand over a
 * C handler's mf_reply_yield_json items in order and then the end; a
 * stream closed halfway makes the handler's next yield fail with
 * MF_ERR_CANCELLED; a plain call of the same handler gets the list; bad
 * input gets a status. */
#include "support.h"

#include <stdio.h>
#include <unistd.h>

/* A small non-negative integer item (a msgpack positive fixint or uint8/16). */
static long long small_int(const mf_buffer *b) {
    if (b->len == 1 && b->data[0] < 0x80) return b->data[0];
    if (b->len == 2 && b->data[0] == 0xcc) return b->data[1];
    if (b->len == 3 && b->data[0] == 0xcd) return (b->data[1] << 8) | b->data[2];
    return -1;
}

int main(void) {
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_stream_credit(o, 0), MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_options_set_stream_credit(o, 4), MF_OK);
    mf_parent *p = spawn_worker(o);
    mf_options_free(o);
    if (!p) return check_summary();

    const uint8_t args[] = {0x91, 0xcd, 0x01, 0xf4}; /* [500] */
    mf_stream *s = NULL;
    CHECK_STATUS(mf_stream_open(p, "count", args, sizeof args, 20000, &s), MF_OK);
    long long want = 0;
    for (;;) {
        mf_buffer item = {NULL, 0};
        bool end = false;
        mf_status st = mf_stream_next(s, -1, &item, &end);
        if (!CHECK(st == MF_OK, "next: %s: %s", mf_status_name(st), mf_last_error())) break;
        if (end) break;
        long long got = small_int(&item);
        CHECK(got == want, "item %lld came as %lld", want, got);
        want++;
        mf_buffer_free(item);
    }
    CHECK(want == 500, "%lld items", want);
    mf_stream_close(s);

    /* Closed after 10 items: the handler's yield fails and it stops. */
    CHECK_STATUS(mf_stream_open(p, "count", args, sizeof args, 20000, &s), MF_OK);
    for (int i = 0; i < 10; i++) {
        mf_buffer item = {NULL, 0};
        bool end = true;
        CHECK_STATUS(mf_stream_next(s, -1, &item, &end), MF_OK);
        CHECK(!end && small_int(&item) == i, "item %d", i);
        mf_buffer_free(item);
    }
    mf_stream_close(s);
    char *counted = NULL;
    for (int i = 0; i < 3000; i++) {
        counted = call_json_ok(p, "counted", "[]", 20000);
        if (!counted || strstr(counted, ",1]")) break;
        mf_string_free(counted);
        counted = NULL;
        usleep(10000);
    }
    CHECK(counted && strstr(counted, ",1]"), "the closed stream's handler stopped: %s", counted ? counted : "(null)");
    mf_string_free(counted);

    /* Cancelled from this thread while nothing waits; next says so, with
     * its text handed back. */
    const uint8_t sleep_args[] = {0x91, 0xcd, 0x27, 0x10}; /* [10000] */
    CHECK_STATUS(mf_stream_open(p, "sleep_ms", sleep_args, sizeof sleep_args, 20000, &s), MF_OK);
    CHECK_STATUS(mf_stream_cancel(s), MF_OK);
    {
        mf_buffer item = {NULL, 0};
        bool end = false;
        char *error = NULL;
        CHECK_STATUS(mf_stream_next_ex(s, -1, &item, &end, &error), MF_ERR_CANCELLED);
        CHECK(error && strcmp(error, "call to 'sleep_ms' was cancelled") == 0, "text: %s", error ? error : "(null)");
        mf_string_free(error);
    }
    mf_stream_close(s);
    CHECK_STATUS(mf_stream_cancel(NULL), MF_ERR_INVALID_ARGUMENT);

    /* The two timeouts, told apart by *end: a wait limit of next's own
     * leaves the stream open; the call's timeout (300 ms, no item) ends it. */
    CHECK_STATUS(mf_stream_open(p, "sleep_ms", sleep_args, sizeof sleep_args, 300, &s), MF_OK);
    {
        mf_buffer item = {NULL, 0};
        bool end = true;
        CHECK_STATUS(mf_stream_next(s, 0, &item, &end), MF_ERR_TIMEOUT);
        CHECK(!end, "a wait limit of next's own leaves the stream open");
        end = false;
        CHECK_STATUS(mf_stream_next(s, -1, &item, &end), MF_ERR_TIMEOUT);
        CHECK(end, "the call's timeout ends the stream: %s", mf_last_error());
        end = false;
        CHECK_STATUS(mf_stream_next(s, -1, &item, &end), MF_OK);
        CHECK(end, "an ended stream stays ended");
    }
    mf_stream_close(s);

    /* A plain call of a yielding handler gets the list. */
    check_json_call(p, "count", "[3]", "[0,1,2]");

    /* Bad input. */
    mf_buffer item = {NULL, 0};
    bool end = false;
    CHECK_STATUS(mf_stream_next(NULL, 0, &item, &end), MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_stream_open(p, "count", args, sizeof args, 1000, NULL), MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_reply_yield(NULL, args, sizeof args), MF_ERR_INVALID_ARGUMENT);
    mf_stream_close(NULL);

    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"streams_open\":0");
    mf_string_free(stats);
    mf_parent_close(p);
    return check_summary();
}
