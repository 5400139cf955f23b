// The ymm VNNI kernel of int8_gemm_vnni256.inc in its EVEX form (AVX-512 VNNI + VL,
// _mm256_dpbusd_epi32): the same operation as the AVX-VNNI build, so any AVX-512 VNNI CPU tests
// that source natively (Debian's qemu-x86_64 does not run AVX-VNNI). Dispatch prefers the zmm
// 6x64 kernel on such CPUs; this entry exists to be tested.
#define PQ_VNNI256_DPBUSD _mm256_dpbusd_epi32
#define PQ_VNNI256_COMPUTE int8_compute_vnni256_avx512
#define PQ_VNNI256_COMPUTE_WIDE int8_compute_wide_vnni256_avx512
#define PQ_VNNI256_ADD_FIXES int8_add_fixes_vnni256_avx512
#include "int8_gemm/int8_gemm_vnni256.inc"
