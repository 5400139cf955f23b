// Float transposes (conv_transpose.h): the baseline build and the choice per tier.
#include "forward/conv_transpose.h"

#include <algorithm>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pq {

// 16 x 16 blocks (both sides' lines stay in L1), 4 x 4 register transposes inside (SSE2:
// baseline x86-64), scalar elsewhere
void transpose_floats_baseline(const float* src, size_t lds, size_t rows, size_t cols,
                               float* dst, size_t ldd) {
  constexpr size_t kBlock = 16;
  for (size_t i0 = 0; i0 < rows; i0 += kBlock) {
    const size_t i1 = std::min(rows, i0 + kBlock);
    for (size_t j0 = 0; j0 < cols; j0 += kBlock) {
      const size_t j1 = std::min(cols, j0 + kBlock);
      size_t i = i0;
#if defined(__SSE2__)
      for (; i + 4 <= i1; i += 4) {
        size_t j = j0;
        for (; j + 4 <= j1; j += 4) {
          __m128 r0 = _mm_loadu_ps(src + i * lds + j), r1 = _mm_loadu_ps(src + (i + 1) * lds + j);
          __m128 r2 = _mm_loadu_ps(src + (i + 2) * lds + j), r3 = _mm_loadu_ps(src + (i + 3) * lds + j);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          _mm_storeu_ps(dst + j * ldd + i, r0);
          _mm_storeu_ps(dst + (j + 1) * ldd + i, r1);
          _mm_storeu_ps(dst + (j + 2) * ldd + i, r2);
          _mm_storeu_ps(dst + (j + 3) * ldd + i, r3);
        }
        for (; j < j1; ++j)
          for (size_t ii = i; ii < i + 4; ++ii) dst[j * ldd + ii] = src[ii * lds + j];
      }
#endif
      for (; i < i1; ++i)
        for (size_t j = j0; j < j1; ++j) dst[j * ldd + i] = src[i * lds + j];
    }
  }
}

void transpose_floats(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                      size_t ldd, Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx2 || isa == Isa::avx512) {
    transpose_floats_avx2(src, lds, rows, cols, dst, ldd);
    return;
  }
#endif
  transpose_floats_baseline(src, lds, rows, cols, dst, ldd);
}

}  // namespace pq
