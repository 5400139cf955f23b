// Output stores shared by the AVX2-and-up integer tiles (include only from files compiled with
// AVX2 flags). A masked store (vpmaskmovd) costs several times a plain one on AMD Zen, and tiles
// of short K (QuantGRU's recurrent and input GEMMs, small layers) store once per few k groups,
// so whole vectors take plain moves and only a ragged tail pays for the mask.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/macros.h"

namespace pq {

// dst[i] = x[i] + (base ? base[i] : 0) for i < valid (valid >= 1; whole vector when >= 8).
// base may equal dst (accumulate into C).
PQ_INLINE void store8_plus(int32_t* dst, const int32_t* base, __m256i x, size_t valid) {
  if (valid >= 8) {
    if (base) x = _mm256_add_epi32(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), x);
    return;
  }
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  if (base) x = _mm256_add_epi32(x, _mm256_maskload_epi32(base, mask));
  _mm256_maskstore_epi32(dst, mask, x);
}

}  // namespace pq
