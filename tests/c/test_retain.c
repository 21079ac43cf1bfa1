/* mf_parent_retain / mf_parent_release: a thread that holds its own
 * reference may go on calling while another thread closes the handle. The
 * call in flight ends with MF_ERR_CLOSED, later calls through the reference
 * are refused as closed (not a use after free: this test also runs under
 * valgrind), and the last release alone closes the worker. */
#include "support.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>

static mf_status sleeper_status;
static char sleeper_error[256];

static void *sleeper(void *arg) {
    mf_parent *ref = arg;
    char *out = NULL;
    sleeper_status = mf_call_json(ref, "sleep_ms", "[5000]", 20000, &out);
    snprintf(sleeper_error, sizeof sleeper_error, "%s", mf_last_error());
    mf_string_free(out);
    mf_parent_release(ref);
    return NULL;
}

static long long worker_pid(mf_parent *p) {
    char *out = call_json_ok(p, "pid", "[]", 10000);
    long long pid = out ? atoll(out) : 0;
    mf_string_free(out);
    return pid;
}

int main(void) {
    CHECK(mf_parent_retain(NULL) == NULL, "retaining NULL gives NULL");
    mf_parent_release(NULL);

    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_shutdown_grace(o, 500), MF_OK);
    mf_parent *p = spawn_worker(o);
    mf_options_free(o);
    if (!p) return check_summary();

    mf_parent *mine = mf_parent_retain(p);
    CHECK(mine == p, "a reference is the same handle");
    check_json_call(mine, "add", "[2, 3]", "5");

    /* A call through its own reference is in flight when the handle closes. */
    pthread_t thread;
    pthread_create(&thread, NULL, sleeper, mf_parent_retain(p));
    CHECK(wait_in_flight(p, 1), "the call never was in flight");
    mf_parent_close(p);
    pthread_join(thread, NULL);
    CHECK(sleeper_status == MF_ERR_CLOSED, "the call in flight: %s (\"%s\"), expected MF_ERR_CLOSED",
          mf_status_name(sleeper_status), sleeper_error);

    /* The reference still names the parent, a closed one. */
    char *out = NULL;
    mf_status s = mf_call_json(mine, "add", "[1, 1]", 1000, &out);
    CHECK(s == MF_ERR_CLOSED, "a call after the close: %s, expected MF_ERR_CLOSED", mf_status_name(s));
    CHECK(strstr(mf_last_error(), "closed") != NULL, "its message: \"%s\"", mf_last_error());
    CHECK(out == NULL, "out written on failure");
    char *stats = mf_parent_stats_json(mine);
    CHECK(stats && strstr(stats, "\"in_flight\":0"), "stats after the close: %s", stats ? stats : "NULL");
    mf_string_free(stats);
    mf_parent_release(mine);

    /* Releasing every reference, without mf_parent_close, closes the worker. */
    mf_parent *q = spawn_worker(NULL);
    if (q) {
        mf_parent *extra = mf_parent_retain(q);
        long long pid = worker_pid(extra);
        mf_parent_release(extra);
        check_json_call(q, "add", "[1, 2]", "3"); /* one reference left: still open */
        mf_parent_release(q);
        errno = 0;
        CHECK(pid > 0 && kill((pid_t)pid, 0) == -1 && errno == ESRCH,
              "worker %lld still exists after the last release", pid);
    }
    return check_summary();
}
