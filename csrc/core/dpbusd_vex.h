// The VEX `vpdpbusd` and `vpdpwssd` of AVX-VNNI on ymm, for files built with -mavxvnni
// (*_avxvnni.cc).
//
// Written as inline asm rather than _mm256_dpbusd_avx_epi32: with that intrinsic GCC 12 copies
// every accumulator through a scratch register and a stack slot on each k group (19 ymm stack
// accesses in the int8 6x16 loop, 48 in its GEMV loop; the EVEX build of the same source has
// none). "x" keeps the operands in ymm0-15, which VEX can encode.
#pragma once
#include <immintrin.h>

namespace pq {

// acc += per int32 lane, the 4 products of u8 bytes of `a` and s8 bytes of `w`
inline __m256i dpbusd_vex(__m256i acc, __m256i a, __m256i w) {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(w));
  return acc;
}

// acc += per int32 lane, the 2 products of the s16 words of `a` and `w` (no saturation)
inline __m256i dpwssd_vex(__m256i acc, __m256i a, __m256i w) {
  __asm__("%{vex%} vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(w));
  return acc;
}

}  // namespace pq
