/* A math worker in C: add, multiply, factorial and echo.
 * Started by a parent (spawn mode): `mf_serve` reads COMLINK_ZMQ_PORT.
 * With one argument, a service id or tcp:// endpoint, it serves in connect mode. */
#include <multifrost.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* True if the number text [start, end) has a fraction or an exponent. */
static int is_float_text(const char *start, const char *end) {
    for (const char *c = start; c < end; c++)
        if (*c == '.' || *c == 'e' || *c == 'E') return 1;
    return 0;
}

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Reads exactly two JSON numbers from "[a, b]". Returns 1 if both are
 * integers, 0 if either has a fraction or exponent, -1 if the text is not an
 * array of exactly two numbers (a string, one number, three numbers...). */
static int two_numbers(const char *json, long long *ia, long long *ib, double *da, double *db) {
    const char *p = skip_space(json);
    int integers = 1;
    if (*p != '[') return -1;
    p++;
    for (int i = 0; i < 2; i++) {
        const char *start = skip_space(p);
        char *end;
        if (*start != '-' && (*start < '0' || *start > '9')) return -1; /* "x", true, null, [..] */
        double d = strtod(start, &end);
        if (end == start) return -1;
        errno = 0;
        long long v = strtoll(start, NULL, 10);
        if (errno || is_float_text(start, end)) integers = 0;
        if (i == 0) {
            *ia = v;
            *da = d;
        } else {
            *ib = v;
            *db = d;
        }
        p = skip_space(end);
        if (*p != (i ? ']' : ',')) return -1;
        p++;
    }
    return *skip_space(p) == '\0' ? integers : -1;
}

static void arith(const char *args_json, mf_reply *reply, int multiply) {
    long long ia = 0, ib = 0;
    double da = 0, db = 0;
    char out[64];
    int kind = two_numbers(args_json, &ia, &ib, &da, &db);
    if (kind < 0) {
        /* The text the binding tests expect, whatever the function. */
        mf_reply_error(reply, "TypeError: expected two numbers");
        return;
    }
    if (kind == 1) {
        long long r;
        int overflow = multiply ? __builtin_mul_overflow(ia, ib, &r) : __builtin_add_overflow(ia, ib, &r);
        if (overflow) {
            mf_reply_error(reply, "OverflowError: result does not fit in 64 bits");
            return;
        }
        snprintf(out, sizeof out, "%lld", r);
    } else {
        snprintf(out, sizeof out, "%.17g", multiply ? da * db : da + db);
    }
    mf_reply_json(reply, out);
}

static void add(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    arith(args_json, reply, 0);
}

static void multiply(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    arith(args_json, reply, 1);
}

static void factorial(void *user, const char *args_json, mf_reply *reply) {
    (void)user;
    long long n;
    char out[32];
    int used = 0;
    /* %n after the closing bracket: only "[<integer>]" counts, not "[3.5]" or "[1, 2]". */
    if (sscanf(args_json, " [ %lld ]%n", &n, &used) != 1 || used == 0 || *skip_space(args_json + used) != '\0') {
        mf_reply_error(reply, "TypeError: factorial takes one integer");
        return;
    }
    if (n < 0) {
        mf_reply_error(reply, "ValueError: factorial of a negative number");
        return;
    }
    if (n > 20) {
        mf_reply_error(reply, "OverflowError: factorial above 20 does not fit in 64 bits");
        return;
    }
    long long r = 1;
    for (long long i = 2; i <= n; i++) r *= i;
    snprintf(out, sizeof out, "%lld", r);
    mf_reply_json(reply, out);
}

/* echo(x) returns x unchanged, whatever its type: the raw msgpack after the
 * one-element array header. */
static void echo(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    (void)user;
    if (len < 2 || args[0] != 0x91) {
        mf_reply_error(reply, "TypeError: echo takes exactly one argument");
        return;
    }
    mf_reply_ok(reply, args + 1, len - 1);
}

int main(int argc, char **argv) {
    mf_worker *w = NULL;
    if (mf_worker_new(argc > 1 && strcmp(argv[1], "--worker") ? argv[1] : NULL, &w) != MF_OK) {
        fprintf(stderr, "math_worker: %s\n", mf_last_error());
        return 2;
    }
    mf_worker_register_json(w, "add", add, NULL);
    mf_worker_register_json(w, "multiply", multiply, NULL);
    mf_worker_register_json(w, "factorial", factorial, NULL);
    mf_worker_register(w, "echo", echo, NULL);
    mf_status s = mf_serve(w);
    if (s != MF_OK) fprintf(stderr, "math_worker: %s\n", mf_last_error());
    mf_worker_free(w);
    return s == MF_OK ? 0 : 2;
}
