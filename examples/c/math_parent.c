/* Spawns the math worker, calls each of its functions, prints the results
 * and the parent's stats. With --workers N, a pool of N copies of the worker,
 * and a line naming their pids.
 * Usage: math_parent [--no-private-link] [--workers N] [worker-program [args...]]
 *        math_parent --connect <service-id-or-tcp-endpoint> */
#include <multifrost.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int call(mf_parent *p, const char *function, const char *args_json) {
    char *result = NULL;
    mf_status s = mf_call_json(p, function, args_json, 5000, &result);
    if (s == MF_OK) {
        printf("%s%s = %s\n", function, args_json, result);
        mf_string_free(result);
        return 0;
    }
    printf("%s%s failed: %s: %s\n", function, args_json, mf_status_name(s), mf_last_error());
    return s == MF_ERR_REMOTE ? 0 : 1; /* a remote error is an expected answer here */
}

/* Prints "pool: N workers, pids P1 P2 ..." from the stats' workers array
 * (one object per worker, each with its "pid"). */
static void print_pool(const char *stats) {
    const char *at = stats ? strstr(stats, "\"workers\":[") : NULL;
    if (!at) return;
    long long pids[256];
    int n = 0;
    for (const char *pid = strstr(at, "\"pid\":"); pid && n < 256; pid = strstr(pid + 1, "\"pid\":"))
        pids[n++] = atoll(pid + strlen("\"pid\":"));
    printf("pool: %d workers, pids", n);
    for (int i = 0; i < n; i++) printf(" %lld", pids[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    const char *connect_to = NULL;
    int private_link = 1;
    int pool = 0; /* --workers given */
    unsigned long workers = 1;
    if (argc > 2 && strcmp(argv[1], "--connect") == 0) connect_to = argv[2];
    /* Leading flags are dropped from argv; argv[0] still locates the default worker. */
    while (!connect_to && argc > 1) {
        int used;
        if (strcmp(argv[1], "--no-private-link") == 0) {
            private_link = 0; /* every byte over ZeroMQ: the stats say transport "zmq" */
            used = 1;
        } else if (strcmp(argv[1], "--workers") == 0 && argc > 2) {
            char *end;
            workers = strtoul(argv[2], &end, 10);
            if (!*argv[2] || *end) {
                fprintf(stderr, "--workers takes a number, not %s\n", argv[2]);
                return 2;
            }
            pool = 1;
            used = 2;
        } else {
            break;
        }
        argv[used] = argv[0];
        argv += used;
        argc -= used;
    }
    char self_dir[4096] = ".";
    const char *program = argc > 1 ? argv[1] : NULL;
    char default_worker[4200];
    if (!program) {
        /* The worker built beside this program. */
        const char *slash = strrchr(argv[0], '/');
        if (slash) snprintf(self_dir, sizeof self_dir, "%.*s", (int)(slash - argv[0]), argv[0]);
        snprintf(default_worker, sizeof default_worker, "%s/math_worker", self_dir);
        program = default_worker;
    }
    const char *const *args = argc > 2 ? (const char *const *)&argv[2] : NULL;

    mf_parent *p = NULL;
    mf_options *o = mf_options_new();
    mf_options_set_private_link(o, private_link);
    mf_status s = pool ? mf_options_set_workers(o, (uint32_t)(workers > UINT32_MAX ? UINT32_MAX : workers)) : MF_OK;
    if (s != MF_OK) {
        fprintf(stderr, "--workers %lu: %s\n", workers, mf_last_error());
        mf_options_free(o);
        return 2;
    }
    s = connect_to ? mf_connect(connect_to, o, &p) : mf_spawn(program, args, o, &p);
    mf_options_free(o);
    if (s != MF_OK) {
        fprintf(stderr, "%s %s: %s\n", connect_to ? "connect" : "spawn", connect_to ? connect_to : program,
                mf_last_error());
        return 1;
    }
    printf("libmultifrost %s: %s %s\n", mf_version(), connect_to ? "connected to" : "spawned",
           connect_to ? connect_to : program);
    int failures = 0;
    failures += call(p, "add", "[1, 2]");
    failures += call(p, "multiply", "[6, 7]");
    failures += call(p, "factorial", "[10]");
    failures += call(p, "factorial", "[-1]");
    failures += call(p, "echo", "[{\"text\": \"héllo ✓\", \"list\": [1, 2.5, null, true]}]");

    char *stats = mf_parent_stats_json(p);
    if (pool) print_pool(stats);
    printf("stats: %s\n", stats);
    mf_string_free(stats);
    mf_parent_close(p);
    return failures ? 1 : 0;
}
