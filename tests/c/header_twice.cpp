// The public header included twice from C++17 (-Wall -Wextra -pedantic
// -Werror): include guards hold and the declarations have C linkage.
#include <multifrost.h>
#include <multifrost.h>

#include <cstdio>
#include <cstring>

int main() {
    const char *v = mf_version();
    mf_status s = MF_OK;
    mf_buffer empty{nullptr, 0};
    mf_buffer_free(empty);
    char expected[64];
    std::snprintf(expected, sizeof expected, "%d.%d.%d", MF_VERSION_MAJOR, MF_VERSION_MINOR, MF_VERSION_PATCH);
    if (v == nullptr || std::strcmp(v, expected) != 0 || s != 0) {
        std::printf("0 passed, 1 failed\nmf_version() = %s, header says %s\n", v ? v : "(null)", expected);
        return 1;
    }
    std::printf("mf_version() = %s\n1 passed, 0 failed\n", v);
    return 0;
}
