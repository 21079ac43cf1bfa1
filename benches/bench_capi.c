/* The C API benchmark: what a C caller of libmultifrost sees.
 *
 * Cases (run in this order; select with --cases a,b,c):
 *   rss_idle      parent VmRSS with one idle math_worker                  (MiB)
 *   rss_inflight  extra VmRSS per call in flight, 10 000 calls held by
 *                 bench_worker's `hold` until `release`                    (KiB/call)
 *   spawn         mf_spawn + first mf_call, median of several spawns       (ms)
 *   call_seq      mf_call("add", [1, 2]) one after the other               (µs/call)
 *   echo_seq      mf_call("echo", [~100-byte str]): no JSON on the worker   (µs/call)
 *   threads4      4 threads calling mf_call at once                        (calls/s)
 *   async64       mf_call_async("add", [i, 1]) with 64 in flight, issued by
 *                 a producer thread that waits for a free slot             (calls/s)
 *   async64_after_threads4
 *                 on one parent, 4 threads × 5 000 blocking mf_call at once,
 *                 then right after, one thread keeps 64 mf_call_async in
 *                 flight, sleeping 20 µs whenever its window is full       (calls/s)
 *   async64_cb    async64's window, each completion callback starts the
 *                 next call                                                (calls/s)
 *   async64_queue async64's window, completions taken in batches from an
 *                 mf_queue by the producer (mf_call_queued/mf_queue_next)  (calls/s)
 *   async64_loop  the same window from one thread that waits as an event
 *                 loop does: mf_call_queued, poll on the queue's
 *                 descriptor (mf_queue_fd), drain with mf_queue_next      (calls/s)
 *   echo1mib      mf_call("echo", [1 MiB bin]) one after the other         (echoes/s)
 *   loop_seq      async64_loop's loop with one call in flight: the
 *                 sequential round trip of an event-loop caller            (µs/call)
 *   stream_small  one stream of 100 000 small integers from bench_worker's
 *                 `items`, read with mf_stream_next (default credit 16)    (items/s)
 *   stream1mib    one stream of 1 MiB bins from `items`, over the private
 *                 link (default credit 16)                                 (GiB/s)
 *   call_seq_zmq, async64_zmq, echo1mib_zmq
 *                 call_seq, async64 and echo1mib with the private link off:
 *                 the protocol's own wire (libzmq on both sides), as a
 *                 worker of another implementation is reached
 *
 * Every call checks its result; a wrong result or a failed call prints
 * "bench_capi: FAILED: ..." and exits 1. The results are one JSON object on
 * stdout (format in benches/README.md); progress goes to stderr.
 *
 *   bench_capi [--worker build/math_worker] [--bench-worker build/bench_worker]
 *              [--cases LIST] [--scale F]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <multifrost.h>

#include "../tests/c/msgpack_int.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef MATH_WORKER
#define MATH_WORKER "build/math_worker"
#endif
#ifndef BENCH_WORKER
#define BENCH_WORKER "build/bench_worker"
#endif

/* ---- plumbing ------------------------------------------------------------ */

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_capi: FAILED: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    if (n == 0) return 0.0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* VmRSS of this process in KiB (from /proc/self/status). */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f) fail("cannot open /proc/self/status");
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    if (kib < 0) fail("no VmRSS in /proc/self/status");
    return kib;
}

/* The results, as JSON members of "metrics" and "info". */
static char metrics[8192], info[4096];

static void metric(const char *name, double value, const char *unit, const char *better, const char *label) {
    size_t n = strlen(metrics);
    snprintf(metrics + n, sizeof metrics - n,
             "%s\"%s\": {\"value\": %.3f, \"unit\": \"%s\", \"better\": \"%s\", \"label\": \"%s\"}",
             n ? ", " : "", name, value, unit, better, label);
}

static void info_num(const char *name, double value) {
    size_t n = strlen(info);
    snprintf(info + n, sizeof info - n, "%s\"%s\": %.3f", n ? ", " : "", name, value);
}

/* ---- msgpack ------------------------------------------------------------- */

/* Writes a non-negative integer; returns its length. */
static size_t mp_uint(uint8_t *p, uint64_t v) {
    if (v < 128) {
        p[0] = (uint8_t)v;
        return 1;
    }
    if (v <= 0xff) {
        p[0] = 0xcc;
        p[1] = (uint8_t)v;
        return 2;
    }
    if (v <= 0xffff) {
        p[0] = 0xcd;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
        return 3;
    }
    p[0] = 0xce;
    for (int i = 0; i < 4; i++) p[1 + i] = (uint8_t)(v >> (24 - 8 * i));
    return 5;
}

/* [a, b] as a msgpack array. */
static size_t mp_pair(uint8_t *p, uint64_t a, uint64_t b) {
    size_t n = 0;
    p[n++] = 0x92;
    n += mp_uint(p + n, a);
    n += mp_uint(p + n, b);
    return n;
}

/* ---- configuration ------------------------------------------------------- */

/* The raw-msgpack bench worker for every case: the floor echoes raw bytes,
 * so the worker must not spend time on JSON (the C example's add does). */
static const char *worker_path = BENCH_WORKER;
static const char *bench_worker_path = BENCH_WORKER;
static double scale = 1.0;

static size_t scaled(size_t n, size_t min) {
    size_t v = (size_t)((double)n * scale + 0.5);
    return v < min ? min : v;
}

/* Whether spawned workers are offered the private link (the _zmq cases turn it off). */
static bool private_link = true;

static mf_parent *spawn(const char *program) {
    mf_parent *p = NULL;
    mf_options *o = mf_options_new();
    if (!o || mf_options_set_private_link(o, private_link) != MF_OK) fail("mf_options: %s", mf_last_error());
    mf_status s = mf_spawn(program, NULL, o, &p);
    mf_options_free(o);
    if (s != MF_OK) fail("mf_spawn %s: %s: %s", program, mf_status_name(s), mf_last_error());
    return p;
}

/* add(a, b) through mf_call; fails the run unless it returns a + b. */
static void call_add(mf_parent *p, uint64_t a, uint64_t b) {
    uint8_t args[32];
    size_t n = mp_pair(args, a, b);
    mf_buffer out;
    mf_status s = mf_call(p, "add", args, n, 0, &out);
    if (s != MF_OK) fail("add(%llu, %llu): %s: %s", (unsigned long long)a, (unsigned long long)b, mf_status_name(s), mf_last_error());
    long long v;
    if (!msgpack_int(out.data, out.len, &v) || v != (long long)(a + b))
        fail("add(%llu, %llu) returned a wrong result", (unsigned long long)a, (unsigned long long)b);
    mf_buffer_free(out);
}

/* ---- cases --------------------------------------------------------------- */

static void case_rss_idle(void) {
    mf_parent *p = spawn(worker_path);
    call_add(p, 1, 2);
    sleep_ms(300);
    long kib = rss_kib();
    metric("rss_idle_mib", (double)kib / 1024.0, "MiB", "lower", "parent RSS, one idle worker");
    mf_parent_close(p);
}

/* rss_inflight: completions of `hold [i]`, each must return i. */
static atomic_long hold_done, hold_bad;

static void on_hold(void *user, mf_status s, const uint8_t *result, size_t len, const char *err) {
    long long v;
    (void)err;
    if (s != MF_OK || !msgpack_int(result, len, &v) || v != (long long)(intptr_t)user) atomic_fetch_add(&hold_bad, 1);
    atomic_fetch_add(&hold_done, 1);
}

static long long call_int(mf_parent *p, const char *fn) {
    mf_buffer out;
    long long v;
    mf_status s = mf_call(p, fn, (const uint8_t *)"\x90", 1, 60000, &out);
    if (s != MF_OK) fail("%s(): %s: %s", fn, mf_status_name(s), mf_last_error());
    if (!msgpack_int(out.data, out.len, &v)) fail("%s() did not return an integer", fn);
    mf_buffer_free(out);
    return v;
}

static void case_rss_inflight(void) {
    const long calls = 10000;
    mf_parent *p = spawn(bench_worker_path);
    if (call_int(p, "release") != 0) fail("release() with nothing held returned non-zero");
    /* A small round first, so one-time allocations are not counted per call. */
    for (long round = 0; round < 2; round++) {
        long n = round == 0 ? 200 : calls;
        atomic_store(&hold_done, 0);
        long before = rss_kib();
        for (long i = 0; i < n; i++) {
            uint8_t args[8];
            size_t len = 1;
            args[0] = 0x91;
            len += mp_uint(args + 1, (uint64_t)i);
            mf_status s = mf_call_async(p, "hold", args, len, 60000, on_hold, (void *)(intptr_t)i);
            if (s != MF_OK) fail("hold(%ld): %s: %s", i, mf_status_name(s), mf_last_error());
        }
        /* `held` is answered after the worker took every hold before it: all
         * n calls are now sent and waiting in the parent. */
        long long held = call_int(p, "held");
        if (held != n) fail("worker holds %lld calls, expected %ld", held, n);
        long peak = rss_kib();
        if (round == 1) {
            metric("rss_inflight_mib", (double)peak / 1024.0, "MiB", "lower", "parent RSS, 10000 calls in flight");
            metric("rss_per_call_kib", (double)(peak - before) / (double)n, "KiB", "lower",
                   "extra parent RSS per call in flight");
            info_num("rss_inflight_calls", (double)n);
        }
        if (call_int(p, "release") != n) fail("release() did not release %ld calls", n);
        double until = now_s() + 30;
        while (atomic_load(&hold_done) < n && now_s() < until) sleep_ms(1);
        if (atomic_load(&hold_done) != n) fail("only %ld of %ld held calls completed", atomic_load(&hold_done), n);
        if (atomic_load(&hold_bad)) fail("%ld held calls failed or returned a wrong value", atomic_load(&hold_bad));
    }
    mf_parent_close(p);
}

static void case_spawn(void) {
    size_t n = scaled(7, 3);
    double *ms = calloc(n, sizeof *ms), close_ms = 0;
    for (size_t i = 0; i < n; i++) {
        double t0 = now_s();
        mf_parent *p = spawn(worker_path);
        call_add(p, 1, 2);
        double t1 = now_s();
        mf_parent_close(p);
        close_ms += (now_s() - t1) * 1e3;
        ms[i] = (t1 - t0) * 1e3;
    }
    double best = ms[0];
    for (size_t i = 1; i < n; i++) best = ms[i] < best ? ms[i] : best;
    metric("spawn_first_ms", median(ms, n), "ms", "lower", "mf_spawn + first mf_call (median)");
    info_num("spawn_first_min_ms", best);
    info_num("close_avg_ms", close_ms / (double)n);
    info_num("spawns", (double)n);
    free(ms);
}

/* Times `n` sequential round trips after 300 unmeasured ones; `call` makes
 * and checks round trip i. Reports <name>_p50_us and <name>_mean_us. */
static void seq_latency(const char *name, const char *what, size_t n, void (*call)(mf_parent *, size_t)) {
    size_t warmup = 300;
    double *lat = malloc(n * sizeof *lat);
    if (!lat) fail("out of memory");
    mf_parent *p = spawn(worker_path);
    double start = 0;
    for (size_t i = 0; i < warmup + n; i++) {
        if (i == warmup) start = now_s();
        double t = now_s();
        call(p, i);
        if (i >= warmup) lat[i - warmup] = (now_s() - t) * 1e6;
    }
    double mean = (now_s() - start) * 1e6 / (double)n;
    char key[64], label[128];
    snprintf(key, sizeof key, "%s_p50_us", name);
    snprintf(label, sizeof label, "%s sequential (median)", what);
    metric(key, median(lat, n), "us", "lower", label);
    snprintf(key, sizeof key, "%s_mean_us", name);
    snprintf(label, sizeof label, "%s sequential (mean)", what);
    metric(key, mean, "us", "lower", label);
    free(lat);
    mf_parent_close(p);
}

static void call_add_1_2(mf_parent *p, size_t i) {
    static const uint8_t args[] = {0x92, 0x01, 0x02};
    mf_buffer out;
    mf_status s = mf_call(p, "add", args, sizeof args, 0, &out);
    if (s != MF_OK) fail("add(1, 2) #%zu: %s: %s", i, mf_status_name(s), mf_last_error());
    if (out.len != 1 || out.data[0] != 3) fail("add(1, 2) #%zu did not return 3", i);
    mf_buffer_free(out);
}

static void case_call_seq(void) {
    size_t n = scaled(5000, 10);
    seq_latency("call_seq", "mf_call add [1,2]", n, call_add_1_2);
    info_num("call_seq_calls", (double)n);
}

static void case_call_seq_zmq(void) {
    private_link = false;
    seq_latency("call_seq_zmq", "mf_call add [1,2], private link off", scaled(5000, 10), call_add_1_2);
    private_link = true;
}

/* echo of a 100-byte string: the same round trip without the JSON handler. */
static uint8_t echo_args[3 + 100];

static void call_echo_100(mf_parent *p, size_t i) {
    echo_args[3] = (uint8_t)('a' + i % 26);
    mf_buffer out;
    mf_status s = mf_call(p, "echo", echo_args, sizeof echo_args, 0, &out);
    if (s != MF_OK) fail("echo #%zu: %s: %s", i, mf_status_name(s), mf_last_error());
    if (out.len != sizeof echo_args - 1 || memcmp(out.data, echo_args + 1, sizeof echo_args - 1) != 0)
        fail("echo #%zu returned other bytes", i);
    mf_buffer_free(out);
}

static void case_echo_seq(void) {
    echo_args[0] = 0x91;
    echo_args[1] = 0xd9; /* str8 */
    echo_args[2] = 100;
    for (int i = 0; i < 100; i++) echo_args[3 + i] = (uint8_t)('a' + i % 26);
    seq_latency("echo_seq", "mf_call echo 100 B str", scaled(4000, 10), call_echo_100);
}

struct thread_arg {
    mf_parent *p;
    uint64_t index;
    size_t calls;
    pthread_barrier_t *barrier;
    double end;
};

static void *thread_main(void *v) {
    struct thread_arg *a = v;
    pthread_barrier_wait(a->barrier);
    for (size_t k = 0; k < a->calls; k++) call_add(a->p, k, a->index);
    a->end = now_s();
    return NULL;
}

/* Runs `threads` threads, each making `per` blocking mf_call add calls at
 * once on `p`; returns calls/s. */
static double run_threads(mf_parent *p, int threads, size_t per) {
    enum { MAX_THREADS = 8 };
    if (threads > MAX_THREADS) fail("at most %d threads", MAX_THREADS);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    pthread_t t[MAX_THREADS];
    struct thread_arg a[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        a[i] = (struct thread_arg){p, (uint64_t)i * 1000000u, per, &barrier, 0};
        if (pthread_create(&t[i], NULL, thread_main, &a[i])) fail("pthread_create");
    }
    pthread_barrier_wait(&barrier);
    double start = now_s(), end = start;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        end = a[i].end > end ? a[i].end : end;
    }
    pthread_barrier_destroy(&barrier);
    return (double)threads * (double)per / (end - start);
}

static void case_threads4(void) {
    mf_parent *p = spawn(worker_path);
    for (int i = 0; i < 200; i++) call_add(p, (uint64_t)i, 1);
    metric("threads4_calls_per_s", run_threads(p, 4, scaled(2500, 10)), "call/s", "higher",
           "4 threads calling mf_call at once");
    mf_parent_close(p);
}

/* async64: a producer thread keeps `window` calls in flight; each
 * completion (on the library's driving thread) checks its value and frees a
 * slot. The producer sleeps only when the window is full, and a completion
 * wakes it only then (an eventcount: a flag it sets before sleeping), so the
 * driving thread is not charged a futex wake-up for every completion, as a
 * semaphore posted per completion would charge it. */
static sem_t async_wakeup;
static atomic_long async_done, async_bad;
static atomic_int async_sleeping;

static void on_add(void *user, mf_status s, const uint8_t *result, size_t len, const char *err) {
    long long v;
    (void)err;
    if (s != MF_OK || !msgpack_int(result, len, &v) || v != (long long)(intptr_t)user + 1) atomic_fetch_add(&async_bad, 1);
    atomic_fetch_add(&async_done, 1);
    if (atomic_load(&async_sleeping) && atomic_exchange(&async_sleeping, 0)) sem_post(&async_wakeup);
}

/* Blocks until fewer than `limit` of the `issued` calls are outstanding. */
static void async_wait_below(long issued, long limit) {
    while (issued - atomic_load(&async_done) >= limit) {
        atomic_store(&async_sleeping, 1);
        /* Re-check after raising the flag: a completion in between would not see it. */
        if (issued - atomic_load(&async_done) < limit) {
            if (!atomic_exchange(&async_sleeping, 0)) while (sem_wait(&async_wakeup) != 0) {}
            break;
        }
        while (sem_wait(&async_wakeup) != 0) {}
    }
}

static double async_run(mf_parent *p, long n, int window) {
    atomic_store(&async_done, 0);
    atomic_store(&async_sleeping, 0);
    sem_init(&async_wakeup, 0, 0);
    double start = now_s();
    for (long i = 0; i < n; i++) {
        async_wait_below(i, window);
        uint8_t args[16];
        size_t len = mp_pair(args, (uint64_t)i, 1);
        mf_status s = mf_call_async(p, "add", args, len, 0, on_add, (void *)(intptr_t)i);
        if (s != MF_OK) fail("mf_call_async add(%ld, 1): %s: %s", i, mf_status_name(s), mf_last_error());
    }
    async_wait_below(n, 1);
    double elapsed = now_s() - start;
    sem_destroy(&async_wakeup);
    if (atomic_load(&async_done) != n) fail("%ld of %ld async calls completed", atomic_load(&async_done), n);
    if (atomic_load(&async_bad)) fail("%ld async calls failed or returned a wrong sum", atomic_load(&async_bad));
    return (double)n / elapsed;
}

/* Runs one 64-in-flight form: a warm-up, then the measured run. */
static void window_case(const char *name, const char *label, double (*run)(mf_parent *, long, int)) {
    long n = (long)scaled(80000, 100);
    mf_parent *p = spawn(worker_path);
    run(p, 2000, 64);
    metric(name, run(p, n, 64), "call/s", "higher", label);
    info_num("async64_calls", (double)n);
    mf_parent_close(p);
}

static void case_async64(void) {
    window_case("async64_calls_per_s", "mf_call_async add, 64 in flight", async_run);
}

/* async64_after_threads4: whether the transport is back with its owner
 * after blocking calls borrowed it. One parent: 4 threads make 5 000
 * blocking mf_call each at once, then, right after (no warm-up), one
 * thread keeps 64 mf_call_async in flight. Its waiting wakes nobody and
 * nobody wakes it: when the window is full it sleeps 20 µs and looks again,
 * so every completion must come from the driver on its own. A reply left
 * unread until some timer fires would show here as a collapse in calls/s;
 * no completion for 10 s fails the run. */
static double async_polling_run(mf_parent *p, long n, int window) {
    const struct timespec pause = {0, 20000};
    atomic_store(&async_done, 0);
    atomic_store(&async_sleeping, 0); /* on_add then posts nothing */
    long seen = 0;
    double start = now_s(), progress = start;
    for (long i = 0; i <= n; i++) {
        long limit = i < n ? window : 1; /* after the last call: wait for all */
        while (i - atomic_load(&async_done) >= limit) {
            nanosleep(&pause, NULL);
            long done = atomic_load(&async_done);
            if (done != seen) {
                seen = done;
                progress = now_s();
            } else if (now_s() - progress > 10) {
                fail("no completion for 10 s with %ld calls out", i - done);
            }
        }
        if (i == n) break;
        uint8_t args[16];
        size_t len = mp_pair(args, (uint64_t)i, 1);
        mf_status s = mf_call_async(p, "add", args, len, 0, on_add, (void *)(intptr_t)i);
        if (s != MF_OK) fail("mf_call_async add(%ld, 1): %s: %s", i, mf_status_name(s), mf_last_error());
    }
    double elapsed = now_s() - start;
    if (atomic_load(&async_bad)) fail("%ld async calls failed or returned a wrong sum", atomic_load(&async_bad));
    return (double)n / elapsed;
}

static void case_async64_after_threads4(void) {
    size_t per = scaled(5000, 10);
    long n = (long)scaled(80000, 100);
    mf_parent *p = spawn(worker_path);
    call_add(p, 1, 2);
    info_num("threads4_before_async_calls_per_s", run_threads(p, 4, per));
    metric("async64_after_threads4_calls_per_s", async_polling_run(p, n, 64), "call/s", "higher",
           "mf_call_async add, 64 in flight, polled every 20 us, right after 4 threads of blocking mf_call");
    mf_parent_close(p);
}

static void case_async64_zmq(void) {
    private_link = false;
    window_case("async64_zmq_calls_per_s", "mf_call_async add, 64 in flight, private link off", async_run);
    private_link = true;
}

/* Queues calls add(issued, 1), add(issued + 1, 1), … until `window` are
 * out or `n` issued; returns the new count issued. */
static long fill_window(mf_parent *p, mf_queue *q, long issued, long done, long n, int window) {
    for (; issued < n && issued - done < window; issued++) {
        uint8_t args[16];
        size_t len = mp_pair(args, (uint64_t)issued, 1);
        mf_status s = mf_call_queued(p, "add", args, len, 0, q, (uint64_t)issued);
        if (s != MF_OK) fail("mf_call_queued add(%ld, 1): %s: %s", issued, mf_status_name(s), mf_last_error());
    }
    return issued;
}

/* Takes up to 64 completions from `q`, waiting up to `timeout_ms`, and
 * checks each sum; returns how many were taken (0 after a timeout). */
static long take_events(mf_queue *q, int64_t timeout_ms) {
    mf_event events[64];
    size_t got = 0;
    mf_status s = mf_queue_next(q, timeout_ms, events, 64, &got);
    if (s == MF_ERR_TIMEOUT) return 0;
    if (s != MF_OK) fail("mf_queue_next: %s: %s", mf_status_name(s), mf_last_error());
    for (size_t k = 0; k < got; k++) {
        long long v;
        if (events[k].status != MF_OK || !msgpack_int(events[k].result, events[k].result_len, &v) ||
            v != (long long)events[k].token + 1)
            fail("queued add(%llu, 1) failed or returned a wrong sum", (unsigned long long)events[k].token);
    }
    return (long)got;
}

/* async64_queue: the same window from a producer thread that takes the
 * completions itself, in batches, from an mf_queue (mf_call_queued /
 * mf_queue_next): one wake-up per batch, and no callback on the library's
 * thread. */
static double queue_run(mf_parent *p, long n, int window) {
    mf_queue *q = mf_queue_new();
    long issued = 0, done = 0;
    double start = now_s();
    while (done < n) {
        issued = fill_window(p, q, issued, done, n, window);
        long got = take_events(q, 10000);
        if (got == 0) fail("no completion for 10 s with %ld calls out", issued - done);
        done += got;
    }
    double elapsed = now_s() - start;
    mf_queue_free(q);
    return (double)n / elapsed;
}

static void case_async64_queue(void) {
    window_case("async64_queue_calls_per_s", "mf_call_queued add, 64 in flight, completions taken in batches",
                queue_run);
}

/* async64_loop: the same window from one thread that waits the way an
 * event loop does (the loop of the Python and Node bindings, Go's network
 * poller): calls go out with mf_call_queued; when the window is full the
 * thread polls the queue's descriptor (mf_queue_fd), reads it to reset it,
 * and takes completions with mf_queue_next(0) until the queue is empty.
 * The replies are read by the library's thread, which wakes this one
 * through the descriptor only when a completion finds the queue empty. */
static long drain_queue(mf_queue *q) {
    long got = 0, n;
    while ((n = take_events(q, 0)) > 0) got += n;
    return got;
}

static double loop_run(mf_parent *p, long n, int window) {
    mf_queue *q = mf_queue_new();
    int qfd = -1;
    if (mf_queue_fd(q, &qfd) != MF_OK) fail("mf_queue_fd: %s", mf_last_error());
    long issued = 0, done = 0;
    double start = now_s();
    while (done < n) {
        issued = fill_window(p, q, issued, done, n, window);
        struct pollfd fd = {qfd, POLLIN, 0};
        int r = poll(&fd, 1, 10000);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) fail("no completion for 10 s with %ld calls out", issued - done);
        char buf[64];
        if (read(qfd, buf, sizeof buf) < 0 && errno != EAGAIN) fail("read queue descriptor");
        done += drain_queue(q);
    }
    double elapsed = now_s() - start;
    mf_queue_free(q);
    return (double)n / elapsed;
}

/* loop_seq: the same loop with one call in flight, which is what an
 * event loop awaiting one call after another (Python's `await acall`,
 * Node's `await call`) pays below its binding. */
static void case_loop_seq(void) {
    long n = (long)scaled(5000, 10);
    mf_parent *p = spawn(worker_path);
    loop_run(p, 300, 1);
    metric("loop_seq_mean_us", 1e6 / loop_run(p, n, 1), "us", "lower",
           "mf_call_queued + poll on mf_queue_fd, one call at a time (mean)");
    mf_parent_close(p);
}

static void case_async64_loop(void) {
    window_case("async64_loop_calls_per_s",
                "mf_call_queued add, 64 in flight, one thread polling the queue's descriptor (mf_queue_fd)",
                loop_run);
}

/* async64_cb: the same window, but each completion starts the next call
 * from the callback itself: no producer thread to wake, so this is the
 * library's own pipelining ceiling. */
static mf_parent *cb_parent;
static long cb_total;
static atomic_long cb_issued;
static sem_t cb_finished;

static void cb_start(long i);

static void on_add_refill(void *user, mf_status s, const uint8_t *result, size_t len, const char *err) {
    long long v;
    (void)err;
    if (s != MF_OK || !msgpack_int(result, len, &v) || v != (long long)(intptr_t)user + 1) atomic_fetch_add(&async_bad, 1);
    long next = atomic_fetch_add(&cb_issued, 1);
    if (next < cb_total) cb_start(next);
    if (atomic_fetch_add(&async_done, 1) + 1 == cb_total) sem_post(&cb_finished);
}

static void cb_start(long i) {
    uint8_t args[16];
    size_t len = mp_pair(args, (uint64_t)i, 1);
    mf_status s = mf_call_async(cb_parent, "add", args, len, 0, on_add_refill, (void *)(intptr_t)i);
    if (s != MF_OK) { /* counted as done and bad, so the run ends and fails */
        atomic_fetch_add(&async_bad, 1);
        if (atomic_fetch_add(&async_done, 1) + 1 == cb_total) sem_post(&cb_finished);
    }
}

static double async_cb_run(mf_parent *p, long n, int window) {
    cb_parent = p;
    cb_total = n;
    atomic_store(&async_done, 0);
    atomic_store(&cb_issued, window < n ? window : n);
    sem_init(&cb_finished, 0, 0);
    double start = now_s();
    for (long i = 0; i < window && i < n; i++) cb_start(i);
    while (sem_wait(&cb_finished) != 0) {}
    double elapsed = now_s() - start;
    sem_destroy(&cb_finished);
    if (atomic_load(&async_bad)) fail("%ld async calls failed or returned a wrong sum", atomic_load(&async_bad));
    return (double)n / elapsed;
}

static void case_async64_cb(void) {
    window_case("async64_cb_calls_per_s", "mf_call_async add, 64 in flight, next call started from the callback",
                async_cb_run);
}

static void echo1mib(const char *key, const char *label) {
    const size_t size = 1u << 20;
    size_t warmup = 10, n = scaled(250, 5);
    size_t len = 6 + size;
    uint8_t *args = malloc(len);
    if (!args) fail("out of memory");
    args[0] = 0x91;
    args[1] = 0xc6; /* bin32 */
    for (int i = 0; i < 4; i++) args[2 + i] = (uint8_t)(size >> (24 - 8 * i));
    uint8_t *data = args + 6;
    for (size_t i = 0; i < size; i++) data[i] = (uint8_t)(i * 131 % 251);
    mf_parent *p = spawn(worker_path);
    double start = 0;
    for (size_t i = 0; i < warmup + n; i++) {
        if (i == warmup) start = now_s();
        memcpy(data, &i, sizeof i);
        mf_buffer out;
        mf_status s = mf_call(p, "echo", args, len, 0, &out);
        if (s != MF_OK) fail("echo 1 MiB #%zu: %s: %s", i, mf_status_name(s), mf_last_error());
        if (out.len != len - 1 || memcmp(out.data, args + 1, 5 + sizeof i) != 0 ||
            out.data[5 + size / 2] != data[size / 2] || out.data[5 + size - 1] != data[size - 1])
            fail("echo 1 MiB #%zu returned %zu bytes or other content", i, out.len);
        mf_buffer_free(out);
    }
    double per_s = (double)n / (now_s() - start);
    metric(key, per_s, "echo/s", "higher", label);
    /* The bytes the caller gets back per second (each echo also sent as many). */
    char gib_key[64], gib_label[128];
    snprintf(gib_key, sizeof gib_key, "%.*sgib_per_s", (int)(strlen(key) - strlen("per_s")), key);
    snprintf(gib_label, sizeof gib_label, "%s, GiB/s returned", label);
    metric(gib_key, per_s * (double)size / (double)(1u << 30), "GiB/s", "higher", gib_label);
    free(args);
    mf_parent_close(p);
}

static void case_echo1mib(void) {
    echo1mib("echo_1mib_per_s", "mf_call echo 1 MiB bin");
}

static void case_echo1mib_zmq(void) {
    private_link = false;
    echo1mib("echo_1mib_zmq_per_s", "mf_call echo 1 MiB bin, private link off");
    private_link = true;
}

/* ---- streams ------------------------------------------------------------- */

/* Reads one stream of items(n, size) to its end, checking each item (the
 * integer i, or a bin of `size` bytes starting with i); returns the seconds
 * from mf_stream_open to the end. */
static double read_items(mf_parent *p, size_t n, size_t size) {
    uint8_t args[32];
    size_t len = mp_pair(args, n, size);
    double start = now_s();
    mf_stream *s = NULL;
    mf_status st = mf_stream_open(p, "items", args, len, 0, &s);
    if (st != MF_OK) fail("open items(%zu, %zu): %s: %s", n, size, mf_status_name(st), mf_last_error());
    for (size_t i = 0;; i++) {
        mf_buffer item;
        bool end = false;
        st = mf_stream_next(s, -1, &item, &end);
        if (st != MF_OK) fail("items(%zu, %zu) #%zu: %s: %s", n, size, i, mf_status_name(st), mf_last_error());
        if (end) {
            if (i != n) fail("items(%zu, %zu) ended after %zu items", n, size, i);
            break;
        }
        if (size == 0) {
            long long v;
            if (!msgpack_int(item.data, item.len, &v) || v != (long long)i) fail("items #%zu is another value", i);
        } else {
            size_t at;
            if (item.len != 5 + size || (memcpy(&at, item.data + 5, sizeof at), at != i) ||
                item.data[5 + size - 1] != 0xab)
                fail("items #%zu has %zu bytes or other content", i, item.len);
        }
        mf_buffer_free(item);
    }
    double took = now_s() - start;
    mf_stream_close(s);
    return took;
}

static void case_stream_small(void) {
    size_t n = scaled(100000, 100);
    mf_parent *p = spawn(bench_worker_path);
    read_items(p, 1000, 0); /* warm up */
    metric("stream_small_items_per_s", (double)n / read_items(p, n, 0), "item/s", "higher",
           "mf_stream_next of 100 000 small integers");
    mf_parent_close(p);
}

static void case_stream1mib(void) {
    size_t size = 1u << 20, n = scaled(1000, 10);
    mf_parent *p = spawn(bench_worker_path);
    read_items(p, 20, size); /* warm up */
    double took = read_items(p, n, size);
    metric("stream_1mib_gib_per_s", (double)n * (double)size / (double)(1u << 30) / took, "GiB/s", "higher",
           "mf_stream_next of 1 MiB bins");
    info_num("stream_1mib_items_per_s", (double)n / took);
    mf_parent_close(p);
}

/* ---- main ---------------------------------------------------------------- */

/* spin(SPIN_ROUNDS) calls answered so far, and those that failed. */
static atomic_long spin_done, spin_bad;

static void on_spin(void *user, mf_status s, const uint8_t *result, size_t len, const char *err) {
    (void)user, (void)result, (void)len;
    if (s != MF_OK) {
        fprintf(stderr, "bench_capi: spin: %s: %s\n", mf_status_name(s), err);
        atomic_fetch_add(&spin_bad, 1);
    }
    atomic_fetch_add(&spin_done, 1);
}

/* Seconds for `calls` spin calls, all started at once, on a pool of `workers`. */
static double spin_run(int workers, long calls, unsigned long long rounds) {
    mf_options *o = mf_options_new();
    if (!o || mf_options_set_private_link(o, private_link) != MF_OK || mf_options_set_workers(o, (uint32_t)workers) != MF_OK)
        fail("mf_options: %s", mf_last_error());
    mf_parent *p = NULL;
    mf_status s = mf_spawn(bench_worker_path, NULL, o, &p);
    mf_options_free(o);
    if (s != MF_OK) fail("mf_spawn a pool of %d: %s: %s", workers, mf_status_name(s), mf_last_error());
    uint8_t args[16];
    args[0] = 0x91;
    size_t n = 1 + mp_uint(args + 1, rounds);
    atomic_store(&spin_done, 0);
    atomic_store(&spin_bad, 0);
    double t0 = now_s();
    for (long i = 0; i < calls; i++) {
        s = mf_call_async(p, "spin", args, n, 600000, on_spin, NULL);
        if (s != MF_OK) fail("spin: %s: %s", mf_status_name(s), mf_last_error());
    }
    while (atomic_load(&spin_done) < calls) sleep_ms(1);
    double t = now_s() - t0;
    if (atomic_load(&spin_bad)) fail("%ld spin calls failed", atomic_load(&spin_bad));
    mf_parent_close(p);
    return t;
}

/* The same CPU-bound calls on one worker and on a pool of two (one
 * handler at a time in each, as a one-threaded runtime runs them). */
static void case_pool2(void) {
    const unsigned long long rounds = 20000000; /* about 20 ms of one core */
    long calls = (long)scaled(40, 8);
    spin_run(1, 2, rounds); /* warm: page cache, CPU frequency */
    double one = spin_run(1, calls, rounds), two = spin_run(2, calls, rounds);
    metric("pool2_speedup", one / two, "x", "higher", "2 workers vs 1, CPU-bound calls (time ratio)");
    info_num("pool1_ms", one * 1e3);
    info_num("pool2_ms", two * 1e3);
    info_num("spin_calls", (double)calls);
}

struct bench_case {
    const char *name;
    void (*run)(void);
};

static const struct bench_case cases[] = {
    {"rss_idle", case_rss_idle},   {"rss_inflight", case_rss_inflight},
    {"spawn", case_spawn},         {"call_seq", case_call_seq},
    {"echo_seq", case_echo_seq},   {"threads4", case_threads4},
    {"async64", case_async64},     {"async64_after_threads4", case_async64_after_threads4},
    {"async64_cb", case_async64_cb},
    {"async64_queue", case_async64_queue}, {"async64_loop", case_async64_loop},
    {"echo1mib", case_echo1mib},           {"loop_seq", case_loop_seq},
    {"call_seq_zmq", case_call_seq_zmq},   {"async64_zmq", case_async64_zmq},
    {"echo1mib_zmq", case_echo1mib_zmq},   {"stream_small", case_stream_small},
    {"stream1mib", case_stream1mib},       {"pool2", case_pool2},
};
#define NCASES (sizeof cases / sizeof cases[0])

static void usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: bench_capi [--worker PATH] [--bench-worker PATH] [--cases LIST] [--scale F]\ncases:");
    for (size_t i = 0; i < NCASES; i++) fprintf(code ? stderr : stdout, " %s", cases[i].name);
    fputc('\n', code ? stderr : stdout);
    exit(code);
}

/* Quiet log callback: worker output is not part of the measurement. */
static void on_log(void *user, const char *json) {
    (void)user;
    if (strstr(json, "\"level\":\"error\"")) fprintf(stderr, "bench_capi: log: %s\n", json);
}

int main(int argc, char **argv) {
    const char *selected = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage(0);
        if (i + 1 >= argc) usage(2);
        if (!strcmp(a, "--worker")) worker_path = argv[++i];
        else if (!strcmp(a, "--bench-worker")) bench_worker_path = argv[++i];
        else if (!strcmp(a, "--cases")) selected = argv[++i];
        else if (!strcmp(a, "--scale")) scale = atof(argv[++i]);
        else usage(2);
    }
    if (scale <= 0) usage(2);
    if (selected) { /* reject unknown names before running anything */
        char *copy = strdup(selected);
        for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
            size_t k = 0;
            while (k < NCASES && strcmp(cases[k].name, tok)) k++;
            if (k == NCASES) {
                fprintf(stderr, "bench_capi: unknown case %s\n", tok);
                usage(2);
            }
        }
        free(copy);
    }
    mf_set_log_callback(on_log, NULL);
    for (size_t i = 0; i < NCASES; i++) {
        if (selected) {
            size_t len = strlen(cases[i].name);
            const char *at = selected;
            int found = 0;
            while ((at = strstr(at, cases[i].name)) != NULL) {
                if ((at == selected || at[-1] == ',') && (at[len] == ',' || at[len] == '\0')) found = 1;
                at += len;
            }
            if (!found) continue;
        }
        fprintf(stderr, "bench_capi: %s ...\n", cases[i].name);
        cases[i].run();
    }
    printf("{\"suite\": \"capi\", \"metrics\": {%s}, \"info\": {\"version\": \"%s\"%s%s}}\n", metrics, mf_version(),
           info[0] ? ", " : "", info);
    return 0;
}
