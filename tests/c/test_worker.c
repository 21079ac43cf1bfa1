/* The worker the C tests spawn. Spawn mode only: mf_serve reads
 * COMLINK_ZMQ_PORT. Raw msgpack handlers (mf_worker_register) and JSON
 * handlers (mf_worker_register_json) are both in use:
 *
 *   echo(x)      raw   x unchanged
 *   add(a, b)    json  a + b (integers)
 *   sleep_ms(ms) json  sleeps ms, returns ms; stops early with an error
 *                      when the call is cancelled (mf_reply_on_cancel)
 *   spin_ms(ms)  json  spins ms ignoring any cancel, returns ms
 *   spins()      json  how many spin_ms calls started
 *   count(n)     json  yields 0..n-1 (mf_reply_yield_json), answers null;
 *                      stops when the stream is closed
 *   counted()    json  [items yielded, streams that were closed on it]
 *   hold_ms(ms)  json  sleeps ms, returns ms, counting how many run at once
 *   most_holding() json the most hold_ms calls that ever ran at once
 *   fail(msg)    raw   error "RuntimeError: <msg>"
 *   pid()        json  getpid()
 *   spam(n)      json  prints "line 0".."line n-1" on stdout, returns n
 *   big(n)       raw   a bin of n bytes, byte i = i & 0xff
 *   deferred(x)  raw   answers x ~50 ms later from another thread
 *   park(x)      raw   returns without answering; unpark() answers x later
 *   parked()     json  how many parked calls are not answered yet
 *   unpark()     json  answers every parked call, returns how many
 *   _secret()    raw   private: callers must be refused
 *   crash()      raw   abort()
 *
 * Arguments: `--concurrency N` sets mf_worker_set_concurrency (default 4).
 */
#include <multifrost.h>

#include "msgpack_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- msgpack reading: just what the handlers need ---- */

/* Reads one str at p. Returns bytes used (0 if not a str); s and slen point into p. */
static size_t read_str(const uint8_t *p, size_t len, const char **s, size_t *slen) {
    size_t hdr, n;
    if (len < 1) return 0;
    if ((p[0] & 0xe0) == 0xa0) { hdr = 1; n = p[0] & 0x1f; }
    else if (p[0] == 0xd9 && len >= 2) { hdr = 2; n = p[1]; }
    else if (p[0] == 0xda && len >= 3) { hdr = 3; n = ((size_t)p[1] << 8) | p[2]; }
    else if (p[0] == 0xdb && len >= 5) {
        hdr = 5;
        n = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | p[4];
    } else return 0;
    if (len < hdr + n) return 0;
    *s = (const char *)p + hdr;
    *slen = n;
    return hdr + n;
}

/* One integer argument from a raw argument array. */
static int one_int_arg(const uint8_t *args, size_t len, long long *v) {
    return len >= 2 && args[0] == 0x91 && msgpack_read_int(args + 1, len - 1, v) == len - 1;
}

/* One integer argument from JSON text "[n]". */
static int one_int_json(const char *json, long long *v) {
    char tail;
    return sscanf(json, " [ %lld ] %c", v, &tail) == 1;
}

static void sleep_for_ms(long long ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- handlers ---- */

static void echo(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: echo takes exactly one argument");
        return;
    }
    mf_reply_ok(reply, args + 1, len - 1);
}

static void add(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long a, b, r;
    char tail, out[32];
    if (sscanf(args_json, " [ %lld , %lld ] %c", &a, &b, &tail) != 2) {
        mf_reply_error(reply, "TypeError: add takes two integers");
        return;
    }
    if (__builtin_add_overflow(a, b, &r)) {
        mf_reply_error(reply, "OverflowError: result does not fit in 64 bits");
        return;
    }
    snprintf(out, sizeof out, "%lld", r);
    mf_reply_json(reply, out);
}

/* What a cooperative handler waits on: woken by its call's cancel. */
struct cancel_wait {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int cancelled;
};

static void wake_on_cancel(void *user) {
    struct cancel_wait *w = user;
    pthread_mutex_lock(&w->lock);
    w->cancelled = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->lock);
}

/* Waits `ms` or until the call is cancelled; whether it was. `w` must live
 * until the reply is answered (the cancel callback may run until then). */
static int wait_unless_cancelled(mf_reply *reply, struct cancel_wait *w, long long ms) {
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += (time_t)(ms / 1000);
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    mf_reply_on_cancel(reply, wake_on_cancel, w);
    pthread_mutex_lock(&w->lock);
    while (!w->cancelled && pthread_cond_timedwait(&w->cv, &w->lock, &end) != ETIMEDOUT) {
    }
    int cancelled = w->cancelled;
    pthread_mutex_unlock(&w->lock);
    return cancelled;
}

static void sleep_ms(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long ms;
    if (!one_int_json(args_json, &ms) || ms < 0) {
        mf_reply_error(reply, "TypeError: sleep_ms takes one non-negative integer");
        return;
    }
    struct cancel_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    if (wait_unless_cancelled(reply, &w, ms)) {
        mf_reply_error(reply, "CancelledError: sleep_ms stopped on its cancel");
        return;
    }
    char out[32];
    snprintf(out, sizeof out, "%lld", ms);
    mf_reply_json(reply, out);
}

static atomic_int spins_started;

static void spin_ms(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long ms;
    if (!one_int_json(args_json, &ms) || ms < 0) {
        mf_reply_error(reply, "TypeError: spin_ms takes one non-negative integer");
        return;
    }
    atomic_fetch_add(&spins_started, 1);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t end = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec + (int64_t)ms * 1000000LL;
    do {
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((int64_t)now.tv_sec * 1000000000LL + now.tv_nsec < end);
    char out[32];
    snprintf(out, sizeof out, "%lld", ms);
    mf_reply_json(reply, out);
}

static void spins(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    char out[32];
    snprintf(out, sizeof out, "%d", atomic_load(&spins_started));
    mf_reply_json(reply, out);
}

static atomic_int items_yielded, streams_closed;

static void count(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long n;
    if (!one_int_json(args_json, &n) || n < 0) {
        mf_reply_error(reply, "TypeError: count takes one non-negative integer");
        return;
    }
    for (long long i = 0; i < n; i++) {
        char item[32];
        snprintf(item, sizeof item, "%lld", i);
        mf_status s = mf_reply_yield_json(reply, item);
        if (s == MF_ERR_CANCELLED) {
            atomic_fetch_add(&streams_closed, 1);
            mf_reply_error(reply, "CancelledError: the stream was closed");
            return;
        }
        atomic_fetch_add(&items_yielded, 1);
    }
    mf_reply_json(reply, "null");
}

static void counted(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    char out[64];
    snprintf(out, sizeof out, "[%d, %d]", atomic_load(&items_yielded), atomic_load(&streams_closed));
    mf_reply_json(reply, out);
}

static atomic_int holding, most_holding_seen;

static void hold_ms(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long ms;
    if (!one_int_json(args_json, &ms) || ms < 0) {
        mf_reply_error(reply, "TypeError: hold_ms takes one non-negative integer");
        return;
    }
    int now = atomic_fetch_add(&holding, 1) + 1;
    int most = atomic_load(&most_holding_seen);
    while (now > most && !atomic_compare_exchange_weak(&most_holding_seen, &most, now)) {
    }
    sleep_for_ms(ms);
    atomic_fetch_sub(&holding, 1);
    char out[32];
    snprintf(out, sizeof out, "%lld", ms);
    mf_reply_json(reply, out);
}

static void most_holding(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    char out[32];
    snprintf(out, sizeof out, "%d", atomic_load(&most_holding_seen));
    mf_reply_json(reply, out);
}

static void fail(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    const char *s;
    size_t n;
    if (len < 2 || args[0] != 0x91 || read_str(args + 1, len - 1, &s, &n) != len - 1) {
        mf_reply_error(reply, "TypeError: fail takes one string");
        return;
    }
    char *msg = malloc(n + sizeof "RuntimeError: ");
    if (!msg) abort();
    snprintf(msg, n + sizeof "RuntimeError: ", "RuntimeError: %.*s", (int)n, s);
    mf_reply_error(reply, msg);
    free(msg);
}

static void pid(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    char out[32];
    snprintf(out, sizeof out, "%ld", (long)getpid());
    mf_reply_json(reply, out);
}

static void spam(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long n;
    if (!one_int_json(args_json, &n) || n < 0) {
        mf_reply_error(reply, "TypeError: spam takes one non-negative integer");
        return;
    }
    for (long long i = 0; i < n; i++) printf("line %lld\n", i);
    fflush(stdout);
    char out[32];
    snprintf(out, sizeof out, "%lld", n);
    mf_reply_json(reply, out);
}

static void big(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    long long n;
    if (!one_int_arg(args, len, &n) || n < 0 || n > 0x7fffffffLL) {
        mf_reply_error(reply, "TypeError: big takes one non-negative integer");
        return;
    }
    uint8_t *out = malloc((size_t)n + 5);
    if (!out) abort();
    out[0] = 0xc6; /* bin 32 */
    out[1] = (uint8_t)(n >> 24);
    out[2] = (uint8_t)(n >> 16);
    out[3] = (uint8_t)(n >> 8);
    out[4] = (uint8_t)n;
    for (long long i = 0; i < n; i++) out[5 + i] = (uint8_t)(i & 0xff);
    mf_status s = mf_reply_ok(reply, out, (size_t)n + 5);
    if (s != MF_OK) mf_reply_error(reply, mf_last_error());
    free(out);
}

struct deferred_job {
    mf_reply *reply;
    size_t len;
    uint8_t value[];
};

static void *deferred_thread(void *arg) {
    struct deferred_job *job = arg;
    sleep_for_ms(50);
    if (mf_reply_ok(job->reply, job->value, job->len) != MF_OK)
        mf_reply_error(job->reply, mf_last_error());
    free(job);
    return NULL;
}

/* Returns at once; another thread answers later. */
static void deferred(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: deferred takes exactly one argument");
        return;
    }
    struct deferred_job *job = malloc(sizeof *job + len - 1);
    if (!job) abort();
    job->reply = reply;
    job->len = len - 1;
    memcpy(job->value, args + 1, len - 1);
    pthread_t t;
    if (pthread_create(&t, NULL, deferred_thread, job) != 0) {
        free(job);
        mf_reply_error(reply, "OSError: cannot start a thread");
        return;
    }
    pthread_detach(t);
}

/* Parked replies: the handler returns at once and leaves its call
 * unanswered (no handler thread is held) until unpark(). A call in flight
 * for as long as a test needs, with no time in it. */
struct parked_call {
    mf_reply *reply;
    struct parked_call *next;
    size_t len;
    uint8_t value[];
};

static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct parked_call *parked_calls;
static int parked_count;

static void park(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: park takes exactly one argument");
        return;
    }
    struct parked_call *c = malloc(sizeof *c + len - 1);
    if (!c) abort();
    c->reply = reply;
    c->len = len - 1;
    memcpy(c->value, args + 1, len - 1);
    pthread_mutex_lock(&parked_lock);
    c->next = parked_calls;
    parked_calls = c;
    parked_count++;
    pthread_mutex_unlock(&parked_lock);
}

static void parked(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    char out[32];
    pthread_mutex_lock(&parked_lock);
    snprintf(out, sizeof out, "%d", parked_count);
    pthread_mutex_unlock(&parked_lock);
    mf_reply_json(reply, out);
}

/* The parked calls are answered before unpark() is: a caller that sees its
 * answer knows theirs were sent. */
static void unpark(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    (void)args_json;
    pthread_mutex_lock(&parked_lock);
    struct parked_call *c = parked_calls;
    int n = parked_count;
    parked_calls = NULL;
    parked_count = 0;
    pthread_mutex_unlock(&parked_lock);
    while (c) {
        struct parked_call *next = c->next;
        if (mf_reply_ok(c->reply, c->value, c->len) != MF_OK) mf_reply_error(c->reply, mf_last_error());
        free(c);
        c = next;
    }
    char out[32];
    snprintf(out, sizeof out, "%d", n);
    mf_reply_json(reply, out);
}

static void secret(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    (void)args;
    (void)len;
    mf_reply_json(reply, "\"the secret\"");
}

static void crash(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    (void)args;
    (void)len;
    (void)reply;
    abort();
}

static int must(mf_status s, const char *what) {
    if (s != MF_OK) {
        fprintf(stderr, "test_worker: %s: %s: %s\n", what, mf_status_name(s), mf_last_error());
        exit(2);
    }
    return 0;
}

int main(int argc, char **argv) {
    unsigned concurrency = 4;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--concurrency") == 0) concurrency = (unsigned)strtoul(argv[i + 1], NULL, 10);
    }
    mf_worker *w = NULL;
    must(mf_worker_new(NULL, &w), "mf_worker_new");
    must(mf_worker_register(w, "echo", echo, NULL), "register echo");
    must(mf_worker_register_json(w, "add", add, NULL), "register add");
    must(mf_worker_register_json(w, "sleep_ms", sleep_ms, NULL), "register sleep_ms");
    must(mf_worker_register_json(w, "spin_ms", spin_ms, NULL), "register spin_ms");
    must(mf_worker_register_json(w, "spins", spins, NULL), "register spins");
    must(mf_worker_register_json(w, "count", count, NULL), "register count");
    must(mf_worker_register_json(w, "counted", counted, NULL), "register counted");
    must(mf_worker_register_json(w, "hold_ms", hold_ms, NULL), "register hold_ms");
    must(mf_worker_register_json(w, "most_holding", most_holding, NULL), "register most_holding");
    must(mf_worker_register(w, "fail", fail, NULL), "register fail");
    must(mf_worker_register_json(w, "pid", pid, NULL), "register pid");
    must(mf_worker_register_json(w, "spam", spam, NULL), "register spam");
    must(mf_worker_register(w, "big", big, NULL), "register big");
    must(mf_worker_register(w, "deferred", deferred, NULL), "register deferred");
    must(mf_worker_register(w, "park", park, NULL), "register park");
    must(mf_worker_register_json(w, "parked", parked, NULL), "register parked");
    must(mf_worker_register_json(w, "unpark", unpark, NULL), "register unpark");
    must(mf_worker_register(w, "_secret", secret, NULL), "register _secret");
    must(mf_worker_register(w, "crash", crash, NULL), "register crash");
    must(mf_worker_set_concurrency(w, concurrency), "mf_worker_set_concurrency");
    mf_status s = mf_serve(w);
    if (s != MF_OK) {
        fprintf(stderr, "test_worker: %s\n", mf_last_error());
        mf_worker_free(w);
        return 2;
    }
    mf_worker_free(w);
    return 0;
}
