/* Heartbeats are answered while a long call runs in the worker: during a
 * 3 s call with a heartbeat every 100 ms, new round trips keep being
 * measured, no heartbeat is missed and the worker stays healthy. Each
 * heartbeat has 2 s to be answered, which a busy 2-core machine meets; a
 * worker that answered none during the call would still miss one. And
 * while every handler slot is blocked for 3 s (concurrency 1 and 4, over
 * the private link and over ZeroMQ), a 100 ms heartbeat with a 2 s timeout
 * is never missed (one that went unanswered while the slots are held would
 * be). The RTT check below is no speed limit: with no miss, every answer
 * came within the 2 s timeout. */
#include "support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static mf_parent *parent;
static atomic_int call_running = 1;

/* The text of the value after "key": in a flat JSON object ("" if absent). */
static void json_field(const char *json, const char *key, char *out, size_t outlen) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = json ? strstr(json, pat) : NULL;
    out[0] = '\0';
    if (!at) return;
    at += strlen(pat);
    size_t n = strcspn(at, ",}");
    if (n >= outlen) n = outlen - 1;
    memcpy(out, at, n);
    out[n] = '\0';
}

/* Samples the last heartbeat RTT every 50 ms while the call runs and counts
 * how often it changed: each change is a heartbeat answered meanwhile. */
static void *sampler(void *arg) {
    int *changes = arg;
    char last[64] = "", now[64];
    while (atomic_load(&call_running)) {
        char *stats = mf_parent_stats_json(parent);
        json_field(stats, "heartbeat_rtt_last_ms", now, sizeof now);
        mf_string_free(stats);
        if (last[0] && strcmp(now, last) != 0) (*changes)++;
        memcpy(last, now, sizeof last);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

struct blocked {
    const char *concurrency;
    int slots;
    bool link;
    mf_parent *p;
};

static void *hold_3s(void *arg) {
    struct blocked *b = arg;
    char *out = call_json_ok(b->p, "hold_ms", "[3000]", 30000);
    if (out) CHECK(strcmp(out, "3000") == 0, "hold_ms(3000) returned %s", out);
    mf_string_free(out);
    return NULL;
}

/* One worker with every handler slot held for 3 s. */
static void *every_slot_blocked(void *arg) {
    struct blocked *b = arg;
    const char *args[] = {"--concurrency", b->concurrency, NULL};
    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_heartbeat(o, 100, 2000, 3), MF_OK);
    CHECK_STATUS(mf_options_set_private_link(o, b->link), MF_OK);
    mf_status s = mf_spawn(TEST_WORKER, args, o, &b->p);
    mf_options_free(o);
    if (!CHECK(s == MF_OK, "spawn: %s", mf_last_error())) return NULL;
    pthread_t callers[4];
    for (int i = 0; i < b->slots; i++) pthread_create(&callers[i], NULL, hold_3s, b);
    for (int i = 0; i < b->slots; i++) pthread_join(callers[i], NULL);
    char want[32];
    snprintf(want, sizeof want, "%d", b->slots);
    check_json_call(b->p, "most_holding", "[]", want);
    char *stats = mf_parent_stats_json(b->p);
    CHECK_CONTAINS(stats, b->link ? "\"transport\":\"link\"" : "\"transport\":\"zmq\"");
    CHECK_CONTAINS(stats, "\"heartbeat_misses\":0");
    CHECK_CONTAINS(stats, "\"healthy\":true");
    printf("concurrency %s, %s, every slot held 3 s: %s\n", b->concurrency, b->link ? "link" : "zmq",
           stats ? stats : "(null)");
    mf_string_free(stats);
    mf_parent_close(b->p);
    return NULL;
}

int main(void) {
    struct blocked cases[] = {
        {"1", 1, true, NULL},
        {"1", 1, false, NULL},
        {"4", 4, true, NULL},
        {"4", 4, false, NULL},
    };
    pthread_t runs[4];
    for (int i = 0; i < 4; i++) pthread_create(&runs[i], NULL, every_slot_blocked, &cases[i]);
    for (int i = 0; i < 4; i++) pthread_join(runs[i], NULL);

    mf_options *o = mf_options_new();
    CHECK(o != NULL, "mf_options_new");
    CHECK_STATUS(mf_options_set_heartbeat(o, 100, 2000, 3), MF_OK);
    parent = spawn_worker(o);
    mf_options_free(o); /* the parent keeps its own copy */
    if (!parent) return check_summary();

    int changes = 0;
    pthread_t t;
    pthread_create(&t, NULL, sampler, &changes);
    check_json_call(parent, "sleep_ms", "[3000]", "3000");
    atomic_store(&call_running, 0);
    pthread_join(t, NULL);
    /* ~29 heartbeats fit in the call; allow for equal consecutive RTTs. */
    CHECK(changes >= 4, "only %d new heartbeat round trips were seen during a 3 s call", changes);

    char *stats = mf_parent_stats_json(parent);
    CHECK(stats != NULL, "stats");
    CHECK_CONTAINS(stats, "\"heartbeat_misses\":0");
    CHECK_CONTAINS(stats, "\"healthy\":true");
    CHECK_CONTAINS(stats, "\"circuit_state\":\"closed\"");
    CHECK_CONTAINS(stats, "\"requests_success\":1");
    char rtt[64];
    json_field(stats, "heartbeat_rtt_avg_ms", rtt, sizeof rtt);
    CHECK(atof(rtt) > 0 && atof(rtt) < 2000, "heartbeat_rtt_avg_ms %s in (0, 2000)", rtt);
    printf("%d heartbeat round trips seen during the call; stats: %s\n", changes, stats ? stats : "(null)");
    mf_string_free(stats);
    mf_parent_close(parent);
    return check_summary();
}
