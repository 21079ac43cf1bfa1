/* C shims for the Go binding: each calls one mf_ function and, on failure,
 * copies mf_last_error() into *err in the same cgo call (the caller frees it
 * with free()). A goroutine can move to another OS thread between two cgo
 * calls, so reading the thread-local text in a second call would be wrong.
 * Declarations only: cgo forbids definitions in a preamble next to //export. */
#ifndef MULTIFROST_GO_SHIM_H
#define MULTIFROST_GO_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "multifrost.h"

/* Parent options as plain values; a zero (or NULL) field keeps the default. */
typedef struct mfgo_options {
    int64_t default_timeout_ms;
    const char *ns;
    int set_heartbeat;
    uint32_t hb_interval_ms, hb_timeout_ms, hb_max_misses;
    int set_breaker;
    uint32_t breaker_threshold, breaker_cooldown_ms;
    int breaker_counts_remote;
    uint32_t auto_restart;
    int64_t start_timeout_ms, connect_timeout_ms, shutdown_grace_ms;
    int set_cancel_grace;
    int64_t cancel_grace_ms;
    const char *name, *bind_host;
    int64_t max_message_size;
    int no_private_link;
    uint32_t workers;
    uint64_t max_calls_per_worker;
} mfgo_options;

mf_status mfgo_options_build(const mfgo_options *in, mf_options **out, char **err);
mf_status mfgo_spawn(const char *program, const char *const *args, const mf_options *o,
                     mf_parent **out, char **err);
mf_status mfgo_connect(const char *target, const mf_options *o, mf_parent **out, char **err);
mf_status mfgo_call_queued_start(mf_parent *p, const char *function, size_t function_len,
                                 const uint8_t *args, size_t args_len, int64_t timeout_ms,
                                 mf_queue *q, uint64_t token, uint64_t *call_id, char **err);
/* Opens a stream; `function` as at mfgo_call_queued_start. */
mf_status mfgo_stream_open(mf_parent *p, const char *function, size_t function_len, const uint8_t *args,
                           size_t args_len, int64_t timeout_ms, mf_stream **out, char **err);
mf_status mfgo_stream_next(mf_stream *s, int64_t timeout_ms, mf_buffer *item, bool *end, char **err);
/* Waits without limit for one completion (MF_ERR_CLOSED once the queue is closed). */
mf_status mfgo_queue_wait(mf_queue *q, mf_event *ev);
mf_status mfgo_queue_fd(mf_queue *q, int *out, char **err);
char *mfgo_stats(const mf_parent *p, char **err);

mf_status mfgo_worker_new(const char *service_id, mf_worker **out, char **err);
mf_status mfgo_worker_register(mf_worker *w, const char *name, uintptr_t handle, char **err);
mf_status mfgo_worker_set_concurrency(mf_worker *w, uint32_t n, char **err);
mf_status mfgo_worker_set_namespace(mf_worker *w, const char *ns, char **err);
mf_status mfgo_serve(mf_worker *w, char **err);
mf_status mfgo_reply_ok(mf_reply *r, const uint8_t *data, size_t len, char **err);
mf_status mfgo_reply_yield(mf_reply *r, const uint8_t *item, size_t len, char **err);
mf_status mfgo_reply_error(mf_reply *r, const char *message, char **err);
/* Cancels the handler's context (the cgo.Handle h) when its call is cancelled. */
mf_status mfgo_reply_on_cancel(mf_reply *r, uintptr_t h);

void mfgo_set_log(int on);

#endif
