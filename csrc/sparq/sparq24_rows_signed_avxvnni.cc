// AVX-VNNI build of the 2:4 kernel's signed-rows twin (sparq24_rows.inc): the looked-up words
// (positive part minus negative part) and the int16 values through VEX vpdpwssd, one group per
// int32 lane (the unsigned rows keep the paired vpdpbusd build, sparq24_rows_avxvnni.cc).
#include "core/dpbusd_vex.h"

#define PQ_S24_MAC(acc, x, v) dpwssd_vex(acc, x, v)
#define PQ_S24_COMPUTE_SIGNED sparq24_compute_rows_signed_avxvnni
#include "sparq/sparq24_rows.inc"
