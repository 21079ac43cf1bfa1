/* What a caller sees when the worker refuses or fails a call: the status,
 * the exact text, and a worker that keeps serving afterwards. */
#include "support.h"

#include <stdio.h>
#include <string.h>

#ifndef MATH_WORKER
#error "MATH_WORKER must name the example math worker"
#endif

/* function(args) must fail with `want` status and exactly `text` (or containing it). */
static void expect_error(mf_parent *p, const char *function, const char *args, mf_status want, const char *text,
                         int exact) {
    char *out = (char *)"untouched";
    mf_status s = mf_call_json(p, function, args, 10000, &out);
    CHECK(s == want, "%s%s: status %s, expected %s (\"%s\")", function, args, mf_status_name(s),
          mf_status_name(want), mf_last_error());
    if (exact)
        CHECK_STR_EQ(mf_last_error(), text);
    else
        CHECK_CONTAINS(mf_last_error(), text);
    CHECK(out != NULL && strcmp(out, "untouched") == 0, "out was written on failure");
}

static void test_worker_errors(void) {
    mf_parent *p = spawn_worker(NULL);
    if (!p) return;

    expect_error(p, "fail", "[\"boom\"]", MF_ERR_REMOTE, "RuntimeError: boom", 1);
    expect_error(p, "fail", "[\"h\xc3\xa9llo \xe2\x9c\x93\"]", MF_ERR_REMOTE, "RuntimeError: h\xc3\xa9llo \xe2\x9c\x93", 1);
    expect_error(p, "fail", "[\"\"]", MF_ERR_REMOTE, "RuntimeError: ", 1);
    /* The handler's own argument checking reaches the caller too. */
    expect_error(p, "add", "[1]", MF_ERR_REMOTE, "TypeError: add takes two integers", 1);
    expect_error(p, "add", "[9223372036854775807, 1]", MF_ERR_REMOTE,
                 "OverflowError: result does not fit in 64 bits", 1);

    expect_error(p, "_secret", "[]", MF_ERR_REMOTE, "Cannot call private method '_secret'", 0);
    expect_error(p, "_nosuch_private", "[]", MF_ERR_REMOTE, "Cannot call private method '_nosuch_private'", 0);
    expect_error(p, "nosuch", "[]", MF_ERR_NO_SUCH_FUNCTION, "Function 'nosuch' not found", 0);
    expect_error(p, "nosuch", "[1, 2, 3]", MF_ERR_NO_SUCH_FUNCTION, "Function 'nosuch' not found", 0);

    /* mf_call reports the same text. */
    mf_buffer out = {NULL, 0};
    const uint8_t boom[] = {0x91, 0xa4, 'b', 'o', 'o', 'm'};
    CHECK_STATUS(mf_call(p, "fail", boom, sizeof boom, 10000, &out), MF_ERR_REMOTE);
    CHECK_STR_EQ(mf_last_error(), "RuntimeError: boom");
    CHECK(out.data == NULL && out.len == 0, "out was written on failure");

    /* An argument with no JSON form (an ext value) never reaches a JSON handler. */
    const uint8_t ext_arg[] = {0x92, 0xd4, 0x01, 0x00, 0x01};
    CHECK_STATUS(mf_call(p, "add", ext_arg, sizeof ext_arg, 10000, &out), MF_ERR_REMOTE);
    CHECK_CONTAINS(mf_last_error(), "TypeError: arguments have no JSON form");

    /* A successful call leaves the last error of this thread alone... */
    check_json_call(p, "add", "[1, 2]", "3");
    /* ...and the worker served through every failure. */
    char *stats = mf_parent_stats_json(p);
    CHECK_CONTAINS(stats, "\"remote_errors\":11");
    CHECK_CONTAINS(stats, "\"healthy\":true");
    CHECK_CONTAINS(stats, "\"circuit_state\":\"closed\"");
    mf_string_free(stats);
    mf_parent_close(p);
}

static void test_math_worker_errors(void) {
    mf_parent *p = NULL;
    mf_status s = mf_spawn(MATH_WORKER, NULL, NULL, &p);
    if (!CHECK(s == MF_OK, "spawn math_worker: %s: %s", mf_status_name(s), mf_last_error())) return;
    check_json_call(p, "factorial", "[10]", "3628800");
    expect_error(p, "factorial", "[-1]", MF_ERR_REMOTE, "ValueError: factorial of a negative number", 1);
    expect_error(p, "factorial", "[21]", MF_ERR_REMOTE, "OverflowError: factorial above 20 does not fit in 64 bits",
                 1);
    expect_error(p, "factorial", "[\"x\"]", MF_ERR_REMOTE, "TypeError: factorial takes one integer", 1);
    expect_error(p, "factorial", "[3.5]", MF_ERR_REMOTE, "TypeError: factorial takes one integer", 1);
    expect_error(p, "factorial", "[1, 2]", MF_ERR_REMOTE, "TypeError: factorial takes one integer", 1);
    /* The README's worker checks its input: wrong types and counts are answered, never guessed. */
    expect_error(p, "add", "[\"x\", 2]", MF_ERR_REMOTE, "TypeError: expected two numbers", 1);
    expect_error(p, "add", "[1]", MF_ERR_REMOTE, "TypeError: expected two numbers", 1);
    expect_error(p, "add", "[1, 2, 3]", MF_ERR_REMOTE, "TypeError: expected two numbers", 1);
    expect_error(p, "multiply", "[true, 2]", MF_ERR_REMOTE, "TypeError: expected two numbers", 1);
    check_json_call(p, "multiply", "[6, 7]", "42");
    mf_parent_close(p);
}

int main(void) {
    test_worker_errors();
    test_math_worker_errors();
    return check_summary();
}
