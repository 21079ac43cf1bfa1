/* Reading msgpack integers, for the C tests, the C test worker and the C
 * benchmarks (which link libmultifrost only, so they decode results by hand). */
#ifndef MF_MSGPACK_INT_H
#define MF_MSGPACK_INT_H

#include <stddef.h>
#include <stdint.h>

/* Reads the msgpack integer at the start of [p, p+len). Returns the bytes it
 * takes, or 0 when there is none (NULL, empty, another type, truncated). */
static inline size_t msgpack_read_int(const uint8_t *p, size_t len, long long *out) {
    if (!p || len < 1) return 0;
    uint8_t t = p[0];
    if (t <= 0x7f) { *out = t; return 1; }
    if (t >= 0xe0) { *out = (int8_t)t; return 1; }
    size_t n;
    switch (t) {
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xce: case 0xd2: n = 4; break;
    case 0xcf: case 0xd3: n = 8; break;
    default: return 0;
    }
    if (len < 1 + n) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[1 + i];
    if (t >= 0xd0 && n < 8 && (v >> (8 * n - 1)))  /* sign-extend */
        v |= ~(uint64_t)0 << (8 * n);
    *out = (long long)v;
    return 1 + n;
}

/* Decodes one msgpack integer occupying all of [p, p+len). 1 on success. */
static inline int msgpack_int(const uint8_t *p, size_t len, long long *out) {
    return len > 0 && msgpack_read_int(p, len, out) == len;
}

#endif
