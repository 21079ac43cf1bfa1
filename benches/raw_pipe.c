/* The floor of the private link: a plain Unix socket pair between two
 * processes, without libzmq and without our library, the physical limit of
 * a call between our parent and our own workers (the link is a socket pair
 * made at spawn, messages framed by length). `make bench` runs it as the
 * suite floor_unix, beside the libzmq floor (benches/floor.rs), and compares
 * the link's calls with it.
 *
 * The parent and a forked child share a socket pair (AF_UNIX, stream).
 * Messages are a 4-byte length and a 129-byte payload, as large as the
 * floor's; the child writes back every whole message it has read.
 *
 *   raw_pipe [--cases seq,pipe,pipe2t] [--msgs N] [--scale F]
 *
 *   seq     one message at a time: write, wait for the whole reply; µs per
 *           round trip (median and mean), after 300 unmeasured ones
 *   pipe    one parent thread keeps 64 messages in flight, writing and reading
 *   pipe2t  a producer thread keeps 64 in flight: it hands each message to the
 *           thread that owns the socket through a locked queue (an eventfd
 *           write only when that thread sleeps), and that thread frees a slot
 *           per reply (waking the producer only when it waits)
 *
 * Every reply is checked (length and sequence number, in order); a wrong one
 * exits 1. Prints one JSON object on stdout, like the other bench programs. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { PAYLOAD = 129, FRAME = 4 + PAYLOAD, WINDOW = 64, IN_BUF = 1 << 16 };

static void fail(const char *what) {
    fprintf(stderr, "raw_pipe: %s: %s\n", what, errno ? strerror(errno) : "wrong reply");
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The echo child: every whole message read goes straight back. */
static void echo(int fd) {
    static uint8_t buf[IN_BUF];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n == 0) _exit(0);
        if (n < 0) {
            if (errno == EINTR) continue;
            _exit(1);
        }
        have += (size_t)n;
        size_t whole = have - have % FRAME;
        write_all(fd, buf, whole);
        memmove(buf, buf + whole, have - whole);
        have -= whole;
    }
}

static void make_frame(uint8_t *f, uint64_t seq) {
    uint32_t len = PAYLOAD;
    memcpy(f, &len, 4);
    memset(f + 4, 'x', PAYLOAD);
    memcpy(f + 4, &seq, 8);
}

/* Bytes read from the socket, and the sequence number the next reply must carry. */
struct reader {
    uint8_t buf[IN_BUF];
    size_t have;
    uint64_t next;
};

/* Checks the whole replies read so far, in order; returns how many there
 * were and keeps the rest at the front. */
static size_t take_replies(struct reader *r) {
    size_t whole = r->have / FRAME;
    for (size_t i = 0; i < whole; i++) {
        const uint8_t *f = r->buf + i * FRAME;
        uint32_t len;
        uint64_t seq;
        memcpy(&len, f, 4);
        memcpy(&seq, f + 4, 8);
        if (len != PAYLOAD || seq != r->next++ || f[4 + PAYLOAD - 1] != 'x') fail("reply");
    }
    memmove(r->buf, r->buf + whole * FRAME, r->have - whole * FRAME);
    r->have -= whole * FRAME;
    return whole;
}

static int sock;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* seq: `total` round trips one at a time after `warmup` unmeasured ones;
 * writes the median and the mean in µs. */
static void ping_pong(uint64_t warmup, uint64_t total, double *p50_us, double *mean_us) {
    static uint8_t out[FRAME];
    static struct reader r;
    memset(&r, 0, sizeof r);
    double *lat = malloc(total * sizeof *lat);
    if (!lat) fail("malloc");
    double start = 0;
    for (uint64_t i = 0; i < warmup + total; i++) {
        if (i == warmup) start = now_s();
        double t = now_s();
        make_frame(out, i);
        write_all(sock, out, FRAME);
        size_t got = 0;
        while (got == 0) {
            ssize_t n = read(sock, r.buf + r.have, sizeof r.buf - r.have);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) continue;
                fail("read");
            }
            r.have += (size_t)n;
            got = take_replies(&r);
        }
        if (got != 1) fail("reply");
        if (i >= warmup) lat[i - warmup] = (now_s() - t) * 1e6;
    }
    *mean_us = (now_s() - start) * 1e6 / (double)total;
    qsort(lat, total, sizeof *lat, cmp_double);
    *p50_us = total % 2 ? lat[total / 2] : (lat[total / 2 - 1] + lat[total / 2]) / 2.0;
    free(lat);
}

static double pipe_one_thread(uint64_t total) {
    static uint8_t out[FRAME * WINDOW];
    static struct reader r;
    memset(&r, 0, sizeof r);
    uint64_t sent = 0, done = 0;
    double t0 = now_s();
    while (done < total) {
        size_t k = 0;
        for (; sent < total && sent - done < WINDOW; sent++, k++) make_frame(out + k * FRAME, sent);
        write_all(sock, out, k * FRAME);
        ssize_t n = read(sock, r.buf + r.have, sizeof r.buf - r.have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            fail("read");
        }
        r.have += (size_t)n;
        done += take_replies(&r);
    }
    return (double)total / (now_s() - t0);
}

/* pipe2t: shared between the producer and the socket thread. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t slot_free;
    uint8_t queue[FRAME * WINDOW];
    size_t queued; /* bytes */
    uint64_t in_flight, done, total;
    int socket_sleeps, producer_waits;
    int wake_fd;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0, 0, 0, 0, 0, -1};

static void *socket_thread(void *unused) {
    (void)unused;
    static uint8_t out[FRAME * WINDOW];
    static struct reader r;
    memset(&r, 0, sizeof r);
    for (;;) {
        pthread_mutex_lock(&q.mu);
        size_t k = q.queued;
        memcpy(out, q.queue, k);
        q.queued = 0;
        int finished = q.done == q.total;
        pthread_mutex_unlock(&q.mu);
        if (finished) return NULL;
        write_all(sock, out, k);
        ssize_t n = recv(sock, r.buf + r.have, sizeof r.buf - r.have, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            pthread_mutex_lock(&q.mu);
            int idle = q.queued == 0;
            q.socket_sleeps = idle;
            pthread_mutex_unlock(&q.mu);
            if (!idle) continue;
            struct pollfd p[2] = {{sock, POLLIN, 0}, {q.wake_fd, POLLIN, 0}};
            if (poll(p, 2, -1) < 0 && errno != EINTR) fail("poll");
            uint64_t v;
            if (p[1].revents & POLLIN && read(q.wake_fd, &v, sizeof v) < 0) fail("read eventfd");
            pthread_mutex_lock(&q.mu);
            q.socket_sleeps = 0;
            pthread_mutex_unlock(&q.mu);
            continue;
        }
        if (n <= 0) fail("recv");
        r.have += (size_t)n;
        size_t got = take_replies(&r);
        pthread_mutex_lock(&q.mu);
        q.in_flight -= got;
        q.done += got;
        int wake = q.producer_waits;
        q.producer_waits = 0;
        pthread_mutex_unlock(&q.mu);
        if (wake) pthread_cond_signal(&q.slot_free);
    }
}

static double pipe_two_threads(uint64_t total) {
    q.total = total;
    q.done = q.in_flight = 0;
    q.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q.wake_fd < 0) fail("eventfd");
    pthread_t t;
    double t0 = now_s();
    if (pthread_create(&t, NULL, socket_thread, NULL) != 0) fail("pthread_create");
    for (uint64_t i = 0; i < total; i++) {
        pthread_mutex_lock(&q.mu);
        while (q.in_flight >= WINDOW) {
            q.producer_waits = 1;
            pthread_cond_wait(&q.slot_free, &q.mu);
        }
        make_frame(q.queue + q.queued, i);
        q.queued += FRAME;
        q.in_flight++;
        int wake = q.socket_sleeps;
        q.socket_sleeps = 0;
        pthread_mutex_unlock(&q.mu);
        uint64_t one = 1;
        if (wake && write(q.wake_fd, &one, sizeof one) < 0) fail("write eventfd");
    }
    /* The socket thread ends once every reply is in; wake it if it sleeps. */
    uint64_t one = 1;
    if (write(q.wake_fd, &one, sizeof one) < 0) fail("write eventfd");
    pthread_join(t, NULL);
    double rate = (double)total / (now_s() - t0);
    close(q.wake_fd);
    return rate;
}

static void metric(const char **sep, const char *name, double value, const char *unit, const char *better,
                   const char *label) {
    printf("%s\"%s\": {\"value\": %.3f, \"unit\": \"%s\", \"better\": \"%s\", \"label\": \"%s\"}", *sep, name,
           value, unit, better, label);
    *sep = ", ";
}

static void usage(void) {
    fprintf(stderr, "usage: raw_pipe [--cases seq,pipe,pipe2t] [--msgs N] [--scale F]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *cases = "seq,pipe,pipe2t";
    uint64_t msgs = 150000, seq_iters = 5000, warmup = 300;
    double scale = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cases") && i + 1 < argc) {
            cases = argv[++i];
        } else if (!strcmp(argv[i], "--msgs") && i + 1 < argc) {
            msgs = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            scale = atof(argv[++i]);
            if (scale <= 0) usage();
        } else {
            usage();
        }
    }
    msgs = (uint64_t)((double)msgs * scale + 0.5);
    msgs = msgs < WINDOW ? WINDOW : msgs;
    seq_iters = (uint64_t)((double)seq_iters * scale + 0.5);
    seq_iters = seq_iters < 10 ? 10 : seq_iters;
    int seq = 0, one_thread = 0, two_threads = 0;
    char list[64];
    snprintf(list, sizeof list, "%s", cases);
    for (char *c = strtok(list, ","); c; c = strtok(NULL, ",")) {
        if (!strcmp(c, "seq")) {
            seq = 1;
        } else if (!strcmp(c, "pipe")) {
            one_thread = 1;
        } else if (!strcmp(c, "pipe2t")) {
            two_threads = 1;
        } else {
            fprintf(stderr, "raw_pipe: unknown case '%s'\n", c);
            usage();
        }
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
    pid_t child = fork();
    if (child < 0) fail("fork");
    if (child == 0) {
        close(sv[0]);
        echo(sv[1]);
    }
    close(sv[1]);
    sock = sv[0];
    printf("{\"suite\": \"floor_unix\", \"metrics\": {");
    const char *sep = "";
    if (seq) {
        double p50, mean;
        ping_pong(warmup, seq_iters, &p50, &mean);
        metric(&sep, "seq_p50_us", p50, "us", "lower", "socket pair round trip (median)");
        metric(&sep, "seq_mean_us", mean, "us", "lower", "socket pair round trip (mean)");
    }
    if (one_thread)
        metric(&sep, "pipe_msgs_per_s", pipe_one_thread(msgs), "msg/s", "higher",
               "socket pair pipelined, 64 in flight");
    if (two_threads)
        metric(&sep, "pipe_2t_msgs_per_s", pipe_two_threads(msgs), "msg/s", "higher",
               "socket pair pipelined from a producer thread, 64 in flight");
    printf("}, \"info\": {\"payload_bytes\": %d, \"window\": %d, \"msgs\": %llu, \"seq_iters\": %llu}}\n",
           PAYLOAD, WINDOW, (unsigned long long)msgs, (unsigned long long)seq_iters);
    close(sock);
    waitpid(child, NULL, 0);
    return 0;
}
