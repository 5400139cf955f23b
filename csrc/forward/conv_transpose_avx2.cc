// Float transposes (conv_transpose.h), AVX2: 8 x 8 register transposes in 16 x 16 blocks.
#include <immintrin.h>

#include <algorithm>

#include "forward/conv_transpose.h"

namespace pq {

void transpose_floats_avx2(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                           size_t ldd) {
  constexpr size_t kBlock = 16;
  for (size_t i0 = 0; i0 < rows; i0 += kBlock) {
    const size_t i1 = std::min(rows, i0 + kBlock);
    for (size_t j0 = 0; j0 < cols; j0 += kBlock) {
      const size_t j1 = std::min(cols, j0 + kBlock);
      size_t i = i0;
      for (; i + 8 <= i1; i += 8) {
        size_t j = j0;
        for (; j + 8 <= j1; j += 8) {
          __m256 r[8];
          for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(src + (i + q) * lds + j);
          // pairs of rows interleaved, then quads, then the two 128-bit halves
          const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
          const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
          const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
          const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
          const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
          const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
          const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
          const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
          const __m256 lo[4] = {s0, s1, s2, s3}, hi[4] = {s4, s5, s6, s7};
          for (int q = 0; q < 4; ++q) {
            _mm256_storeu_ps(dst + (j + q) * ldd + i, _mm256_permute2f128_ps(lo[q], hi[q], 0x20));
            _mm256_storeu_ps(dst + (j + 4 + q) * ldd + i,
                             _mm256_permute2f128_ps(lo[q], hi[q], 0x31));
          }
        }
        for (; j < j1; ++j)
          for (size_t q = i; q < i + 8; ++q) dst[j * ldd + q] = src[q * lds + j];
      }
      for (; i < i1; ++i)
        for (size_t j = j0; j < j1; ++j) dst[j * ldd + i] = src[i * lds + j];
    }
  }
}

}  // namespace pq
