/* Cancellation through the C API: mf_call_start gives a call's id and
 * mf_cancel ends it at once with MF_ERR_CANCELLED; the worker's handler
 * sees it (mf_reply_on_cancel in the test worker's sleep_ms) and stops, so
 * the next call is answered by the one handler thread; a handler that
 * ignores it (spin_ms) is stopped after the cancel grace and the worker
 * restarted; the queued form gives an id too; bad input gets a status. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

struct slot {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int calls;
    mf_status status;
    char error[512];
};

static void on_done(void *user, mf_status status, const uint8_t *result, size_t len, const char *error) {
    (void)result;
    (void)len;
    struct slot *s = user;
    pthread_mutex_lock(&s->lock);
    s->calls++;
    s->status = status;
    snprintf(s->error, sizeof s->error, "%s", error ? error : "");
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
}

/* Waits (a hang guard, not a bound) for the slot's completion; its count. */
static int wait_slot(struct slot *s) {
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 30;
    pthread_mutex_lock(&s->lock);
    while (s->calls == 0 && pthread_cond_timedwait(&s->cv, &s->lock, &end) == 0) {
    }
    int calls = s->calls;
    pthread_mutex_unlock(&s->lock);
    return calls;
}

static mf_parent *spawn_threads(const char *threads, mf_options *o) {
    const char *args[] = {"--concurrency", threads, NULL};
    mf_parent *p = NULL;
    mf_status s = mf_spawn(TEST_WORKER, args, o, &p);
    CHECK(s == MF_OK, "spawn: %s: %s", mf_status_name(s), mf_last_error());
    return p;
}

static void cooperative(void) {
    mf_parent *p = spawn_threads("1", NULL);
    if (!p) return;
    struct slot s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, MF_OK, ""};
    uint64_t id = 0;
    const uint8_t args[] = {0x91, 0xcd, 0xea, 0x60}; /* [60000] */
    CHECK_STATUS(mf_call_start(p, "sleep_ms", args, sizeof args, 120000, on_done, &s, &id), MF_OK);
    CHECK(id != 0, "a call's id is never 0");
    CHECK_STATUS(mf_cancel(p, id), MF_OK);
    CHECK(s.calls == 1, "the completion ran inside mf_cancel (%d calls)", s.calls);
    CHECK(s.status == MF_ERR_CANCELLED, "status %s", mf_status_name(s.status));
    CHECK(strcmp(s.error, "call to 'sleep_ms' was cancelled") == 0, "text: %s", s.error);
    /* Finished or unknown ids are left alone. */
    CHECK_STATUS(mf_cancel(p, id), MF_OK);
    CHECK_STATUS(mf_cancel(p, 0), MF_OK);
    CHECK(s.calls == 1, "a second cancel ran the completion again");
    /* The one handler thread is free again only if sleep_ms stopped: the
     * 20 s timeout is a hang guard for a handler that went on. */
    check_json_call(p, "add", "[1, 2]", "3");
    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"cancels\":1");
    CHECK_CONTAINS(stats, "\"escalations\":0");
    CHECK_CONTAINS(stats, "\"circuit_state\":\"closed\"");
    mf_string_free(stats);

    /* The queued form: the event carries the token and MF_ERR_CANCELLED. */
    mf_queue *q = mf_queue_new();
    uint64_t qid = 0;
    CHECK_STATUS(mf_call_queued_start(p, "sleep_ms", args, sizeof args, 120000, q, 77, &qid), MF_OK);
    CHECK(qid != 0 && qid != id, "queued id %llu", (unsigned long long)qid);
    CHECK_STATUS(mf_cancel(p, qid), MF_OK);
    mf_event ev[2];
    size_t n = 0;
    CHECK_STATUS(mf_queue_next(q, 0, ev, 2, &n), MF_OK);
    CHECK(n == 1 && ev[0].token == 77 && ev[0].status == MF_ERR_CANCELLED, "event %zu: %llu %s", n,
          (unsigned long long)ev[0].token, mf_status_name(ev[0].status));
    check_json_call(p, "add", "[2, 2]", "4");
    mf_queue_free(q);
    mf_parent_close(p);
}

static void ignored(void) {
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_cancel_grace(o, 300), MF_OK);
    CHECK_STATUS(mf_options_set_shutdown_grace(o, 500), MF_OK);
    CHECK_STATUS(mf_options_set_auto_restart(o, 1), MF_OK);
    /* Two threads: the spinner's, and one that says when it started. */
    mf_parent *p = spawn_threads("2", o);
    mf_options_free(o);
    if (!p) return;
    struct slot s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, MF_OK, ""};
    uint64_t id = 0;
    const uint8_t args[] = {0x91, 0xcd, 0xea, 0x60}; /* [60000] */
    CHECK_STATUS(mf_call_start(p, "spin_ms", args, sizeof args, 120000, on_done, &s, &id), MF_OK);
    /* Cancelled once it runs (a cancel before it starts would void it). */
    char *started = NULL;
    for (int i = 0; i < 3000; i++) {
        started = call_json_ok(p, "spins", "[]", 20000);
        if (!started || strcmp(started, "1") == 0) break;
        mf_string_free(started);
        started = NULL;
        usleep(10000);
    }
    CHECK(started && strcmp(started, "1") == 0, "spin_ms started");
    mf_string_free(started);
    CHECK_STATUS(mf_cancel(p, id), MF_OK);
    CHECK(wait_slot(&s) == 1 && s.status == MF_ERR_CANCELLED, "status %s", mf_status_name(s.status));
    /* A call in flight when the worker is stopped ends with its exit. */
    struct slot other = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, MF_OK, ""};
    CHECK_STATUS(mf_call_start(p, "sleep_ms", args, sizeof args, 120000, on_done, &other, NULL), MF_OK);
    CHECK(wait_slot(&other) == 1 && other.status == MF_ERR_WORKER_EXITED, "status %s",
          mf_status_name(other.status));
    CHECK_CONTAINS(other.error, "worker stopped: a handler of 'spin_ms' ran on ");
    /* The next call is answered by the restarted worker. */
    check_json_call(p, "add", "[20, 22]", "42");
    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"escalations\":1");
    CHECK_CONTAINS(stats, "\"restarts\":1");
    mf_string_free(stats);
    mf_parent_close(p);
}

static void bad_input(void) {
    CHECK_STATUS(mf_cancel(NULL, 1), MF_ERR_INVALID_ARGUMENT);
    CHECK(!mf_reply_cancelled(NULL), "a NULL reply is not cancelled");
    CHECK_STATUS(mf_reply_on_cancel(NULL, NULL, NULL), MF_ERR_INVALID_ARGUMENT);
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_cancel_grace(o, -1), MF_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(mf_last_error(), "cancel grace must be >= 0 ms, got -1");
    CHECK_STATUS(mf_options_set_cancel_grace(o, 0), MF_OK);
    mf_options_free(o);
    uint64_t id = 99;
    CHECK_STATUS(mf_call_start(NULL, "add", NULL, 0, 1000, on_done, NULL, &id), MF_ERR_INVALID_ARGUMENT);
    CHECK(id == 99, "a call that did not start wrote an id");
    CHECK(strcmp(mf_status_name(MF_ERR_CANCELLED), "MF_ERR_CANCELLED") == 0, "name");
    CHECK(strcmp(mf_status_name(MF_ERR_NO_SUCH_FUNCTION), "MF_ERR_NO_SUCH_FUNCTION") == 0, "name");
}

int main(void) {
    bad_input();
    cooperative();
    ignored();
    return check_summary();
}
