// AVX-VNNI int8 path (VEX vpdpbusd on ymm: Intel Alder Lake and later client CPUs, Zen 5): the
// ymm VNNI kernel of int8_gemm_vnni256.inc with _mm256_dpbusd_avx_epi32.
#define PQ_VNNI256_DPBUSD _mm256_dpbusd_avx_epi32
#define PQ_VNNI256_COMPUTE int8_compute_avxvnni
#include "int8_gemm/int8_gemm_vnni256.inc"
