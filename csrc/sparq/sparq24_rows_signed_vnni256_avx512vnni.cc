// The AVX-VNNI signed-rows 2:4 kernel (sparq24_rows_signed_avxvnni.cc) in its EVEX form (AVX-512
// VNNI + VL, _mm256_dpwssd_epi32): the same operation, tested natively on any AVX-512 VNNI CPU.
#define PQ_S24_MAC(acc, x, v) _mm256_dpwssd_epi32(acc, x, v)
#define PQ_S24_COMPUTE_SIGNED sparq24_compute_rows_signed_vnni256_avx512
#include "sparq/sparq24_rows.inc"
