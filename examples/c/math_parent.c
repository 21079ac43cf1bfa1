/* Spawns the math worker, calls each of its functions, prints the results
 * and the parent's stats.
 * Usage: math_parent [--no-private-link] [worker-program [args...]]
 *        math_parent --connect <service-id-or-tcp-endpoint> */
#include <multifrost.h>

#include <stdio.h>
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

int main(int argc, char **argv) {
    const char *connect_to = NULL;
    int private_link = 1;
    if (argc > 2 && strcmp(argv[1], "--connect") == 0) {
        connect_to = argv[2];
    } else if (argc > 1 && strcmp(argv[1], "--no-private-link") == 0) {
        private_link = 0; /* every byte over ZeroMQ: the stats say transport "zmq" */
        argv[1] = argv[0]; /* drop the flag; argv[0] still locates the default worker */
        argv++;
        argc--;
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
    mf_status s = connect_to ? mf_connect(connect_to, o, &p) : mf_spawn(program, args, o, &p);
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
    printf("stats: %s\n", stats);
    mf_string_free(stats);
    mf_parent_close(p);
    return failures ? 1 : 0;
}
