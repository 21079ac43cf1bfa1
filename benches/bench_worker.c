/* A worker for the benchmarks that need calls to stay in flight.
 *
 *   hold(x)    keeps the call unanswered (the reply is stored)
 *   held()     how many calls are held now
 *   release()  answers every held call with its own argument x, returns how many
 *   add(a, b)  a + b for small non-negative integers, msgpack in and out (no JSON)
 *   echo(x)    x unchanged
 *   items(n, size)  a stream of n items: the integers 0..n-1 (size 0), or bins
 *              of `size` bytes, each starting with its index (8 bytes, native
 *              order); answers n
 *
 * Calls are taken in order on one handler thread, so `held` and `release`
 * see every `hold` the same parent sent before them. */
#include <multifrost.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct held_call {
    mf_reply *reply;
    uint8_t value[16]; /* the msgpack argument to answer with */
    size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct held_call *held;
static size_t held_count, held_cap;

/* Writes a non-negative integer as msgpack; returns its length. */
static size_t mp_uint(uint8_t *p, unsigned long long v) {
    if (v < 128) {
        p[0] = (uint8_t)v;
        return 1;
    }
    p[0] = 0xcf;
    for (int i = 0; i < 8; i++) p[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

static void hold(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || len > 17 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: hold takes one small argument");
        return;
    }
    pthread_mutex_lock(&lock);
    if (held_count == held_cap) {
        size_t cap = held_cap ? held_cap * 2 : 1024;
        struct held_call *grown = realloc(held, cap * sizeof *held);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            mf_reply_error(reply, "MemoryError: cannot hold more calls");
            return;
        }
        held = grown;
        held_cap = cap;
    }
    struct held_call *h = &held[held_count++];
    h->reply = reply;
    h->len = len - 1;
    memcpy(h->value, args + 1, len - 1);
    pthread_mutex_unlock(&lock);
}

static void count(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    (void)args;
    (void)len;
    uint8_t out[9];
    pthread_mutex_lock(&lock);
    size_t n = held_count;
    pthread_mutex_unlock(&lock);
    mf_reply_ok(reply, out, mp_uint(out, n));
}

static void release(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    (void)args;
    (void)len;
    pthread_mutex_lock(&lock);
    size_t n = held_count;
    for (size_t i = 0; i < n; i++) {
        if (mf_reply_ok(held[i].reply, held[i].value, held[i].len) != MF_OK)
            mf_reply_error(held[i].reply, "ValueError: held argument is not one msgpack value");
    }
    held_count = 0;
    pthread_mutex_unlock(&lock);
    uint8_t out[9];
    mf_reply_ok(reply, out, mp_uint(out, n));
}

/* Reads one non-negative msgpack integer at *p (fixint or uint 8/16/32/64). */
static int mp_read_uint(const uint8_t **p, const uint8_t *end, unsigned long long *v) {
    if (*p >= end) return 0;
    uint8_t m = *(*p)++;
    int n = m <= 0x7f ? 0 : m == 0xcc ? 1 : m == 0xcd ? 2 : m == 0xce ? 4 : m == 0xcf ? 8 : -1;
    if (n < 0 || end - *p < n) return 0;
    *v = n == 0 ? m : 0;
    for (int i = 0; i < n; i++) *v = (*v << 8) | *(*p)++;
    return 1;
}

static void add(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    const uint8_t *p = args + 1, *end = args + len;
    unsigned long long a, b;
    if (len < 3 || args[0] != 0x92 || !mp_read_uint(&p, end, &a) || !mp_read_uint(&p, end, &b) || p != end) {
        mf_reply_error(reply, "TypeError: add takes two non-negative integers");
        return;
    }
    uint8_t out[9];
    mf_reply_ok(reply, out, mp_uint(out, a + b));
}

/* echo(x): x unchanged, the raw msgpack after the one-element array header. */
static void echo(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: echo takes exactly one argument");
        return;
    }
    mf_reply_ok(reply, args + 1, len - 1);
}

/* items(n, size): yields n items (mf_reply_yield), then answers n. A
 * closed stream ends it with MF_ERR_CANCELLED's error. */
static void items(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    const uint8_t *p = args + 1, *end = args + len;
    unsigned long long n, size;
    if (len < 3 || args[0] != 0x92 || !mp_read_uint(&p, end, &n) || !mp_read_uint(&p, end, &size) || p != end ||
        (size > 0 && size < 8) || size > 0xffffffffu) {
        mf_reply_error(reply, "TypeError: items takes a count and a size (0, or at least 8)");
        return;
    }
    uint8_t small[9], *bin = NULL;
    if (size > 0) {
        bin = malloc(5 + size);
        if (!bin) {
            mf_reply_error(reply, "MemoryError: no room for one item");
            return;
        }
        bin[0] = 0xc6; /* bin 32 */
        for (int i = 0; i < 4; i++) bin[1 + i] = (uint8_t)(size >> (24 - 8 * i));
        memset(bin + 5, 0xab, size);
    }
    for (unsigned long long i = 0; i < n; i++) {
        mf_status s;
        if (bin) {
            memcpy(bin + 5, &i, sizeof i);
            s = mf_reply_yield(reply, bin, 5 + size);
        } else {
            s = mf_reply_yield(reply, small, mp_uint(small, i));
        }
        if (s != MF_OK) {
            free(bin);
            mf_reply_error(reply, "CancelledError: the stream was closed");
            return;
        }
    }
    free(bin);
    uint8_t out[9];
    mf_reply_ok(reply, out, mp_uint(out, n));
}

/* spin(n): n rounds of xorshift64, a fixed amount of CPU work; answers
 * the last value (so the loop cannot be left out). Handlers run one at a
 * time (the default concurrency), as in a one-threaded runtime. */
static void spin(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    const uint8_t *p = args + 1, *end = args + len;
    unsigned long long n;
    if (len < 2 || args[0] != 0x91 || !mp_read_uint(&p, end, &n) || p != end) {
        mf_reply_error(reply, "TypeError: spin takes one non-negative integer");
        return;
    }
    uint64_t x = 88172645463325252ull;
    for (unsigned long long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    uint8_t out[9];
    mf_reply_ok(reply, out, mp_uint(out, x >> 8));
}

int main(int argc, char **argv) {
    mf_worker *w = NULL;
    if (mf_worker_new(argc > 1 && strcmp(argv[1], "--worker") ? argv[1] : NULL, &w) != MF_OK) {
        fprintf(stderr, "bench_worker: %s\n", mf_last_error());
        return 2;
    }
    mf_worker_register(w, "hold", hold, NULL);
    mf_worker_register(w, "held", count, NULL);
    mf_worker_register(w, "release", release, NULL);
    mf_worker_register(w, "add", add, NULL);
    mf_worker_register(w, "echo", echo, NULL);
    mf_worker_register(w, "items", items, NULL);
    mf_worker_register(w, "spin", spin, NULL);
    mf_status s = mf_serve(w);
    if (s != MF_OK) fprintf(stderr, "bench_worker: %s\n", mf_last_error());
    mf_worker_free(w);
    return s == MF_OK ? 0 : 2;
}
