/* What a worker prints reaches the log callback, line by line and in order,
 * as `[<name> STDOUT]: <text>` events; mf_options_set_name picks the name. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define LINES 200

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int next_line;     /* the next "line <i>" expected */
static int out_of_order;  /* lines that came in the wrong order */
static int bad_events;    /* events without the standard fields */
static char first_line_event[1024];
static int saw_start;

static void on_log(void *user, const char *json) {
    const char *prefix = user;
    pthread_mutex_lock(&lock);
    if (!strstr(json, "\"event\":") || !strstr(json, "\"level\":") || !strstr(json, "\"message\":") ||
        !strstr(json, "\"timestamp\":"))
        bad_events++;
    if (strstr(json, "\"event\":\"worker_start\"")) saw_start = 1;
    const char *m = strstr(json, prefix);
    if (m && strstr(json, "\"event\":\"worker_output\"")) {
        int i = atoi(m + strlen(prefix));
        if (i == 0 && !first_line_event[0]) snprintf(first_line_event, sizeof first_line_event, "%s", json);
        if (i == next_line)
            next_line++;
        else
            out_of_order++;
    }
    pthread_mutex_unlock(&lock);
}

int main(void) {
    static const char prefix[] = "\"message\":\"[calc STDOUT]: line ";
    mf_set_log_callback(on_log, (void *)prefix);

    mf_options *o = mf_options_new();
    CHECK_STATUS(mf_options_set_name(o, "calc"), MF_OK);
    mf_parent *p = spawn_worker(o);
    mf_options_free(o);
    if (!p) return check_summary();

    char args[32], want[32];
    snprintf(args, sizeof args, "[%d]", LINES);
    snprintf(want, sizeof want, "%d", LINES);
    check_json_call(p, "spam", args, want);

    /* The output travels through a pipe of its own: wait for it. */
    int got = 0;
    for (int64_t t0 = now_ms(); now_ms() - t0 < 5000;) {
        pthread_mutex_lock(&lock);
        got = next_line;
        pthread_mutex_unlock(&lock);
        if (got >= LINES) break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    mf_parent_close(p);
    mf_set_log_callback(NULL, NULL);

    pthread_mutex_lock(&lock);
    CHECK(next_line == LINES, "%d of %d lines arrived in order", next_line, LINES);
    CHECK(out_of_order == 0, "%d lines out of order or repeated", out_of_order);
    CHECK(bad_events == 0, "%d events lack event/level/message/timestamp", bad_events);
    CHECK(saw_start, "no worker_start event");
    CHECK_CONTAINS(first_line_event, "\"level\":\"info\"");
    CHECK_CONTAINS(first_line_event, "\"stream\":\"stdout\"");
    CHECK_CONTAINS(first_line_event, "\"line\":\"line 0\"");
    pthread_mutex_unlock(&lock);
    return check_summary();
}
