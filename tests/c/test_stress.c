/* Every call form mixed on one parent, on both transports (the private link
 * and ZeroMQ): threads blocking in mf_call, an async window from a thread
 * that sleeps when it is full, queued calls taken by a thread in
 * mf_queue_next, short per-call timeouts among normal calls, worker crashes
 * with auto-restart, and mf_parent_close with calls in flight through
 * retained references.
 *
 * Each call has unique arguments and is checked to complete exactly once
 * with its own result or the right error. `stalls` (a reply that waited in
 * the parent's transport until a timer, not the transport, woke its
 * driver) must stay 0. Calls made right after a crash must end with a
 * result or a definite error, never by their timeout. Latencies are printed,
 * not bounded: speed is for the benchmarks, and a busy machine must pass. */
#include "support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define BLOCKERS 4
#define BLOCKING_CALLS 5000
#define WINDOW 64
#define ASYNC_CALLS 20000
#define QUEUED_CALLS 5000

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* Latencies of one phase, in microseconds. */
typedef struct {
    int64_t *us;
    atomic_int n;
    int cap;
} lat_t;

static void lat_init(lat_t *l, int cap) {
    l->us = calloc((size_t)cap, sizeof *l->us);
    atomic_store(&l->n, 0);
    l->cap = cap;
}

static void lat_add(lat_t *l, int64_t us) {
    int i = atomic_fetch_add(&l->n, 1);
    if (i < l->cap) l->us[i] = us;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Prints the latencies of a phase; frees. */
static void lat_report(lat_t *l, const char *phase) {
    int n = atomic_load(&l->n);
    if (n > l->cap) n = l->cap;
    qsort(l->us, (size_t)n, sizeof *l->us, cmp64);
    if (CHECK(n > 0, "%s: no latencies", phase)) {
        int64_t p99 = l->us[(n * 99) / 100], max = l->us[n - 1];
        printf("%s: %d calls, p50 %lld us, p99 %lld us, max %lld us\n", phase, n, (long long)l->us[n / 2],
               (long long)p99, (long long)max);
    }
    free(l->us);
}

static long long stat_value(mf_parent *p, const char *key) {
    char *s = mf_parent_stats_json(p);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = s ? strstr(s, pat) : NULL;
    long long v = at ? atoll(at + strlen(pat)) : -1;
    mf_string_free(s);
    return v;
}

/* add(a, b) through mf_call; checks the sum. Returns the status. */
static mf_status call_add(mf_parent *p, long long a, long long b, int64_t timeout_ms) {
    uint8_t args[32];
    size_t n = msgpack_pair(args, a, b);
    mf_buffer out = {0};
    mf_status s = mf_call(p, "add", args, n, timeout_ms, &out);
    if (s == MF_OK) {
        long long v = 0;
        CHECK(msgpack_int(out.data, out.len, &v) && v == a + b, "add(%lld, %lld) gave %lld", a, b, v);
        mf_buffer_free(out);
    }
    return s;
}

/* ---- blocking callers ---- */

typedef struct {
    mf_parent *p;
    int id;
    int calls;
    lat_t *lat;
    /* Calls that may meet a crash: any of these statuses is fine. */
    int crash_phase;
    atomic_int *ok;
} blocker_t;

static void *blocker(void *arg) {
    blocker_t *b = arg;
    for (int i = 0; i < b->calls; i++) {
        int64_t t0 = now_us();
        mf_status s = call_add(b->p, (long long)b->id * 1000000 + i, i, 20000);
        if (b->lat) lat_add(b->lat, now_us() - t0);
        if (s == MF_OK) {
            if (b->ok) atomic_fetch_add(b->ok, 1);
        } else {
            CHECK(b->crash_phase && (s == MF_ERR_WORKER_EXITED || s == MF_ERR_CLOSED),
                  "blocker %d call %d: %s: %s", b->id, i, mf_status_name(s), mf_last_error());
        }
    }
    return NULL;
}

/* ---- the async window ---- */

typedef struct {
    atomic_int in_flight;
    atomic_int done;
    atomic_int failed;
    lat_t *lat;
    /* Per call: when it started, and how often it completed (must be once). */
    int64_t *started;
    atomic_uchar *completions;
    long long base;
} window_t;

typedef struct {
    window_t *w;
    int i;
} ticket_t;

static ticket_t *tickets;

static void window_done(void *user, mf_status s, const uint8_t *r, size_t len, const char *err) {
    ticket_t *t = user;
    window_t *w = t->w;
    if (atomic_fetch_add(&w->completions[t->i], 1) != 0) CHECK(0, "async call %d completed twice", t->i);
    if (s == MF_OK) {
        long long v = 0;
        long long want = w->base + t->i + t->i;
        CHECK(msgpack_int(r, len, &v) && v == want, "async %d: got %lld, want %lld", t->i, v, want);
    } else {
        atomic_fetch_add(&w->failed, 1);
        CHECK(0, "async %d: %s: %s", t->i, mf_status_name(s), err ? err : "");
    }
    if (w->lat) lat_add(w->lat, now_us() - w->started[t->i]);
    atomic_fetch_add(&w->done, 1);
    atomic_fetch_sub(&w->in_flight, 1);
}

/* Keeps WINDOW calls in flight for `calls` calls; sleeps 20 us when full. */
static void run_window(mf_parent *p, window_t *w, int calls) {
    w->started = calloc((size_t)calls, sizeof *w->started);
    w->completions = calloc((size_t)calls, sizeof *w->completions);
    tickets = calloc((size_t)calls, sizeof *tickets);
    atomic_store(&w->in_flight, 0);
    atomic_store(&w->done, 0);
    for (int i = 0; i < calls; i++) {
        while (atomic_load(&w->in_flight) >= WINDOW) sleep_us(20);
        tickets[i] = (ticket_t){w, i};
        uint8_t args[32];
        size_t n = msgpack_pair(args, w->base + i, i);
        atomic_fetch_add(&w->in_flight, 1);
        w->started[i] = now_us();
        mf_status s = mf_call_async(p, "add", args, n, 20000, window_done, &tickets[i]);
        if (!CHECK(s == MF_OK, "async start %d: %s: %s", i, mf_status_name(s), mf_last_error())) {
            atomic_fetch_sub(&w->in_flight, 1);
            atomic_fetch_add(&w->done, 1);
            atomic_fetch_add(&w->completions[i], 1);
        }
    }
    int64_t t0 = now_ms();
    while (atomic_load(&w->done) < calls && now_ms() - t0 < 25000) sleep_us(200);
    CHECK(atomic_load(&w->done) == calls, "async window: %d of %d completed", atomic_load(&w->done), calls);
    for (int i = 0; i < calls; i++)
        if (atomic_load(&w->completions[i]) != 1) {
            CHECK(0, "async call %d completed %d times", i, atomic_load(&w->completions[i]));
            break;
        }
    free(w->started);
    free(w->completions);
    free(tickets);
}

/* ---- queued calls ---- */

typedef struct {
    mf_queue *q;
    int calls;
    atomic_int taken;
    unsigned char *seen;
    long long base;
} queue_run_t;

static void *queue_taker(void *arg) {
    queue_run_t *r = arg;
    mf_event ev[32];
    while (atomic_load(&r->taken) < r->calls) {
        size_t n = 0;
        mf_status s = mf_queue_next(r->q, 20000, ev, 32, &n);
        if (!CHECK(s == MF_OK, "mf_queue_next: %s: %s", mf_status_name(s), mf_last_error())) return NULL;
        for (size_t k = 0; k < n; k++) {
            uint64_t i = ev[k].token;
            if (!CHECK(i < (uint64_t)r->calls && !r->seen[i], "token %llu twice or unknown", (unsigned long long)i))
                continue;
            r->seen[i] = 1;
            long long v = 0;
            CHECK(ev[k].status == MF_OK && msgpack_int(ev[k].result, ev[k].result_len, &v) &&
                      v == r->base + 2 * (long long)i,
                  "queued %llu: %s %s", (unsigned long long)i, mf_status_name(ev[k].status),
                  ev[k].error_message ? ev[k].error_message : "");
            atomic_fetch_add(&r->taken, 1);
        }
    }
    return NULL;
}

typedef struct {
    mf_parent *p;
    queue_run_t *r;
} queue_giver_t;

static void *queue_giver(void *arg) {
    queue_giver_t *g = arg;
    for (int i = 0; i < g->r->calls; i++) {
        uint8_t args[32];
        size_t n = msgpack_pair(args, g->r->base + i, i);
        mf_status s = mf_call_queued(g->p, "add", args, n, 20000, g->r->q, (uint64_t)i);
        CHECK(s == MF_OK, "queued start %d: %s", i, mf_status_name(s));
        if (i % 64 == 63) sleep_us(50);
    }
    return NULL;
}

/* ---- short timeouts among normal calls ---- */

static void *timeouter(void *arg) {
    mf_parent *p = arg;
    for (int i = 0; i < 20; i++) {
        mf_buffer out = {0};
        const uint8_t args[] = {0x91, 0xcd, 0x00, 0xc8}; /* [200] */
        mf_status s = mf_call(p, "sleep_ms", args, sizeof args, 10, &out);
        CHECK_STATUS(s, MF_ERR_TIMEOUT);
        if (s == MF_OK) mf_buffer_free(out);
    }
    return NULL;
}

static mf_options *options_for(int link, int restarts) {
    mf_options *o = mf_options_new();
    mf_options_set_private_link(o, link);
    mf_options_set_auto_restart(o, (uint32_t)restarts);
    /* A heartbeat every 100 ms: timers fire among the calls. */
    mf_options_set_heartbeat(o, 100, 3000, 3);
    /* The deliberate timeouts must not open the breaker. */
    mf_options_set_breaker(o, 1000000, 1000);
    return o;
}

/* Blocking calls from 4 threads, then the async window on the same parent. */
static void phase_threads_then_window(mf_parent *p, const char *t) {
    char name[64];
    pthread_t th[BLOCKERS];
    blocker_t b[BLOCKERS];
    lat_t lat;
    lat_init(&lat, BLOCKERS * BLOCKING_CALLS);
    for (int i = 0; i < BLOCKERS; i++) {
        b[i] = (blocker_t){p, i + 1, BLOCKING_CALLS, &lat, 0, NULL};
        pthread_create(&th[i], NULL, blocker, &b[i]);
    }
    for (int i = 0; i < BLOCKERS; i++) pthread_join(th[i], NULL);
    snprintf(name, sizeof name, "%s threads4", t);
    lat_report(&lat, name);
    window_t w = {.base = 500000000};
    lat_t wl;
    lat_init(&wl, ASYNC_CALLS);
    w.lat = &wl;
    run_window(p, &w, ASYNC_CALLS);
    snprintf(name, sizeof name, "%s async64 after threads4", t);
    lat_report(&wl, name);
}

/* Every form at once: blockers, the window, the queue, short timeouts. */
static void phase_mixed(mf_parent *p, const char *t) {
    pthread_t th[BLOCKERS], taker, giver, tmo;
    blocker_t b[BLOCKERS];
    for (int i = 0; i < 3; i++) {
        b[i] = (blocker_t){p, 100 + i, 2000, NULL, 0, NULL};
        pthread_create(&th[i], NULL, blocker, &b[i]);
    }
    queue_run_t r = {.q = mf_queue_new(), .calls = QUEUED_CALLS, .base = 700000000};
    r.seen = calloc(QUEUED_CALLS, 1);
    queue_giver_t g = {p, &r};
    pthread_create(&taker, NULL, queue_taker, &r);
    pthread_create(&giver, NULL, queue_giver, &g);
    pthread_create(&tmo, NULL, timeouter, p);
    window_t w = {.base = 600000000};
    run_window(p, &w, 10000);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    pthread_join(giver, NULL);
    pthread_join(taker, NULL);
    pthread_join(tmo, NULL);
    CHECK(atomic_load(&r.taken) == QUEUED_CALLS, "%s: %d of %d queued calls", t, atomic_load(&r.taken),
          QUEUED_CALLS);
    free(r.seen);
    mf_queue_free(r.q);
}

/* Crashes with auto-restart; calls started right after each must end with
 * a result or a definite error long before their 20 s timeout. */
static void phase_crashes(int link, const char *t) {
    int crashes = 0;
    for (int round = 0; round < 4; round++) {
        mf_options *o = options_for(link, 8);
        mf_parent *p = spawn_worker(o);
        mf_options_free(o);
        if (!p) return;
        for (int c = 0; c < 4; c++) {
            mf_buffer out = {0};
            mf_status s = mf_call(p, "crash", (const uint8_t *)"\x90", 1, 20000, &out);
            CHECK(s == MF_ERR_WORKER_EXITED, "%s crash %d: %s: %s", t, crashes, mf_status_name(s), mf_last_error());
            crashes++;
            pthread_t th[3];
            blocker_t b[3];
            atomic_int ok = 0;
            for (int i = 0; i < 3; i++) {
                b[i] = (blocker_t){p, 900 + i, 3, NULL, 1, &ok};
                pthread_create(&th[i], NULL, blocker, &b[i]);
            }
            for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
            CHECK(atomic_load(&ok) == 9, "%s: after crash %d only %d of 9 calls answered", t, crashes,
                  atomic_load(&ok));
        }
        CHECK(stat_value(p, "restarts") == 4, "%s: restarts %lld", t, stat_value(p, "restarts"));
        CHECK(stat_value(p, "stalls") == 0, "%s: stalls %lld", t, stat_value(p, "stalls"));
        mf_parent_close(p);
    }
    CHECK(crashes == 16, "%d crashes", crashes);
}

/* Close while calls are in flight through retained references: each ends
 * once, with its result or MF_ERR_CLOSED. */
static void phase_close_in_flight(int link, const char *t) {
    mf_options *o = options_for(link, 0);
    mf_parent *p = spawn_worker(o);
    mf_options_free(o);
    if (!p) return;
    pthread_t th[BLOCKERS];
    blocker_t b[BLOCKERS];
    for (int i = 0; i < BLOCKERS; i++) {
        b[i] = (blocker_t){mf_parent_retain(p), 300 + i, 100000, NULL, 1, NULL};
        pthread_create(&th[i], NULL, blocker, &b[i]);
    }
    /* Close once the calls are flowing: some have been answered. */
    int64_t t0 = now_ms();
    while (stat_value(p, "requests_success") < 100 && now_ms() - t0 < 20000) sleep_us(1000);
    CHECK(stat_value(p, "requests_success") >= 100, "%s: calls never flowed before the close: %lld answered", t,
          stat_value(p, "requests_success"));
    mf_parent_close(p);
    for (int i = 0; i < BLOCKERS; i++) {
        pthread_join(th[i], NULL);
        mf_parent_release(b[i].p);
    }
}

int main(void) {
    for (int link = 1; link >= 0; link--) {
        const char *t = link ? "link" : "zmq";
        mf_options *o = options_for(link, 0);
        mf_parent *p = spawn_worker(o);
        mf_options_free(o);
        if (!p) continue;
        char *stats = mf_parent_stats_json(p);
        CHECK_CONTAINS(stats, link ? "\"transport\":\"link\"" : "\"transport\":\"zmq\"");
        mf_string_free(stats);
        phase_threads_then_window(p, t);
        phase_mixed(p, t);
        CHECK(stat_value(p, "stalls") == 0, "%s: stalls %lld", t, stat_value(p, "stalls"));
        CHECK(stat_value(p, "in_flight") == 0, "%s: in_flight %lld", t, stat_value(p, "in_flight"));
        mf_parent_close(p);
        phase_crashes(link, t);
        phase_close_in_flight(link, t);
    }
    return check_summary();
}
