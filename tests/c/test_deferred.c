/* A handler may return without answering and answer later from another
 * thread: deferred(x) gives back x from a thread of its own. */
#include "support.h"

#include <pthread.h>

#define PARKED 20

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;

struct slot {
    int calls;
    mf_status status;
    long long value;
    int decoded;
};

static void on_done(void *user, mf_status status, const uint8_t *result, size_t len, const char *error_message) {
    (void)error_message;
    struct slot *s = user;
    pthread_mutex_lock(&lock);
    s->calls++;
    s->status = status;
    if (result) s->decoded = msgpack_int(result, len, &s->value);
    done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

/* Waits until `want` completions arrived (30 s: a hang guard); returns the count. */
static int wait_done(int want) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&lock);
    while (done < want)
        if (pthread_cond_timedwait(&cond, &lock, &until) != 0) break;
    int n = done;
    pthread_mutex_unlock(&lock);
    return n;
}

int main(void) {
    mf_parent *p = spawn_worker(NULL);
    if (!p) return check_summary();

    check_json_call(p, "deferred", "[42]", "42");
    check_json_call(p, "deferred", "[\"later\"]", "\"later\"");
    check_json_call(p, "deferred", "[{\"a\":[1,2]}]", "{\"a\":[1,2]}");

    /* Raw msgpack. */
    mf_buffer out = {NULL, 0};
    const uint8_t args[] = {0x91, 0x2a};
    mf_status s = mf_call(p, "deferred", args, sizeof args, 5000, &out);
    CHECK_STATUS(s, MF_OK);
    if (s == MF_OK) {
        CHECK(out.len == 1 && out.data[0] == 0x2a, "deferred(42) gave %zu bytes", out.len);
        mf_buffer_free(out);
    }
    for (int i = 0; i < 20; i++) {
        char a[32], want[32];
        snprintf(a, sizeof a, "[%d]", i * 1000);
        snprintf(want, sizeof want, "%d", i * 1000);
        check_json_call(p, "deferred", a, want);
    }
    mf_parent_close(p);

    /* A handler that returns at once frees its thread: with one handler
     * thread, twenty calls are left unanswered (parked) and parked() still
     * runs beside them. A handler thread held until its reply would leave
     * parked() waiting behind the first of them. */
    const char *one_thread[] = {"--concurrency", "1", NULL};
    p = NULL;
    s = mf_spawn(TEST_WORKER, one_thread, NULL, &p);
    if (!CHECK(s == MF_OK, "spawn --concurrency 1: %s: %s", mf_status_name(s), mf_last_error()))
        return check_summary();
    static struct slot slots[PARKED];
    for (int i = 0; i < PARKED; i++) {
        uint8_t arg[] = {0x91, (uint8_t)i}; /* [i], a positive fixint */
        CHECK_STATUS(mf_call_async(p, "park", arg, sizeof arg, 30000, on_done, &slots[i]), MF_OK);
    }
    CHECK(wait_parked(p, PARKED), "the worker never had %d calls parked at once", PARKED);
    pthread_mutex_lock(&lock);
    CHECK(done == 0, "%d parked calls were answered before unpark()", done);
    pthread_mutex_unlock(&lock);
    check_json_call(p, "unpark", "[]", "20");
    int got = wait_done(PARKED);
    CHECK(got == PARKED, "%d of %d parked calls were answered after unpark()", got, PARKED);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < PARKED; i++) {
        CHECK(slots[i].calls == 1 && slots[i].status == MF_OK && slots[i].decoded && slots[i].value == i,
              "park(%d): %d completions, %s, value %lld", i, slots[i].calls, mf_status_name(slots[i].status),
              slots[i].value);
    }
    pthread_mutex_unlock(&lock);
    mf_parent_close(p);
    return check_summary();
}
