// AVX-VNNI int8 path (VEX vpdpbusd on ymm: Intel Alder Lake and later client CPUs, Zen 5): the
// ymm VNNI kernel of int8_gemm_vnni256.inc.
#include "core/dpbusd_vex.h"

#define PQ_VNNI256_DPBUSD dpbusd_vex
#define PQ_VNNI256_COMPUTE int8_compute_avxvnni
#define PQ_VNNI256_COMPUTE_WIDE int8_compute_wide_avxvnni
#define PQ_VNNI256_ADD_FIXES int8_add_fixes_avxvnni
#include "int8_gemm/int8_gemm_vnni256.inc"
