#include <stdio.h>
#include <string.h>

#include "shim.h"
#include "_cgo_export.h"

/* Copies this thread's error text; called right after the failing mf_ call. */
static mf_status fail(mf_status s, char **err) {
    if (s != MF_OK && err) *err = strdup(mf_last_error());
    return s;
}

/* Prefixes the failing setter's name to its error text. */
static mf_status fail_setter(mf_status s, const char *setter, char **err) {
    if (s != MF_OK && err) {
        const char *text = mf_last_error();
        size_t n = strlen(setter) + strlen(text) + 3;
        *err = malloc(n);
        if (*err) snprintf(*err, n, "%s: %s", setter, text);
    }
    return s;
}

#define SET(call, what)                              \
    do {                                             \
        mf_status s_ = (call);                       \
        if (s_ != MF_OK) {                           \
            fail_setter(s_, what, err);              \
            mf_options_free(o);                      \
            return s_;                               \
        }                                            \
    } while (0)

mf_status mfgo_options_build(const mfgo_options *in, mf_options **out, char **err) {
    mf_options *o = mf_options_new();
    if (in->default_timeout_ms) SET(mf_options_set_default_timeout(o, in->default_timeout_ms), "DefaultTimeout");
    if (in->ns) SET(mf_options_set_namespace(o, in->ns), "Namespace");
    if (in->set_heartbeat)
        SET(mf_options_set_heartbeat(o, in->hb_interval_ms, in->hb_timeout_ms, in->hb_max_misses), "Heartbeat");
    if (in->set_breaker) {
        SET(mf_options_set_breaker(o, in->breaker_threshold, in->breaker_cooldown_ms), "Breaker");
        SET(mf_options_set_breaker_counts_remote_errors(o, in->breaker_counts_remote != 0), "Breaker");
    }
    if (in->auto_restart) SET(mf_options_set_auto_restart(o, in->auto_restart), "AutoRestart");
    if (in->start_timeout_ms) SET(mf_options_set_start_timeout(o, in->start_timeout_ms), "StartTimeout");
    if (in->connect_timeout_ms) SET(mf_options_set_connect_timeout(o, in->connect_timeout_ms), "ConnectTimeout");
    if (in->shutdown_grace_ms) SET(mf_options_set_shutdown_grace(o, in->shutdown_grace_ms), "ShutdownGrace");
    if (in->set_cancel_grace) SET(mf_options_set_cancel_grace(o, in->cancel_grace_ms), "CancelGrace");
    if (in->name) SET(mf_options_set_name(o, in->name), "Name");
    if (in->bind_host) SET(mf_options_set_bind_host(o, in->bind_host), "BindHost");
    if (in->max_message_size) SET(mf_options_set_max_message_size(o, in->max_message_size), "MaxMessageSize");
    if (in->no_private_link) SET(mf_options_set_private_link(o, false), "DisablePrivateLink");
    if (in->workers) SET(mf_options_set_workers(o, in->workers), "Workers");
    if (in->max_calls_per_worker)
        SET(mf_options_set_max_calls_per_worker(o, in->max_calls_per_worker), "MaxCallsPerWorker");
    *out = o;
    return MF_OK;
}

mf_status mfgo_spawn(const char *program, const char *const *args, const mf_options *o,
                     mf_parent **out, char **err) {
    return fail(mf_spawn(program, args, o, out), err);
}

mf_status mfgo_connect(const char *target, const mf_options *o, mf_parent **out, char **err) {
    return fail(mf_connect(target, o, out), err);
}

/* `function` is a Go string's bytes (not NUL-terminated): copied here, so a
 * call costs Go one cgo call rather than three (C.CString's malloc, the
 * call, free). A NUL inside it stays and ends the name early, which Go
 * refuses before calling. Returns `small` or a malloc'd copy (NULL when
 * out of memory); free it with free_name. */
static char *copy_name(char *small, size_t small_len, const char *function, size_t function_len) {
    char *name = function_len < small_len ? small : malloc(function_len + 1);
    if (!name) return NULL;
    if (function_len) memcpy(name, function, function_len);
    name[function_len] = 0;
    return name;
}

static void free_name(char *name, const char *small) {
    if (name != small) free(name);
}

/* The completion goes on `q` with `token`; the call's id, for mf_cancel,
 * is written to *call_id. */
mf_status mfgo_call_queued_start(mf_parent *p, const char *function, size_t function_len,
                                 const uint8_t *args, size_t args_len, int64_t timeout_ms,
                                 mf_queue *q, uint64_t token, uint64_t *call_id, char **err) {
    char small[256];
    char *name = copy_name(small, sizeof small, function, function_len);
    if (!name) {
        if (err) *err = strdup("out of memory");
        return MF_ERR_PANIC;
    }
    mf_status s = mf_call_queued_start(p, name, args, args_len, timeout_ms, q, token, call_id);
    fail(s, err);
    free_name(name, small);
    return s;
}

mf_status mfgo_stream_open(mf_parent *p, const char *function, size_t function_len, const uint8_t *args,
                           size_t args_len, int64_t timeout_ms, mf_stream **out, char **err) {
    char small[256];
    char *name = copy_name(small, sizeof small, function, function_len);
    if (!name) {
        if (err) *err = strdup("out of memory");
        return MF_ERR_PANIC;
    }
    mf_status s = mf_stream_open(p, name, args, args_len, timeout_ms, out);
    fail(s, err);
    free_name(name, small);
    return s;
}

mf_status mfgo_stream_next(mf_stream *s, int64_t timeout_ms, mf_buffer *item, bool *end, char **err) {
    return fail(mf_stream_next(s, timeout_ms, item, end), err);
}

mf_status mfgo_queue_wait(mf_queue *q, mf_event *ev) {
    size_t n = 0;
    return mf_queue_next(q, -1, ev, 1, &n);
}

mf_status mfgo_queue_fd(mf_queue *q, int *out, char **err) { return fail(mf_queue_fd(q, out), err); }

char *mfgo_stats(const mf_parent *p, char **err) {
    char *s = mf_parent_stats_json(p);
    if (!s && err) *err = strdup(mf_last_error());
    return s;
}

mf_status mfgo_worker_new(const char *service_id, mf_worker **out, char **err) {
    mf_status s = mf_worker_new(service_id, out);
    if (s != MF_OK) return fail(s, err);
    /* Go owns signal handling (os/signal): the library's handler lacks
     * SA_ONSTACK, which the Go runtime requires of foreign handlers. */
    s = mf_worker_set_handle_signals(*out, false);
    if (s != MF_OK) {
        fail(s, err);
        mf_worker_free(*out);
        *out = NULL;
    }
    return s;
}

/* Runs on a worker handler thread. */
static void handle(void *user, const uint8_t *args, size_t len, mf_reply *reply) {
    multifrostGoHandle((uintptr_t)user, (uint8_t *)args, len, reply);
}

mf_status mfgo_worker_register(mf_worker *w, const char *name, uintptr_t h, char **err) {
    return fail(mf_worker_register(w, name, handle, (void *)h), err);
}

mf_status mfgo_worker_set_concurrency(mf_worker *w, uint32_t n, char **err) {
    return fail(mf_worker_set_concurrency(w, n), err);
}

mf_status mfgo_worker_set_namespace(mf_worker *w, const char *ns, char **err) {
    return fail(mf_worker_set_namespace(w, ns), err);
}

mf_status mfgo_serve(mf_worker *w, char **err) { return fail(mf_serve(w), err); }

mf_status mfgo_reply_ok(mf_reply *r, const uint8_t *data, size_t len, char **err) {
    return fail(mf_reply_ok(r, data, len), err);
}

/* Runs on the worker's driver thread (or at once on the handler's, if the
 * call is cancelled already), never after the reply is answered. */
static void cancel_hook(void *user) { multifrostGoCancel((uintptr_t)user); }

mf_status mfgo_reply_on_cancel(mf_reply *r, uintptr_t h) { return mf_reply_on_cancel(r, cancel_hook, (void *)h); }

mf_status mfgo_reply_yield(mf_reply *r, const uint8_t *item, size_t len, char **err) {
    return fail(mf_reply_yield(r, item, len), err);
}

mf_status mfgo_reply_error(mf_reply *r, const char *message, char **err) {
    return fail(mf_reply_error(r, message), err);
}

static void log_line(void *user, const char *json) {
    (void)user;
    multifrostGoLog((char *)json);
}

void mfgo_set_log(int on) { mf_set_log_callback(on ? log_line : NULL, NULL); }
