/* mf_spawn of something that is not a working worker fails at once with a
 * message that says what happened: with a 20 s start-up wait, a failure that
 * was waited out instead would be MF_ERR_TIMEOUT. */
#include "support.h"

#include <stdio.h>

static void expect_spawn_failure(const char *program, const char *const *args, mf_status want, const char *needle1,
                                 const char *needle2) {
    mf_options *o = mf_options_new();
    /* A long start-up wait: the failure must be noticed, not waited out. */
    CHECK_STATUS(mf_options_set_start_timeout(o, 20000), MF_OK);
    mf_parent *p = NULL;
    mf_status s = mf_spawn(program, args, o, &p);
    mf_options_free(o);
    CHECK(s == want, "spawn %s: %s, expected %s (\"%s\")", program, mf_status_name(s), mf_status_name(want),
          mf_last_error());
    CHECK(p == NULL, "out was written on failure");
    if (needle1) CHECK_CONTAINS(mf_last_error(), needle1);
    if (needle2) CHECK_CONTAINS(mf_last_error(), needle2);
    printf("spawn %s -> %s: %s\n", program, mf_status_name(s), mf_last_error());
    if (p) mf_parent_close(p);
}

int main(void) {
    expect_spawn_failure("/nonexistent/mf-no-such-worker", NULL, MF_ERR_IO, "/nonexistent/mf-no-such-worker",
                         NULL);
    /* A bare name is looked up in PATH. */
    expect_spawn_failure("mf-no-such-program-in-path", NULL, MF_ERR_IO, "mf-no-such-program-in-path", NULL);
    /* A file that is not executable. */
    expect_spawn_failure("/dev/null", NULL, MF_ERR_IO, "/dev/null", NULL);

    const char *doomed[] = {"-c", "echo doomed-worker-message >&2; exit 3", NULL};
    expect_spawn_failure("/bin/sh", doomed, MF_ERR_WORKER_EXITED, "code 3", "doomed-worker-message");
    expect_spawn_failure("false", NULL, MF_ERR_WORKER_EXITED, "code 1", NULL);
    /* Killed by a signal during start-up. */
    const char *killed[] = {"-c", "kill -9 $$", NULL};
    expect_spawn_failure("/bin/sh", killed, MF_ERR_WORKER_EXITED, "signal 9", NULL);

    /* A failed spawn leaves nothing behind that stops the next one. */
    mf_parent *p = spawn_worker(NULL);
    if (p) {
        check_json_call(p, "add", "[2, 3]", "5");
        mf_parent_close(p);
    }
    return check_summary();
}
