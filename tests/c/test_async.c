/* mf_call_async: 64 calls in flight at once, each completion delivered
 * exactly once with its own value; a remote error arrives in the callback
 * with its text; a call refused at the start never runs its callback. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CALLS 64

struct slot {
    int index;
    int calls;          /* how many times the callback ran */
    mf_status status;
    long long value;
    int decoded;
    char error[256];
    int had_result;     /* result pointer was non-NULL */
    int had_error_ptr;  /* error_message pointer was non-NULL */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;

static void on_done(void *user, mf_status status, const uint8_t *result, size_t len, const char *error_message) {
    struct slot *s = user;
    pthread_mutex_lock(&lock);
    s->calls++;
    s->status = status;
    s->had_result = result != NULL;
    s->had_error_ptr = error_message != NULL;
    if (result) s->decoded = msgpack_int(result, len, &s->value);
    if (error_message) snprintf(s->error, sizeof s->error, "%s", error_message);
    done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

/* Waits until `want` completions arrived or `ms` passed; returns the count. */
static int wait_done(int want, int ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lock);
    while (done < want)
        if (pthread_cond_timedwait(&cond, &lock, &until) != 0) break;
    int n = done;
    pthread_mutex_unlock(&lock);
    return n;
}

int main(void) {
    /* Parked calls ignore the cancel their timeout sends: a grace of 0
     * keeps the parent from stopping the worker for them. */
    mf_options *patient = mf_options_new();
    mf_options_set_cancel_grace(patient, 0);
    mf_parent *p = spawn_worker(patient);
    mf_options_free(patient);
    if (!p) return check_summary();

    static struct slot slots[CALLS + 2];
    for (int i = 0; i < CALLS; i++) {
        slots[i].index = i;
        uint8_t args[32];
        size_t n = msgpack_pair(args, i, i);
        mf_status s = mf_call_async(p, "add", args, n, 10000, on_done, &slots[i]);
        CHECK(s == MF_OK, "mf_call_async #%d: %s: %s", i, mf_status_name(s), mf_last_error());
    }
    int got = wait_done(CALLS, 10000);
    CHECK(got == CALLS, "%d of %d completions arrived", got, CALLS);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < CALLS; i++) {
        struct slot *s = &slots[i];
        CHECK(s->calls == 1, "add(%d, %d): callback ran %d times", i, i, s->calls);
        CHECK(s->status == MF_OK, "add(%d, %d): %s (%s)", i, i, mf_status_name(s->status), s->error);
        CHECK(s->decoded && s->value == 2 * i, "add(%d, %d) = %lld", i, i, s->value);
        CHECK(s->had_result && !s->had_error_ptr, "add(%d, %d): result set, error_message NULL", i, i);
    }
    pthread_mutex_unlock(&lock);

    /* A remote error: the callback gets the status and the text. */
    struct slot *f = &slots[CALLS];
    const uint8_t boom[] = {0x91, 0xaa, 'a', 's', 'y', 'n', 'c', '-', 'b', 'o', 'o', 'm'};
    CHECK_STATUS(mf_call_async(p, "fail", boom, sizeof boom, 10000, on_done, f), MF_OK);
    got = wait_done(CALLS + 1, 10000);
    CHECK(got == CALLS + 1, "the failing call completed");
    pthread_mutex_lock(&lock);
    CHECK(f->calls == 1, "callback ran %d times", f->calls);
    CHECK(f->status == MF_ERR_REMOTE, "async fail: %s", mf_status_name(f->status));
    CHECK_STR_EQ(f->error, "RuntimeError: async-boom");
    CHECK(!f->had_result, "result is NULL on failure");
    pthread_mutex_unlock(&lock);

    /* A timeout reaches the callback too: the parked call is never answered
     * until unpark(), so the timeout comes from the timer, while the call is
     * still parked in the worker. */
    struct slot *t = &slots[CALLS + 1];
    const uint8_t park_args[] = {0x91, 0x07}; /* [7] */
    CHECK_STATUS(mf_call_async(p, "park", park_args, sizeof park_args, 100, on_done, t), MF_OK);
    got = wait_done(CALLS + 2, 30000);
    CHECK(got == CALLS + 2, "the timed-out call completed");
    check_json_call(p, "parked", "[]", "1");
    pthread_mutex_lock(&lock);
    CHECK(t->status == MF_ERR_TIMEOUT, "async sleep: %s", mf_status_name(t->status));
    CHECK(t->error[0] != '\0', "a timeout has a message");
    pthread_mutex_unlock(&lock);

    /* Refused at the start: MF_OK is not returned and the callback never runs. */
    struct slot refused = {0};
    const uint8_t not_array[] = {0x01};
    CHECK_STATUS(mf_call_async(p, "add", not_array, sizeof not_array, 1000, on_done, &refused),
                 MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_call_async(p, "add", NULL, 0, 1000, NULL, &refused), MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_call_async(NULL, "add", NULL, 0, 1000, on_done, &refused), MF_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mf_call_async(p, NULL, NULL, 0, 1000, on_done, &refused), MF_ERR_INVALID_ARGUMENT);

    /* Answer the parked call (its late answer is dropped), so nothing is
     * left to complete at close. */
    check_json_call(p, "unpark", "[]", "1");
    pthread_mutex_lock(&lock);
    CHECK(refused.calls == 0, "a refused call's callback ran %d times", refused.calls);
    CHECK(done == CALLS + 2, "%d callbacks in all, expected %d", done, CALLS + 2);
    pthread_mutex_unlock(&lock);
    mf_parent_close(p);
    return check_summary();
}
