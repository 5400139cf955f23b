// The ymm VNNI low-bit kernel of lowbit_gemm_vnni256.inc in its EVEX form (AVX-512 VNNI + VL,
// _mm256_dpbusd_epi32): the same operation as the AVX-VNNI build, so any AVX-512 VNNI CPU tests
// that source natively. Dispatch prefers the zmm 6x64 kernel on such CPUs; this entry exists to
// be tested.
#include <immintrin.h>

#define PQ_LB256_DPBUSD _mm256_dpbusd_epi32
#define PQ_LB256_NAME(x) x##_vnni256_avx512
#include "lowbit_gemm/lowbit_gemm_vnni256.inc"
