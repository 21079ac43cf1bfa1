/* A worker that dies inside a call: the caller gets MF_ERR_WORKER_EXITED
 * with the signal, and without auto-restart every later call fails the same
 * way at once instead of being sent to nobody and timing out. Every call
 * here has a 20 s timeout: the status tells a crash noticed when it happens
 * from one noticed by the timeout. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

/* ---- the crash seen through mf_call_async ---- */

struct outcome {
    int done;
    mf_status status;
    char error[512];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static mf_parent *async_parent;
static struct outcome crash_outcome, next_outcome;
static mf_status next_submit = MF_ERR_PANIC;
static char next_submit_error[512];

static void record(struct outcome *o, mf_status status, const char *error_message) {
    pthread_mutex_lock(&lock);
    o->done++;
    o->status = status;
    snprintf(o->error, sizeof o->error, "%s", error_message ? error_message : "");
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void on_next(void *user, mf_status status, const uint8_t *r, size_t len, const char *error_message) {
    (void)user, (void)r, (void)len;
    record(&next_outcome, status, error_message);
}

/* The crash is reported: call again at once, from the completion itself. */
static void on_crash(void *user, mf_status status, const uint8_t *r, size_t len, const char *error_message) {
    (void)user, (void)r, (void)len;
    const uint8_t args[] = {0x92, 0x01, 0x02};
    next_submit = mf_call_async(async_parent, "add", args, sizeof args, 20000, on_next, NULL);
    snprintf(next_submit_error, sizeof next_submit_error, "%s", next_submit == MF_OK ? "" : mf_last_error());
    if (next_submit != MF_OK) record(&next_outcome, next_submit, next_submit_error);
    record(&crash_outcome, status, error_message);
}

static void wait_for(struct outcome *o, int ms) {
    int64_t until = now_ms() + ms;
    pthread_mutex_lock(&lock);
    while (!o->done && now_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&cond, &lock, &ts);
    }
    pthread_mutex_unlock(&lock);
}

static void crash_async(void) {
    async_parent = spawn_worker(NULL);
    if (!async_parent) return;
    CHECK_STATUS(mf_call_async(async_parent, "crash", NULL, 0, 20000, on_crash, NULL), MF_OK);
    wait_for(&crash_outcome, 30000);
    wait_for(&next_outcome, 30000);
    pthread_mutex_lock(&lock);
    CHECK(crash_outcome.done == 1, "crash completion ran %d times", crash_outcome.done);
    CHECK(crash_outcome.status == MF_ERR_WORKER_EXITED, "async crash: %s (\"%s\")",
          mf_status_name(crash_outcome.status), crash_outcome.error);
    CHECK_CONTAINS(crash_outcome.error, "signal 6");
    /* The call made right after the crash: refused at once, or completed at
     * once, with the worker's exit -- not sent to nobody and timed out. */
    CHECK(next_outcome.done == 1, "the next call completed %d times", next_outcome.done);
    CHECK(next_outcome.status == MF_ERR_WORKER_EXITED,
          "a call made as the crash was reported: submit %s, then %s (\"%s\"), expected MF_ERR_WORKER_EXITED",
          mf_status_name(next_submit), mf_status_name(next_outcome.status), next_outcome.error);
    pthread_mutex_unlock(&lock);
    mf_parent_close(async_parent);
}

/* ---- the crash seen through mf_call ---- */

static void crash_sync(int round) {
    mf_parent *p = spawn_worker(NULL);
    if (!p) return;
    check_json_call(p, "add", "[1, 1]", "2");

    char *out = NULL;
    mf_status s = mf_call_json(p, "crash", "[]", 20000, &out);
    CHECK_STATUS(s, MF_ERR_WORKER_EXITED);
    CHECK_CONTAINS(mf_last_error(), "signal 6");
    CHECK_CONTAINS(mf_last_error(), "SIGABRT");
    CHECK(out == NULL, "out was written on failure");
    if (round == 0) printf("crash -> %s: %s\n", mf_status_name(s), mf_last_error());

    /* Without auto-restart the worker stays gone: the next call, made at
     * once, fails at once with the exit, not after its 20 s timeout. */
    s = mf_call_json(p, "add", "[1, 2]", 20000, &out);
    CHECK(s == MF_ERR_WORKER_EXITED, "round %d: the call right after the crash: %s (\"%s\")", round,
          mf_status_name(s), mf_last_error());
    /* And a while later, too. */
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    s = mf_call_json(p, "add", "[1, 2]", 20000, &out);
    CHECK_STATUS(s, MF_ERR_WORKER_EXITED);
    CHECK_CONTAINS(mf_last_error(), "signal 6");

    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"healthy\":false");
    CHECK_CONTAINS(stats, "\"worker_pid\":0");
    mf_string_free(stats);
    mf_parent_close(p);
}

int main(void) {
    crash_async();
    /* The window between the crash report and the parent knowing the worker
     * is gone is short; a few rounds make it likely to be hit. */
    for (int round = 0; round < 5; round++) crash_sync(round);
    return check_summary();
}
