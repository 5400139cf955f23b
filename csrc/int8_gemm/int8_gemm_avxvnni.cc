// AVX-VNNI int8 path (VEX vpdpbusd on ymm: Intel Alder Lake and later client CPUs, Zen 5): the
// ymm VNNI kernel of int8_gemm_vnni256.inc.
//
// The instruction is written as inline asm rather than _mm256_dpbusd_avx_epi32: with that
// intrinsic GCC 12 copies every accumulator through a scratch register and a stack slot on each
// k group (19 ymm stack accesses in the 6x16 loop, 48 in the GEMV loop; the EVEX build of the
// same source has none). "x" keeps the operands in ymm0-15, which VEX can encode.
#include <immintrin.h>

namespace pq {
namespace {

// acc += per int32 lane, the 4 products of u8 bytes of `a` and s8 bytes of `w`
inline __m256i dpbusd_vex(__m256i acc, __m256i a, __m256i w) {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(w));
  return acc;
}

}  // namespace
}  // namespace pq

#define PQ_VNNI256_DPBUSD dpbusd_vex
#define PQ_VNNI256_COMPUTE int8_compute_avxvnni
#define PQ_VNNI256_COMPUTE_WIDE int8_compute_wide_avxvnni
#include "int8_gemm/int8_gemm_vnni256.inc"
