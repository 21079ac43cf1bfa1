/* Bad inputs are refused with MF_ERR_INVALID_ARGUMENT and a message, out
 * parameters are left alone, nothing is sent, and free/close functions
 * accept NULL and empty values. */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* `call` must give MF_ERR_INVALID_ARGUMENT with a message containing `needle` ("" = any). */
#define CHECK_INVALID(call, needle)                                                                \
    do {                                                                                           \
        mf_status s_ = (call);                                                                     \
        CHECK(s_ == MF_ERR_INVALID_ARGUMENT, "%s: status %s (\"%s\")", #call, mf_status_name(s_),  \
              mf_last_error());                                                                    \
        CHECK(mf_last_error()[0] != '\0', "%s: empty mf_last_error()", #call);                     \
        CHECK(strstr(mf_last_error(), needle) != NULL, "%s: \"%s\" does not mention \"%s\"", #call, \
              mf_last_error(), needle);                                                            \
    } while (0)

/* Copies this thread's last error: the text lives only as long as the thread. */
static void *fresh_thread_error(void *arg) {
    const char *e = mf_last_error();
    snprintf(arg, 256, "%s", e ? e : "(null)");
    return NULL;
}

static void call_inputs(mf_parent *p) {
    char *out = (char *)"untouched";
    mf_buffer buf = {(uint8_t *)"untouched", 9};
    const uint8_t ok_args[] = {0x92, 0x01, 0x02};

    /* NULL parent, function, out, args. */
    CHECK_INVALID(mf_call_json(NULL, "add", "[1, 2]", 1000, &out), "parent");
    CHECK_INVALID(mf_call_json(p, NULL, "[1, 2]", 1000, &out), "function");
    CHECK_INVALID(mf_call_json(p, "add", NULL, 1000, &out), "args_json");
    CHECK_INVALID(mf_call_json(p, "add", "[1, 2]", 1000, NULL), "out");
    CHECK_INVALID(mf_call(NULL, "add", ok_args, sizeof ok_args, 1000, &buf), "parent");
    CHECK_INVALID(mf_call(p, NULL, ok_args, sizeof ok_args, 1000, &buf), "function");
    CHECK_INVALID(mf_call(p, "add", ok_args, sizeof ok_args, 1000, NULL), "out");
    CHECK_INVALID(mf_call(p, "add", NULL, 3, 1000, &buf), "args");

    /* Function names: invalid UTF-8, empty. */
    CHECK_INVALID(mf_call_json(p, "ad\xff\xfe", "[1, 2]", 1000, &out), "UTF-8");
    CHECK_INVALID(mf_call(p, "\xc3", ok_args, sizeof ok_args, 1000, &buf), "UTF-8");
    CHECK_INVALID(mf_call_json(p, "", "[1, 2]", 1000, &out), "");

    /* JSON arguments that do not parse, or are not an array. */
    CHECK_INVALID(mf_call_json(p, "add", "[1, 2", 1000, &out), "JSON");
    CHECK_INVALID(mf_call_json(p, "add", "[1,]", 1000, &out), "JSON");
    CHECK_INVALID(mf_call_json(p, "add", "", 1000, &out), "JSON");
    CHECK_INVALID(mf_call_json(p, "add", "[1] x", 1000, &out), "JSON");
    CHECK_INVALID(mf_call_json(p, "add", "[\"\xff\"]", 1000, &out), "UTF-8");
    CHECK_INVALID(mf_call_json(p, "add", "{\"a\": 1}", 1000, &out), "array");
    CHECK_INVALID(mf_call_json(p, "add", "42", 1000, &out), "array");
    CHECK_INVALID(mf_call_json(p, "add", "null", 1000, &out), "array");
    /* Integers beyond int64 ∪ uint64 are refused, never rounded. */
    CHECK_INVALID(mf_call_json(p, "echo", "[18446744073709551616]", 1000, &out), "");
    CHECK_INVALID(mf_call_json(p, "echo", "[-9223372036854775809]", 1000, &out), "");
    /* Nesting deeper than 100 is refused (PROTOCOL.md §7); 100 levels in all pass. */
    char deep[512];
    const int depths[] = {101, 102, 120};
    for (size_t k = 0; k < sizeof depths / sizeof depths[0]; k++) {
        int d = depths[k];
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        deep[2 * d] = '\0';
        CHECK_INVALID(mf_call_json(p, "echo", deep, 1000, &out), "depth");
    }
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = '\0';
    char *echoed = call_json_ok(p, "echo", deep, 5000);
    CHECK(echoed && strlen(echoed) == 198 && strncmp(echoed, deep + 1, 198) == 0, "echo of 99 nested arrays: %s",
          echoed ? echoed : "(failed)");
    mf_string_free(echoed);

    /* msgpack arguments that are not one array. */
    const uint8_t not_array[] = {0x01};
    const uint8_t str_arg[] = {0xa1, 'x'};
    const uint8_t trailing[] = {0x91, 0x01, 0x02};
    const uint8_t truncated[] = {0x92, 0x01};
    const uint8_t two_arrays[] = {0x90, 0x90};
    const uint8_t bad_byte[] = {0x91, 0xc1};
    CHECK_INVALID(mf_call(p, "echo", not_array, sizeof not_array, 1000, &buf), "array");
    CHECK_INVALID(mf_call(p, "echo", str_arg, sizeof str_arg, 1000, &buf), "array");
    CHECK_INVALID(mf_call(p, "echo", trailing, sizeof trailing, 1000, &buf), "array");
    CHECK_INVALID(mf_call(p, "echo", truncated, sizeof truncated, 1000, &buf), "array");
    CHECK_INVALID(mf_call(p, "echo", two_arrays, sizeof two_arrays, 1000, &buf), "array");
    CHECK_INVALID(mf_call(p, "echo", bad_byte, sizeof bad_byte, 1000, &buf), "array");

    CHECK(out != NULL && strcmp(out, "untouched") == 0, "mf_call_json wrote out on failure");
    CHECK(buf.data != NULL && buf.len == 9 && memcmp(buf.data, "untouched", 9) == 0, "mf_call wrote out on failure");

    /* The parent is unharmed and nothing bad was sent. */
    check_json_call(p, "add", "[1, 2]", "3");
    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"requests_total\":2,");
    CHECK_CONTAINS(stats, "\"requests_failed\":0");
    mf_string_free(stats);
    CHECK(mf_parent_stats_json(NULL) == NULL, "stats of NULL is NULL");

    /* The error text is per thread: a thread that never failed sees "". */
    char other[256] = "not run";
    pthread_t t;
    pthread_create(&t, NULL, fresh_thread_error, other);
    pthread_join(t, NULL);
    CHECK(other[0] == '\0', "a fresh thread's mf_last_error() is \"%s\"", other);
    /* ...and this thread's text is still its own. */
    CHECK(mf_last_error()[0] != '\0', "this thread's last error was lost");
}

static void option_inputs(void) {
    CHECK_INVALID(mf_options_set_default_timeout(NULL, 1000), "");
    CHECK_INVALID(mf_options_set_namespace(NULL, "ns"), "");
    CHECK_INVALID(mf_options_set_heartbeat(NULL, 100, 300, 3), "");
    CHECK_INVALID(mf_options_set_breaker(NULL, 5, 5000), "");
    CHECK_INVALID(mf_options_set_breaker_counts_remote_errors(NULL, true), "");
    CHECK_INVALID(mf_options_set_auto_restart(NULL, 1), "");
    CHECK_INVALID(mf_options_set_start_timeout(NULL, 1000), "");
    CHECK_INVALID(mf_options_set_connect_timeout(NULL, 1000), "");
    CHECK_INVALID(mf_options_set_shutdown_grace(NULL, 1000), "");
    CHECK_INVALID(mf_options_set_name(NULL, "name"), "");
    CHECK_INVALID(mf_options_set_bind_host(NULL, "127.0.0.1"), "");
    CHECK_INVALID(mf_options_set_max_message_size(NULL, 4096), "");

    mf_options *o = mf_options_new();
    CHECK(o != NULL, "mf_options_new");
    CHECK_INVALID(mf_options_set_default_timeout(o, 0), "");
    CHECK_INVALID(mf_options_set_default_timeout(o, -5), "");
    CHECK_INVALID(mf_options_set_namespace(o, ""), "");
    CHECK_INVALID(mf_options_set_namespace(o, NULL), "");
    CHECK_INVALID(mf_options_set_namespace(o, "\xff"), "UTF-8");
    CHECK_INVALID(mf_options_set_heartbeat(o, 100, 0, 3), "");
    CHECK_INVALID(mf_options_set_heartbeat(o, 100, 300, 0), "");
    CHECK_INVALID(mf_options_set_breaker(o, 0, 5000), "");
    CHECK_INVALID(mf_options_set_start_timeout(o, 0), "");
    CHECK_INVALID(mf_options_set_connect_timeout(o, 0), "");
    CHECK_INVALID(mf_options_set_shutdown_grace(o, -1), "");
    CHECK_INVALID(mf_options_set_name(o, NULL), "");
    CHECK_INVALID(mf_options_set_bind_host(o, NULL), "");
    CHECK_INVALID(mf_options_set_max_message_size(o, 1023), "");
    /* The edges that are allowed. */
    CHECK_STATUS(mf_options_set_heartbeat(o, 0, 0, 0), MF_OK);
    CHECK_STATUS(mf_options_set_shutdown_grace(o, 0), MF_OK);
    CHECK_STATUS(mf_options_set_max_message_size(o, 1024), MF_OK);
    CHECK_STATUS(mf_options_set_default_timeout(o, 1), MF_OK);
    mf_options_free(o);
}

static void spawn_and_worker_inputs(void) {
    mf_parent *p = (mf_parent *)&p; /* a sentinel: must stay as it is */
    mf_parent *const sentinel = p;
    CHECK_INVALID(mf_spawn(NULL, NULL, NULL, &p), "program");
    CHECK_INVALID(mf_spawn(TEST_WORKER, NULL, NULL, NULL), "out");
    CHECK_INVALID(mf_spawn("", NULL, NULL, &p), "");
    CHECK_INVALID(mf_spawn("\xff", NULL, NULL, &p), "UTF-8");
    const char *bad_args[] = {"ok", "\xfe", NULL};
    CHECK_INVALID(mf_spawn(TEST_WORKER, bad_args, NULL, &p), "UTF-8");
    CHECK_INVALID(mf_connect(NULL, NULL, &p), "target");
    CHECK_INVALID(mf_connect("tcp://127.0.0.1:1", NULL, NULL), "out");
    CHECK(p == sentinel, "out was written on failure");

    mf_worker *w = NULL;
    CHECK_INVALID(mf_worker_new(NULL, NULL), "out");
    CHECK_INVALID(mf_worker_new("\xff", &w), "UTF-8");
    CHECK(w == NULL, "out was written on failure");
    CHECK_STATUS(mf_worker_new(NULL, &w), MF_OK);
    CHECK_INVALID(mf_worker_register(NULL, "f", NULL, NULL), "");
    CHECK_INVALID(mf_worker_register(w, "f", NULL, NULL), "handler");
    CHECK_INVALID(mf_worker_register_json(w, "f", NULL, NULL), "handler");
    CHECK_INVALID(mf_worker_set_concurrency(w, 0), "");
    CHECK_INVALID(mf_worker_set_concurrency(w, 1025), "");
    CHECK_STATUS(mf_worker_set_concurrency(w, 1024), MF_OK);
    CHECK_INVALID(mf_worker_set_concurrency(NULL, 2), "");
    CHECK_INVALID(mf_worker_set_namespace(w, NULL), "");
    CHECK_INVALID(mf_serve(NULL), "");
    CHECK_INVALID(mf_worker_stop(NULL), "");
    CHECK_INVALID(mf_reply_ok(NULL, (const uint8_t *)"\xc0", 1), "reply");
    CHECK_INVALID(mf_reply_json(NULL, "1"), "reply");
    CHECK_INVALID(mf_reply_error(NULL, "E: x"), "reply");
    mf_worker_free(w);
}

static void frees_accept_nothing(void) {
    /* None of these may crash (which ends the program, failing the test; the
     * valgrind run also sees a bad free) or report a failure: the last error
     * from before them must still be there afterwards. */
    mf_parent *unused = NULL;
    CHECK_INVALID(mf_spawn(NULL, NULL, NULL, &unused), "program");
    char before[512];
    snprintf(before, sizeof before, "%s", mf_last_error());
    mf_parent_close(NULL);
    mf_parent_release(NULL);
    mf_buffer empty = {NULL, 0};
    mf_buffer_free(empty);
    mf_string_free(NULL);
    mf_options_free(NULL);
    mf_worker_free(NULL);
    mf_queue_close(NULL);
    mf_queue_free(NULL);
    CHECK(mf_parent_retain(NULL) == NULL, "mf_parent_retain(NULL) is not NULL");
    CHECK(strcmp(mf_last_error(), before) == 0, "a NULL free/close changed the last error from \"%s\" to \"%s\"",
          before, mf_last_error());
}

int main(void) {
    option_inputs();
    spawn_and_worker_inputs();
    frees_accept_nothing();
    mf_parent *p = spawn_worker(NULL);
    if (p) {
        call_inputs(p);
        mf_parent_close(p);
    }
    return check_summary();
}
