/* mf_version() is Cargo.toml's version and matches the header's constants;
 * mf_status_name names every status. */
#include "check.h"

#include <stdio.h>

#ifndef CARGO_VERSION
#error "CARGO_VERSION must be Cargo.toml's package version"
#endif

int main(void) {
    const char *v = mf_version();
    CHECK(v != NULL, "mf_version() is NULL");
    CHECK_STR_EQ(v, CARGO_VERSION);
    char from_header[64];
    snprintf(from_header, sizeof from_header, "%d.%d.%d", MF_VERSION_MAJOR, MF_VERSION_MINOR, MF_VERSION_PATCH);
    CHECK_STR_EQ(v, from_header);
    CHECK(mf_version() == v, "mf_version() is static storage");

    CHECK_STR_EQ(mf_status_name(MF_OK), "MF_OK");
    CHECK_STR_EQ(mf_status_name(MF_ERR_INVALID_ARGUMENT), "MF_ERR_INVALID_ARGUMENT");
    CHECK_STR_EQ(mf_status_name(MF_ERR_TIMEOUT), "MF_ERR_TIMEOUT");
    CHECK_STR_EQ(mf_status_name(MF_ERR_REMOTE), "MF_ERR_REMOTE");
    CHECK_STR_EQ(mf_status_name(MF_ERR_CIRCUIT_OPEN), "MF_ERR_CIRCUIT_OPEN");
    CHECK_STR_EQ(mf_status_name(MF_ERR_WORKER_EXITED), "MF_ERR_WORKER_EXITED");
    CHECK_STR_EQ(mf_status_name(MF_ERR_NOT_FOUND), "MF_ERR_NOT_FOUND");
    CHECK_STR_EQ(mf_status_name(MF_ERR_ALREADY_RUNNING), "MF_ERR_ALREADY_RUNNING");
    CHECK_STR_EQ(mf_status_name(MF_ERR_PROTOCOL), "MF_ERR_PROTOCOL");
    CHECK_STR_EQ(mf_status_name(MF_ERR_IO), "MF_ERR_IO");
    CHECK_STR_EQ(mf_status_name(MF_ERR_CLOSED), "MF_ERR_CLOSED");
    CHECK_STR_EQ(mf_status_name(MF_ERR_PANIC), "MF_ERR_PANIC");
    /* The values never change meaning. */
    CHECK(MF_OK == 0 && MF_ERR_INVALID_ARGUMENT == 1 && MF_ERR_TIMEOUT == 2 && MF_ERR_REMOTE == 3 &&
              MF_ERR_CIRCUIT_OPEN == 4 && MF_ERR_WORKER_EXITED == 5 && MF_ERR_NOT_FOUND == 6 &&
              MF_ERR_ALREADY_RUNNING == 7 && MF_ERR_PROTOCOL == 8 && MF_ERR_IO == 9 && MF_ERR_CLOSED == 10 &&
              MF_ERR_PANIC == 11,
          "status values changed");
    /* Before any failure, the last error is empty. */
    CHECK_STR_EQ(mf_last_error(), "");
    printf("libmultifrost %s\n", v);
    return check_summary();
}
