/* Echoes the value cases through a worker and prints what came back:
 * `<case> <canonical form>` or `<case> error:<status>: <text>`, the canonical
 * form described in tests/interop/test_matrix.py (CANONICAL). The arguments
 * are MessagePack written by hand, so C sends exactly the bytes it means.
 * With --stream it streams the worker's `count` instead (STREAM_LINES in
 * test_matrix.py).
 * Usage: value_parent [--stream] <worker-program> [args...] */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <multifrost.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    uint8_t b[512];
    size_t n;
} buf;

static void put(buf *o, const void *p, size_t len) {
    memcpy(o->b + o->n, p, len);
    o->n += len;
}
static void put_be(buf *o, uint8_t tag, uint64_t v, int bytes) {
    o->b[o->n++] = tag;
    for (int i = bytes - 1; i >= 0; i--) o->b[o->n++] = (uint8_t)(v >> (8 * i));
}
static void put_f64(buf *o, double d) {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put_be(o, 0xcb, bits, 8);
}

/* Reads one value at *p and prints its canonical form; 0 if malformed. */
static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}
static void hex(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}
static void print_float(double d) {
    if (isnan(d)) printf("float:nan");
    else if (isinf(d)) printf(d > 0 ? "float:inf" : "float:-inf");
    else if (d == 0 && signbit(d)) printf("float:-0");
    else printf("float:%.17g", d);
}
static int canon(const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp;
    if (p >= end) return 0;
    uint8_t t = *p++;
    size_t len = 0, items = 0;
    int kind = 0; /* 's' str, 'b' bin, 'a' array, 'm' map */
#define NEED(k) \
    if ((size_t)(end - p) < (size_t)(k)) return 0
    if (t <= 0x7f) printf("int:%u", t);
    else if (t >= 0xe0) printf("int:%d", (int8_t)t);
    else if (t == 0xc0) printf("nil");
    else if (t == 0xc2 || t == 0xc3) printf(t == 0xc3 ? "true" : "false");
    else if (t >= 0xcc && t <= 0xcf) {
        int n = 1 << (t - 0xcc);
        NEED(n);
        printf("int:%llu", (unsigned long long)be(p, n));
        p += n;
    } else if (t >= 0xd0 && t <= 0xd3) {
        int n = 1 << (t - 0xd0);
        NEED(n);
        uint64_t u = be(p, n);
        int64_t v = n == 8 ? (int64_t)u : (int64_t)(u << (64 - 8 * n)) >> (64 - 8 * n);
        printf("int:%lld", (long long)v);
        p += n;
    } else if (t == 0xca) {
        NEED(4);
        uint32_t u = (uint32_t)be(p, 4);
        float f;
        memcpy(&f, &u, 4);
        print_float(f);
        p += 4;
    } else if (t == 0xcb) {
        NEED(8);
        uint64_t u = be(p, 8);
        double d;
        memcpy(&d, &u, 8);
        print_float(d);
        p += 8;
    } else if ((t & 0xe0) == 0xa0) kind = 's', len = t & 0x1f;
    else if (t >= 0xd9 && t <= 0xdb) {
        int n = 1 << (t - 0xd9);
        NEED(n);
        kind = 's', len = be(p, n), p += n;
    } else if (t >= 0xc4 && t <= 0xc6) {
        int n = 1 << (t - 0xc4);
        NEED(n);
        kind = 'b', len = be(p, n), p += n;
    } else if ((t & 0xf0) == 0x90) kind = 'a', items = t & 0x0f;
    else if ((t & 0xf0) == 0x80) kind = 'm', items = t & 0x0f;
    else if (t == 0xdc || t == 0xdd || t == 0xde || t == 0xdf) {
        int n = (t == 0xdc || t == 0xde) ? 2 : 4;
        NEED(n);
        kind = t <= 0xdd ? 'a' : 'm', items = be(p, n), p += n;
    } else {
        printf("?0x%02x", t);
        return 0;
    }
    if (kind == 's' || kind == 'b') {
        NEED(len);
        printf(kind == 's' ? "str:" : "bin:");
        hex(p, len);
        p += len;
    } else if (kind == 'a' || kind == 'm') {
        printf(kind == 'a' ? "[" : "{");
        for (size_t i = 0; i < items; i++) {
            if (i) printf(",");
            *pp = p;
            if (!canon(pp, end)) return 0;
            if (kind == 'm') {
                printf(":");
                if (!canon(pp, end)) return 0;
            }
            p = *pp;
        }
        printf(kind == 'a' ? "]" : "}");
    }
    *pp = p;
    return 1;
}

/* Reads the items of one stream, printing `<label> <canonical form>` for
 * each, up to `most` of them (then closes it), or to the end (`end`) or the
 * error (`error:<status>: <text>`). */
static void read_stream(mf_parent *p, const uint8_t *args, size_t len, const char *label, int most) {
    mf_stream *s = NULL;
    mf_status st = mf_stream_open(p, "count", args, len, 10000, &s);
    for (int i = 0; st == MF_OK && i < most; i++) {
        mf_buffer item = {0};
        bool end = false;
        char *error = NULL;
        st = mf_stream_next_ex(s, -1, &item, &end, &error);
        if (st != MF_OK) {
            printf("error:%s: %s\n", mf_status_name(st), error ? error : "");
            mf_string_free(error);
            break;
        }
        if (end) {
            printf("end\n");
            break;
        }
        const uint8_t *r = item.data, *stop = item.data + item.len;
        printf("%s ", label);
        if (!canon(&r, stop) || r != stop) printf(" (malformed item)");
        printf("\n");
        mf_buffer_free(item);
    }
    if (st != MF_OK && !s) printf("error:%s: %s\n", mf_status_name(st), mf_last_error());
    mf_stream_close(s);
}

/* counted()'s second element (streams closed on count), or -1. */
static long long closed_count(mf_parent *p) {
    static const uint8_t no_args[] = {0x90};
    mf_buffer out = {0};
    if (mf_call(p, "counted", no_args, sizeof no_args, 10000, &out) != MF_OK) return -1;
    long long closed = -1;
    const uint8_t *r = out.data, *end = out.data + out.len;
    if (out.len >= 1 && *r == 0x92) {
        r++;
        for (int i = 0; i < 2 && r < end; i++) {
            uint8_t t = *r++;
            long long v = -1;
            if (t <= 0x7f) v = t;
            else if (t >= 0xcc && t <= 0xcf && end - r >= 1 << (t - 0xcc)) v = (long long)be(r, 1 << (t - 0xcc)), r += 1 << (t - 0xcc);
            else if (t >= 0xd0 && t <= 0xd3 && end - r >= 1 << (t - 0xd0)) v = (long long)be(r, 1 << (t - 0xd0)), r += 1 << (t - 0xd0);
            else break;
            if (i == 1) closed = v;
        }
    }
    mf_buffer_free(out);
    return closed;
}

/* count(5) to its end; count(10^9) closed after 3 items, then counted()
 * polled until the worker saw the close (30 s: a hang guard). */
static int stream(mf_parent *p) {
    static const uint8_t five[] = {0x91, 0x05};
    static const uint8_t billion[] = {0x91, 0xce, 0x3b, 0x9a, 0xca, 0x00};
    read_stream(p, five, sizeof five, "item", 6);
    read_stream(p, billion, sizeof billion, "half", 3);
    long long closed = closed_count(p);
    for (int i = 0; closed < 1 && i < 1500; i++) {
        nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
        closed = closed_count(p);
    }
    printf("closed int:%lld\n", closed);
    mf_parent_close(p);
    return 0;
}

int main(int argc, char **argv) {
    bool streaming = argc > 1 && strcmp(argv[1], "--stream") == 0;
    if (streaming) argc--, argv++;
    if (argc < 2) {
        fprintf(stderr, "usage: value_parent [--stream] <worker-program> [args...]\n");
        return 2;
    }
    static const char *names[] = {"emoji",     "empty_str", "empty_bin",  "empty_array", "empty_map",
                                  "int64_min", "int64_max", "uint64_max", "nan",         "inf",
                                  "neg_inf",   "neg_zero",  "deep_at_limit", "deep_over_limit"};
    enum { N = sizeof names / sizeof *names };
    buf cases[N];
    for (int i = 0; i < N; i++) {
        cases[i].n = 0;
        cases[i].b[cases[i].n++] = 0x91; /* the arguments: one value */
    }
    static const char emoji[] = "\xf0\x9f\x98\x80\xf0\x9d\x84\x9e"; /* U+1F600 U+1D11E */
    cases[0].b[cases[0].n++] = 0xa0 | 8;
    put(&cases[0], emoji, 8);
    cases[1].b[cases[1].n++] = 0xa0;
    put_be(&cases[2], 0xc4, 0, 1);
    cases[3].b[cases[3].n++] = 0x90;
    cases[4].b[cases[4].n++] = 0x80;
    put_be(&cases[5], 0xd3, (uint64_t)INT64_MIN, 8);
    put_be(&cases[6], 0xd3, (uint64_t)INT64_MAX, 8);
    put_be(&cases[7], 0xcf, UINT64_MAX, 8);
    put_f64(&cases[8], NAN);
    put_f64(&cases[9], INFINITY);
    put_f64(&cases[10], -INFINITY);
    put_f64(&cases[11], -0.0);
    /* The decoder's limit (PROTOCOL §7) counts the arguments array: a value
     * nested 99 deep travels as 100 levels, the most allowed; one more is refused. */
    for (int d = 0; d < 99; d++) cases[12].b[cases[12].n++] = d < 98 ? 0x91 : 0x90;
    for (int d = 0; d < 100; d++) cases[13].b[cases[13].n++] = d < 99 ? 0x91 : 0x90;

    mf_parent *p = NULL;
    if (mf_spawn(argv[1], argc > 2 ? (const char *const *)&argv[2] : NULL, NULL, &p) != MF_OK) {
        fprintf(stderr, "spawn %s: %s\n", argv[1], mf_last_error());
        return 1;
    }
    if (streaming) return stream(p);
    for (int i = 0; i < N; i++) {
        mf_buffer out = {0};
        mf_status s = mf_call(p, "echo", cases[i].b, cases[i].n, 10000, &out);
        printf("%s ", names[i]);
        if (s != MF_OK) {
            printf("error:%s: %s\n", mf_status_name(s), mf_last_error());
            continue;
        }
        const uint8_t *r = out.data, *end = out.data + out.len;
        if (!canon(&r, end) || r != end) printf(" (malformed reply)");
        printf("\n");
        mf_buffer_free(out);
    }
    mf_parent_close(p);
    return 0;
}
