/* One parent shared by 8 threads, 300 calls each, all at once: every
 * caller gets its own answer. Half the threads use mf_call, half mf_call_json.
 * Then handlers that block: with 8 callers of a 50 ms handler, a worker of
 * concurrency 8 (and one of 32) runs 8 of them at once, counted inside the
 * worker; one of concurrency 1 never runs two. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 8
#define CALLS 300

static mf_parent *parent;
static pthread_barrier_t start;

struct result {
    int thread;
    int ok;
    int wrong;
    char first_problem[256];
};

static void note(struct result *r, const char *fmt, long long a, long long b, const char *text) {
    r->wrong++;
    if (!r->first_problem[0]) {
        snprintf(r->first_problem, sizeof r->first_problem, fmt, a, b, text);
    }
}

static void *caller(void *arg) {
    struct result *r = arg;
    long long t = r->thread;
    pthread_barrier_wait(&start);
    for (long long i = 0; i < CALLS; i++) {
        if (t % 2 == 0) {
            uint8_t args[32];
            size_t n = msgpack_pair(args, t, i);
            mf_buffer out = {NULL, 0};
            mf_status s = mf_call(parent, "add", args, n, 20000, &out);
            long long v = -1;
            if (s != MF_OK)
                note(r, "add(%lld, %lld) failed: %s", t, i, mf_last_error());
            else if (!msgpack_int(out.data, out.len, &v) || v != t + i)
                note(r, "add(%lld, %lld) returned a wrong value%s", t, i, "");
            else
                r->ok++;
            mf_buffer_free(out);
        } else {
            char args[64], *out = NULL;
            snprintf(args, sizeof args, "[%lld, %lld]", t, i);
            mf_status s = mf_call_json(parent, "add", args, 20000, &out);
            if (s != MF_OK)
                note(r, "add(%lld, %lld) failed: %s", t, i, mf_last_error());
            else if (strtoll(out, NULL, 10) != t + i)
                note(r, "add(%lld, %lld) returned %s", t, i, out);
            else
                r->ok++;
            mf_string_free(out);
        }
    }
    return NULL;
}

struct holder {
    mf_parent *p;
    int rounds;
    int failed;
};

static void *hold_caller(void *arg) {
    struct holder *h = arg;
    pthread_barrier_wait(&start);
    for (int i = 0; i < h->rounds; i++) {
        char *out = NULL;
        if (mf_call_json(h->p, "hold_ms", "[50]", 30000, &out) != MF_OK || strcmp(out, "50") != 0) h->failed++;
        mf_string_free(out);
    }
    return NULL;
}

/* `callers` threads, `rounds` calls of hold_ms(50) each, against a worker of
 * `concurrency` (over ZeroMQ: the private link is covered by the Rust tests);
 * the most handlers the worker ran at once. */
static long long most_at_once(const char *concurrency, int callers, int rounds) {
    const char *args[] = {"--concurrency", concurrency, NULL};
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_private_link(o, false), MF_OK);
    mf_parent *p = NULL;
    mf_status s = mf_spawn(TEST_WORKER, args, o, &p);
    mf_options_free(o);
    if (!CHECK(s == MF_OK, "spawn with concurrency %s: %s", concurrency, mf_last_error())) return -1;
    pthread_t threads[THREADS];
    struct holder h[THREADS];
    pthread_barrier_init(&start, NULL, (unsigned)callers);
    for (int t = 0; t < callers; t++) {
        h[t] = (struct holder){.p = p, .rounds = rounds};
        pthread_create(&threads[t], NULL, hold_caller, &h[t]);
    }
    for (int t = 0; t < callers; t++) {
        pthread_join(threads[t], NULL);
        CHECK(h[t].failed == 0, "concurrency %s: %d calls of hold_ms failed", concurrency, h[t].failed);
    }
    pthread_barrier_destroy(&start);
    long long most = -1;
    char *out = call_json_ok(p, "most_holding", "[]", 10000);
    if (out) most = strtoll(out, NULL, 10);
    mf_string_free(out);
    mf_parent_close(p);
    printf("concurrency %s, %d callers: %lld handlers at once\n", concurrency, callers, most);
    return most;
}

int main(void) {
    long long most = most_at_once("8", 8, 10);
    CHECK(most == 8, "concurrency 8, 8 callers: %lld handlers ran at once, expected 8", most);
    most = most_at_once("32", 8, 10);
    CHECK(most == 8, "concurrency 32, 8 callers: %lld handlers ran at once, expected 8", most);
    most = most_at_once("1", 4, 5);
    CHECK(most == 1, "concurrency 1, 4 callers: %lld handlers ran at once, expected 1", most);

    parent = spawn_worker(NULL);
    if (!parent) return check_summary();

    pthread_t threads[THREADS];
    struct result results[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    int64_t t0 = now_ms();
    for (int t = 0; t < THREADS; t++) {
        results[t] = (struct result){.thread = t};
        pthread_create(&threads[t], NULL, caller, &results[t]);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    int64_t took = now_ms() - t0;
    pthread_barrier_destroy(&start);

    for (int t = 0; t < THREADS; t++) {
        CHECK(results[t].ok == CALLS && results[t].wrong == 0, "thread %d: %d right, %d wrong; first: %s", t,
              results[t].ok, results[t].wrong, results[t].first_problem);
    }
    printf("%d calls from %d threads in %lld ms\n", THREADS * CALLS, THREADS, (long long)took);

    char *stats = mf_parent_stats_json(parent);
    char want[64];
    snprintf(want, sizeof want, "\"requests_success\":%d", THREADS * CALLS);
    CHECK_CONTAINS(stats, want);
    CHECK_CONTAINS(stats, "\"requests_failed\":0");
    CHECK_CONTAINS(stats, "\"in_flight\":0");
    mf_string_free(stats);
    mf_parent_close(parent);
    return check_summary();
}
