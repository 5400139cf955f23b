// vpdpbusd emulated exactly in AVX2, for the test-only builds of the ymm VNNI kernel sources
// (csrc/tools/*_vnni256_emu_avx2.cc), so their tiling, edges and K blocking run on CPUs without
// VNNI. Only the native test driver links those builds.
#pragma once
#include <immintrin.h>

namespace pq {

// acc + per int32 lane sum of 4 u8 x s8 products: even bytes and odd bytes widened to int16
// (u8 zero-extended, s8 sign-extended), vpmaddwd sums the two products of each half exactly.
inline __m256i dpbusd_emulated(__m256i acc, __m256i a, __m256i w) {
  const __m256i low = _mm256_set1_epi16(0x00ff);
  const __m256i a_even = _mm256_and_si256(a, low), a_odd = _mm256_srli_epi16(a, 8);
  const __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
  const __m256i w_odd = _mm256_srai_epi16(w, 8);
  const __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(a_even, w_even),
                                       _mm256_madd_epi16(a_odd, w_odd));
  return _mm256_add_epi32(acc, sum);
}

}  // namespace pq
