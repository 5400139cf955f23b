// SPARQ's offset rows (sparq_gemm.cc): a signed row written as u = v + c for the plain u8 tile,
// 32 values per step. Every x86 path that takes offset rows (AVX2's pair route, the VNNI
// kernels) has AVX2. The row's two passes (its largest negative magnitude; then the excesses
// and the conversion) replace three scalar-vectorized ones that cost the route most of its gain
// on the zmm tile (Zen 4: 0.38 ms of a 1024 x 1536 -> 384 forward).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "int8_gemm/int8_gemm.h"
#include "sparq/sparq.h"

namespace pq {

int sparq_offset_row_avx2(uint8_t* dp, const uint8_t* dn, size_t k, int max_c, bool clamp_c,
                          Int8GroupFix* pre, size_t cap, size_t* n_pre) {
  __m256i most = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= k; i += 32)
    most = _mm256_max_epu8(most, _mm256_and_si256(
                                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp + i)),
                                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dn + i))));
  alignas(32) uint8_t lanes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), most);
  uint8_t nmax = 0;
  for (uint8_t v : lanes) nmax = std::max(nmax, v);
  for (; i < k; ++i) nmax = std::max<uint8_t>(nmax, dp[i] & dn[i]);
  if (nmax > max_c && !clamp_c) return -1;
  const uint8_t c = static_cast<uint8_t>(std::min<int>(nmax, max_c));
  const __m256i cv = _mm256_set1_epi8(static_cast<char>(c));
  const __m256i room = _mm256_set1_epi8(static_cast<char>(255 - c));
  size_t n = 0;
  // 32 values at i: their excess fixes into pre (false past cap), their offset values returned
  auto step = [&](__m256i d, __m256i neg, size_t i, __m256i* u) {
    // excess of each byte past 255 (positives: t - (255 - c)) or below 0 (negatives: |t| - c)
    const __m256i up = _mm256_subs_epu8(_mm256_andnot_si256(neg, d), room);
    const __m256i down = _mm256_subs_epu8(_mm256_and_si256(neg, d), cv);
    if (!_mm256_testz_si256(_mm256_or_si256(up, down), _mm256_set1_epi8(-1))) {
      alignas(32) uint32_t ups[8], downs[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(ups), up);
      _mm256_store_si256(reinterpret_cast<__m256i*>(downs), down);
      for (size_t g = 0; g < 8; ++g) {
        if (n + (ups[g] != 0) + (downs[g] != 0) > cap) return false;
        const uint32_t group = static_cast<uint32_t>(i / kInt8GroupK + g);
        if (ups[g]) pre[n++] = {group, ups[g]};
        if (downs[g]) pre[n++] = {group | kFixNegative, downs[g]};
      }
    }
    // max(c - |t|, 0) for negatives, min(c + t, 255) else
    *u = _mm256_blendv_epi8(_mm256_adds_epu8(d, cv), _mm256_subs_epu8(cv, d), neg);
    return true;
  };
  __m256i u;
  for (i = 0; i + 32 <= k; i += 32) {
    if (!step(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp + i)),
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dn + i)), i, &u))
      return -1;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dp + i), u);
  }
  if (i < k) {  // the tail, zero padded (no excess there), only its own bytes written back
    alignas(32) uint8_t d[32] = {0}, neg[32] = {0};
    std::memcpy(d, dp + i, k - i);
    std::memcpy(neg, dn + i, k - i);
    if (!step(_mm256_load_si256(reinterpret_cast<const __m256i*>(d)),
              _mm256_load_si256(reinterpret_cast<const __m256i*>(neg)), i, &u))
      return -1;
    _mm256_store_si256(reinterpret_cast<__m256i*>(d), u);
    std::memcpy(dp + i, d, k - i);
  }
  *n_pre = n;
  return c;
}

}  // namespace pq
