/* Connect mode: reaches a running worker by service id (or tcp:// endpoint)
 * and calls it. Start the worker first:   math_worker math-service &
 * then:                                   connect_parent math-service */
#include <multifrost.h>

#include <stdio.h>

int main(int argc, char **argv) {
    const char *target = argc > 1 ? argv[1] : "math-service";
    mf_options *o = mf_options_new();
    mf_options_set_connect_timeout(o, 5000);
    mf_parent *p = NULL;
    mf_status s = mf_connect(target, o, &p);
    mf_options_free(o);
    if (s != MF_OK) {
        fprintf(stderr, "connect %s: %s: %s\n", target, mf_status_name(s), mf_last_error());
        return 1;
    }
    char *result = NULL;
    s = mf_call_json(p, "multiply", "[6, 7]", 0, &result);
    if (s == MF_OK) {
        printf("%s: multiply(6, 7) = %s\n", target, result);
        mf_string_free(result);
    } else {
        fprintf(stderr, "call: %s: %s\n", mf_status_name(s), mf_last_error());
    }
    mf_parent_close(p);
    return s == MF_OK ? 0 : 1;
}
