// Test-only build of the ymm VNNI int8 kernel (csrc/int8_gemm/int8_gemm_vnni256.inc) with
// vpdpbusd emulated exactly in AVX2 (tools/dpbusd_emulated.h).
#include "tools/dpbusd_emulated.h"

#define PQ_VNNI256_DPBUSD dpbusd_emulated
#define PQ_VNNI256_COMPUTE int8_compute_vnni256_emulated
#define PQ_VNNI256_COMPUTE_WIDE int8_compute_wide_vnni256_emulated
#define PQ_VNNI256_ADD_FIXES int8_add_fixes_vnni256_emulated
#include "int8_gemm/int8_gemm_vnni256.inc"
