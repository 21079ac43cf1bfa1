/* A handler may return without answering and answer later from another
 * thread: deferred(x) gives back x from a thread of its own. */
#include "support.h"

int main(void) {
    mf_parent *p = spawn_worker(NULL);
    if (!p) return check_summary();

    check_json_call(p, "deferred", "[42]", "42");
    check_json_call(p, "deferred", "[\"later\"]", "\"later\"");
    check_json_call(p, "deferred", "[{\"a\":[1,2]}]", "{\"a\":[1,2]}");

    /* Raw msgpack, and several deferred replies outstanding at once. */
    mf_buffer out = {NULL, 0};
    const uint8_t args[] = {0x91, 0x2a};
    mf_status s = mf_call(p, "deferred", args, sizeof args, 5000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        CHECK(out.len == 1 && out.data[0] == 0x2a, "deferred(42) gave %zu bytes", out.len);
        mf_buffer_free(out);
    }
    /* The handler returns at once, so one handler thread suffices for many. */
    int64_t t0 = now_ms();
    for (int i = 0; i < 20; i++) {
        char a[32], want[32];
        snprintf(a, sizeof a, "[%d]", i * 1000);
        snprintf(want, sizeof want, "%d", i * 1000);
        check_json_call(p, "deferred", a, want);
    }
    CHECK(now_ms() - t0 < 5000, "20 deferred calls took %lld ms", (long long)(now_ms() - t0));
    mf_parent_close(p);
    return check_summary();
}
