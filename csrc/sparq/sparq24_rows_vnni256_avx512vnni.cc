// The AVX-VNNI 2:4 rows kernel (sparq24_rows.inc) in its EVEX form (AVX-512 VNNI + VL,
// _mm256_dpbusd_epi32): the same operation, so any AVX-512 VNNI CPU tests that source natively
// (Debian's qemu-x86_64 does not run AVX-VNNI). Dispatch prefers the zmm kernel on such CPUs.
#define PQ_S24_MAC(acc, x, v) _mm256_dpbusd_epi32(acc, x, v)
#define PQ_S24_PAIRED 1  // two k groups per vpdpbusd lane
#define PQ_S24_COMPUTE sparq24_compute_rows_vnni256_avx512
#include "sparq/sparq24_rows.inc"
