/* The test worker started by hand, without a valid COMLINK_ZMQ_PORT, must
 * exit non-zero at once and say on stderr what is wrong (PROTOCOL.md §2.4). */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs TEST_WORKER with COMLINK_ZMQ_PORT unset (port NULL) or set to `port`.
 * Collects stderr into err; returns the wait status, or -1 if it was still
 * running after 10 s (a hang guard) and had to be killed. */
static int run_worker(const char *port, char *err, size_t errlen) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return -2;
    int64_t t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        unsetenv("COMLINK_WORKER_MODE");
        if (port)
            setenv("COMLINK_ZMQ_PORT", port, 1);
        else
            unsetenv("COMLINK_ZMQ_PORT");
        execl(TEST_WORKER, TEST_WORKER, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    int killed = 0;
    for (;;) {
        int64_t left = 10000 - (now_ms() - t0);
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = 1;
            break;
        }
        struct pollfd pfd = {pipefd[0], POLLIN, 0};
        if (poll(&pfd, 1, (int)left) <= 0) continue;
        ssize_t n = read(pipefd[0], err + used, errlen - 1 - used);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        used += (size_t)n;
        if (used == errlen - 1) break;
    }
    err[used] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return killed ? -1 : status;
}

static void expect_refusal(const char *port, const char *also) {
    char err[4096];
    int status = run_worker(port, err, sizeof err);
    const char *what = port ? port : "(unset)";
    CHECK(status != -1, "COMLINK_ZMQ_PORT=%s: the worker was still running after 10 s", what);
    CHECK(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
          "COMLINK_ZMQ_PORT=%s: expected a non-zero exit, got wait status %d", what, status);
    CHECK(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 127, "COMLINK_ZMQ_PORT=%s: exec failed", what);
    CHECK(strstr(err, "COMLINK_ZMQ_PORT") != NULL, "COMLINK_ZMQ_PORT=%s: stderr does not mention it: \"%s\"", what,
          err);
    if (also) CHECK(strstr(err, also) != NULL, "COMLINK_ZMQ_PORT=%s: stderr lacks \"%s\": \"%s\"", what, also, err);
    printf("COMLINK_ZMQ_PORT=%s -> exit %d, stderr: %s", what, WIFEXITED(status) ? WEXITSTATUS(status) : -1, err);
}

int main(void) {
    expect_refusal(NULL, "not set");
    expect_refusal("80", "80");
    expect_refusal("abc", "abc");
    expect_refusal("", NULL);
    expect_refusal("65536", "65536");
    expect_refusal("-1", NULL);
    expect_refusal("1023", "1023");
    return check_summary();
}
