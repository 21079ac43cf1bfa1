/* Pools (mf_options_set_workers) from C: a pool of two Python workers
 * (SAMPLE_WORKER, run by the python3 found in PATH, which `make test-c`
 * points at the venv), and the refused worker counts. */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef SAMPLE_WORKER
#error "SAMPLE_WORKER must name the Python binding's sample worker"
#endif
#ifndef PYTHON_BINDING_DIR
#error "PYTHON_BINDING_DIR must name the Python binding's folder"
#endif
#ifndef MF_LIBRARY
#error "MF_LIBRARY must name libmultifrost.so"
#endif

#define MAX_POOL 8

/* The pids of the stats' workers array, in order; how many there are
 * (-1 when the stats have no such array). `healthy` counts the workers that
 * are healthy. */
static int pool_pids(mf_parent *p, long long pids[MAX_POOL], int *healthy) {
    char *stats = mf_parent_stats_json(p);
    if (!stats) return -1;
    int n = -1;
    *healthy = 0;
    const char *at = strstr(stats, "\"workers\":[");
    if (at) {
        n = 0;
        for (const char *w = strchr(at, '{'); w && n < MAX_POOL; w = strchr(w + 1, '{')) {
            const char *pid = strstr(w, "\"pid\":");
            const char *end = strchr(w, '}');
            if (!pid || !end || pid > end) break;
            pids[n++] = atoll(pid + strlen("\"pid\":"));
            const char *h = strstr(w, "\"healthy\":true");
            if (h && h < end) (*healthy)++;
        }
    }
    mf_string_free(stats);
    return n;
}

static int alive(long long pid) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%lld", pid);
    return stat(path, &st) == 0;
}

static void bad_worker_counts(void) {
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_workers(o, 0), MF_ERR_INVALID_ARGUMENT);
    CHECK_STR_EQ(mf_last_error(), "workers must be 1..=256, got 0");
    CHECK_STATUS(mf_options_set_workers(o, 257), MF_ERR_INVALID_ARGUMENT);
    CHECK_STR_EQ(mf_last_error(), "workers must be 1..=256, got 257");
    CHECK_STATUS(mf_options_set_workers(o, 256), MF_OK);
    CHECK_STATUS(mf_options_set_workers(o, 2), MF_OK);

    /* Connect mode is one worker: refused before looking for the service. */
    mf_parent *p = NULL;
    CHECK_STATUS(mf_connect("pool-test-service", o, &p), MF_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mf_last_error(), "a service id or an endpoint is one worker") != NULL, "connect: %s",
          mf_last_error());
    CHECK(p == NULL, "no parent from a refused connect");
    mf_options_free(o);
}

static void pool_of_python_workers(void) {
    /* The worker imports the binding from the source tree and loads this
     * build of the library. */
    setenv("PYTHONPATH", PYTHON_BINDING_DIR, 1);
    setenv("MULTIFROST_LIB", MF_LIBRARY, 1);
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_workers(o, 2), MF_OK);
    /* Two interpreters starting at once on a busy machine: a hang guard. */
    CHECK_STATUS(mf_options_set_start_timeout(o, 25000), MF_OK);
    const char *args[] = {SAMPLE_WORKER, NULL};
    mf_parent *p = NULL;
    mf_status s = mf_spawn("python3", args, o, &p);
    mf_options_free(o);
    if (!CHECK(s == MF_OK && p, "spawn 2 x python3 %s: %s: %s", SAMPLE_WORKER, mf_status_name(s),
               mf_last_error()))
        return;

    long long pids[MAX_POOL];
    int healthy = 0;
    int n = pool_pids(p, pids, &healthy);
    CHECK(n == 2 && healthy == 2, "stats: %d workers, %d healthy", n, healthy);
    if (n == 2) {
        CHECK(pids[0] > 0 && pids[1] > 0 && pids[0] != pids[1], "pids %lld %lld", pids[0], pids[1]);
        CHECK(alive(pids[0]) && alive(pids[1]), "both workers run");
    }

    /* Sequential calls on an idle pool take turns: both pids answer. */
    int answered[2] = {0, 0};
    for (int i = 0; i < 10; i++) {
        char *got = call_json_ok(p, "pid", "[]", 20000);
        if (!got) break;
        long long pid = atoll(got);
        for (int k = 0; k < 2 && n == 2; k++)
            if (pid == pids[k]) answered[k]++;
        CHECK(n == 2 && (pid == pids[0] || pid == pids[1]), "pid() = %s, not a worker of the pool", got);
        mf_string_free(got);
    }
    CHECK(answered[0] > 0 && answered[1] > 0, "calls answered by each pid: %d, %d", answered[0], answered[1]);
    check_json_call(p, "add", "[2, 3]", "5");

    mf_parent_close(p);
    for (int k = 0; k < n; k++) CHECK(!alive(pids[k]), "worker %lld is still there after close", pids[k]);
}

int main(void) {
    bad_worker_counts();
    pool_of_python_workers();
    return check_summary();
}
