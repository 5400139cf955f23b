// AVX2 path (no VNNI): exact 16-bit multiplies with vpmaddwd. vpmaddubsw is avoided on purpose:
// its u8 x s8 pair sums saturate at int16 (255*127*2 > 32767).
// Activations arrive as int16 [M][K_pad]; weights are sign-extended from the shared panels on
// the fly (vpmovsxbw), 4 columns x 4 k per ymm. Register tile: 4 rows x 8 columns.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"

#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kMR = 4;
constexpr size_t kSubCols = 8;
constexpr size_t kBlockGroups = 256;

template <size_t MR>
__attribute__((always_inline)) inline void tile(const int16_t* a, size_t lda, const int8_t* b,
                                                size_t groups, int32_t* c, size_t ldc, size_t nc,
                                                const int32_t* bias, bool accumulate) {
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();

  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
    const __m256i b1 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg + 16)));
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi64x(load_i64(a + r * lda + g * 4));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }

  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nc)), lane);
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r) {
    // pair sums -> columns [c0 c1 c4 c5 | c2 c3 c6 c7] -> [c0 .. c7]
    __m256i v = _mm256_hadd_epi32(acc[r][0], acc[r][1]);
    v = _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));
    int32_t* c_row = c + r * ldc;
    if (accumulate)
      v = _mm256_add_epi32(v, _mm256_maskload_epi32(c_row, mask));
    else if (bias)
      v = _mm256_add_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)));
    _mm256_maskstore_epi32(c_row, mask, v);
  }
}

void tile_dispatch(size_t mr, const int16_t* a, size_t lda, const int8_t* b, size_t groups,
                   int32_t* c, size_t ldc, size_t nc, const int32_t* bias, bool accumulate) {
  switch (mr) {
    case 4: return tile<4>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 3: return tile<3>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 2: return tile<2>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    default: return tile<1>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
  }
}

}  // namespace

void int8_compute_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const int16_t* a = static_cast<const int16_t*>(p.a);
  for (size_t kb = 0; kb < p.k_groups; kb += kBlockGroups) {
    const size_t groups = p.k_groups - kb < kBlockGroups ? p.k_groups - kb : kBlockGroups;
    for (size_t panel = p0; panel < p1; ++panel) {
      const int8_t* b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
      const size_t col0 = panel * kInt8PanelCols;
      const size_t nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
      for (size_t sub = 0; sub * kSubCols < nc; ++sub) {
        const size_t sub_nc = nc - sub * kSubCols < kSubCols ? nc - sub * kSubCols : kSubCols;
        const size_t col = col0 + sub * kSubCols;
        const int32_t* bias = p.col_bias ? p.col_bias + col : nullptr;
        for (size_t m = m0; m < m1; m += kMR) {
          const size_t mr = m1 - m < kMR ? m1 - m : kMR;
          tile_dispatch(mr, a + m * p.lda + kb * kInt8GroupK, p.lda, b + sub * kSubCols * kInt8GroupK,
                        groups, p.c + m * p.ldc + col, p.ldc, sub_nc, bias, kb > 0);
        }
      }
    }
  }
}

}  // namespace pq
