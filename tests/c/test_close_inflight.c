/* Closing a parent while other threads are inside mf_call: those calls end
 * with MF_ERR_CLOSED (the worker never answers them: they are parked, and
 * their 60 s timeout would say MF_ERR_TIMEOUT), the close returns, and a new
 * parent works afterwards. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>

#define CALLERS 4

static mf_parent *parent;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int started;

struct caller {
    mf_status status;
    char error[256];
    int wrote_out;
};

static void *sleeper(void *arg) {
    struct caller *c = arg;
    pthread_mutex_lock(&lock);
    started++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    char *out = NULL;
    c->status = mf_call_json(parent, "park", "[0]", 60000, &out);
    snprintf(c->error, sizeof c->error, "%s", mf_last_error());
    c->wrote_out = out != NULL;
    mf_string_free(out);
    return NULL;
}

int main(void) {
    mf_options *o = mf_options_new();
    /* The worker's calls are never answered; it need not get a long grace. */
    CHECK_STATUS(mf_options_set_shutdown_grace(o, 500), MF_OK);
    parent = spawn_worker(o);
    mf_options_free(o);
    if (!parent) return check_summary();

    pthread_t threads[CALLERS];
    struct caller callers[CALLERS] = {{0}};
    for (int i = 0; i < CALLERS; i++) pthread_create(&threads[i], NULL, sleeper, &callers[i]);
    pthread_mutex_lock(&lock);
    while (started < CALLERS) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    /* The calls are really in flight before the close starts. */
    CHECK(wait_in_flight(parent, CALLERS), "the %d calls never were all in flight", CALLERS);

    mf_parent_close(parent);
    for (int i = 0; i < CALLERS; i++) pthread_join(threads[i], NULL);

    for (int i = 0; i < CALLERS; i++) {
        struct caller *c = &callers[i];
        CHECK(c->status == MF_ERR_CLOSED, "caller %d: %s (\"%s\"), expected MF_ERR_CLOSED", i,
              mf_status_name(c->status), c->error);
        CHECK(c->error[0] != '\0', "caller %d: MF_ERR_CLOSED without a message", i);
        CHECK(!c->wrote_out, "caller %d: out written on failure", i);
    }

    /* A second parent (and worker) works afterwards. */
    mf_parent *second = spawn_worker(NULL);
    if (second) {
        check_json_call(second, "add", "[1, 2]", "3");
        check_json_call(second, "sleep_ms", "[10]", "10");
        mf_parent_close(second);
    }
    return check_summary();
}
