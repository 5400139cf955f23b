// AVX-VNNI build of the 2:4 kernel for more than two table rows (sparq24_rows.inc): VEX
// vpdpbusd (Intel Alder Lake and later client CPUs, Zen 5).
#include "core/dpbusd_vex.h"

#define PQ_S24_MAC(acc, x, v) dpbusd_vex(acc, x, v)
#define PQ_S24_PAIRED 1  // two k groups per vpdpbusd lane
#define PQ_S24_COMPUTE sparq24_compute_rows_avxvnni
#include "sparq/sparq24_rows.inc"
