// AVX-VNNI low-bit path (VEX vpdpbusd on ymm: Intel Alder Lake and later client CPUs, Zen 5):
// the ymm VNNI kernel of lowbit_gemm_vnni256.inc.
#include "core/dpbusd_vex.h"

#define PQ_LB256_DPBUSD dpbusd_vex
#define PQ_LB256_NAME(x) x##_avxvnni
#include "lowbit_gemm/lowbit_gemm_vnni256.inc"
