// Test-only build of the ymm VNNI low-bit kernel (csrc/lowbit_gemm/lowbit_gemm_vnni256.inc)
// with vpdpbusd emulated exactly in AVX2 (tools/dpbusd_emulated.h).
#include "tools/dpbusd_emulated.h"

#define PQ_LB256_DPBUSD dpbusd_emulated
#define PQ_LB256_NAME(x) x##_vnni256_emulated
#include "lowbit_gemm/lowbit_gemm_vnni256.inc"
