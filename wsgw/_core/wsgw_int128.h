/* Exact token arithmetic shared by bucket.pyx and gate.pyx: a level counts
   1/(60 * 10**9) tokens in a 128-bit integer, so a refill of N tokens per minute over
   t ns is exactly t * N units (see bucket_py.py, the spec). gcc and clang provide
   __int128 on 64-bit targets. */
#ifndef WSGW_INT128_H
#define WSGW_INT128_H

#include <stdint.h>

typedef __int128 wsgw_i128;

#define WSGW_UNITS ((wsgw_i128)60000000000LL)
#define WSGW_MAX_TOKENS ((int64_t)1 << 62)
#define WSGW_LEVEL_FLOOR (-(wsgw_i128)WSGW_MAX_TOKENS * WSGW_UNITS)
#define WSGW_LEVEL_CEIL ((wsgw_i128)WSGW_MAX_TOKENS * WSGW_UNITS)

/* Floor division by a positive divisor (C division truncates toward zero). */
static inline wsgw_i128 wsgw_floor_div(wsgw_i128 a, wsgw_i128 b) {
    wsgw_i128 q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

#endif
