// AVX2 9-bit rows (Int8GemmKernels::compute_wide: SPARQ's signed inputs v in [-255, 255] as
// u = v + 256 in [0, 511], handed over as a = u >> 2 and a_low = u & 3; the 256 * colsum comes
// off through the column bias).
//
// vpmaddubsw's unsigned operand is exact only up to 7 bits here, so a 9-bit u costs it two
// multiplies (4 * a + a_low) and two widenings (int8_gemm_avx2.cc's one-row tile, kept for
// decode, where the weight stream sets the time). vpmaddwd multiplies int16 pairs straight into
// int32: with u as int16 and the weights sign-extended (vpmovsxbw), 16 products cost one
// multiply. Here each row block's u is rebuilt once per K block as int16 and a 4-row x 8-column
// register tile runs vpmaddwd over it: 8 accumulators, 2 weight vectors (8 columns x 4 k:
// 32 bytes of each 256-byte k group of the shared panels) and a broadcast of 4 activations per
// row (a 6-row tile spilled: GCC hoists all six broadcasts). Each accumulator holds two partial
// sums per column (k 0-1 and 2-3), added at the end of the tile.
#include <immintrin.h>

#include <algorithm>

#include "core/avx2_store.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kVecCols = 8;
constexpr size_t kTileRows = 4;
constexpr size_t kWideBlockGroups = 256;                            // 1024 k per K block
constexpr size_t kWidePrefetchBytes = 4096;                         // 16 k groups ahead
constexpr size_t kA16Stride = kWideBlockGroups * kInt8GroupK + 32;  // int16; rows' sets differ

// sums[r][0..7] = sum over `groups` k groups of a16[r][4g..4g+3] . w[g][8 columns][4 k]
// (sums rows kInt8PanelCols apart).
// Out of line, so the register tile is allocated on its own (16 ymm).
// prefetch (a K block's first column slice of its first row block): whole k groups
// kWidePrefetchBytes ahead. That slice reads 32 bytes of each 256-byte group, a strided walk
// with few loads in flight; from DRAM (Zen 4, AVX2 tier, 4096 -> 14336) M = 4 took 9.7 ms
// without it and 6.1-7.2 ms with 2-6 KiB (M = 8: 12.7 -> 9.1-9.7 ms).
template <size_t MR>
[[gnu::noinline]] void tile16(const int16_t* a16, const int8_t* b, size_t groups, bool prefetch,
                              int32_t* sums) {
  // Each accumulator zeroed by its own instruction: from one shared zero GCC copies every
  // accumulator through another register once per k group.
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r)
    asm volatile("vpxor %0, %0, %0\n\tvpxor %1, %1, %1" : "=x"(acc[r][0]), "=x"(acc[r][1]));
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    if (prefetch) prefetch_panel_group(bg + kWidePrefetchBytes);
    // columns 0-3 and 4-7, each as int16 [column][4 k]
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
    const __m256i w1 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg + 16)));
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi64x(load_i64(a16 + r * kA16Stride + g * kInt8GroupK));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, w0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, w1));
    }
  }
  // [c0 c0' c1 c1' c2 c2' c3 c3'] + [c4 ...]: hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r) {
    const __m256i s = _mm256_hadd_epi32(acc[r][0], acc[r][1]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + r * kInt8PanelCols),
                       _mm256_permute4x64_epi64(s, 0xD8));
  }
}

void tile16_rows(size_t mr, const int16_t* a16, const int8_t* b, size_t groups, bool pf,
                 int32_t* sums) {
  switch (mr) {
    case 1: return tile16<1>(a16, b, groups, pf, sums);
    case 2: return tile16<2>(a16, b, groups, pf, sums);
    case 3: return tile16<3>(a16, b, groups, pf, sums);
    default: return tile16<4>(a16, b, groups, pf, sums);
  }
}

// dst[r][i] = 4 hi[r][i] + lo[r][i] as int16, i < len (a multiple of 4), rows r < mr.
void rebuild_u16(const uint8_t* hi, const uint8_t* lo, size_t lda, size_t mr, size_t len,
                 int16_t* dst) {
  for (size_t r = 0; r < mr; ++r) {
    const uint8_t* h = hi + r * lda;
    const uint8_t* l = lo + r * lda;
    int16_t* d = dst + r * kA16Stride;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const __m256i vh = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
      const __m256i vl = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(l + i)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                          _mm256_add_epi16(_mm256_slli_epi16(vh, 2), vl));
    }
    for (; i < len; ++i) d[i] = static_cast<int16_t>(4 * h[i] + l[i]);
  }
}

}  // namespace

void int8_wide_rows_tiled_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t panel) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const size_t col0 = panel * kInt8PanelCols;
  const size_t nc = std::min(kInt8PanelCols, p.n - col0);
  alignas(32) int16_t a16[kTileRows * kA16Stride];
  alignas(32) int32_t sums[kTileRows * kInt8PanelCols];
  for (size_t kb = 0; kb < p.k_groups; kb += kWideBlockGroups) {
    const size_t groups = std::min(kWideBlockGroups, p.k_groups - kb);
    const int8_t* b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
    for (size_t r0 = m0; r0 < m1; r0 += kTileRows) {
      const size_t mr = std::min(kTileRows, m1 - r0);
      const size_t at = r0 * p.lda + kb * kInt8GroupK;
      rebuild_u16(a + at, p.a_low + at, p.lda, mr, groups * kInt8GroupK, a16);
      for (size_t j = 0; j < nc; j += kVecCols)
        tile16_rows(mr, a16, b + j * kInt8GroupK, groups, j == 0 && r0 == m0, sums + j);
      store_tile_rows(sums, kInt8PanelCols, mr, p.c + r0 * p.ldc + col0, p.ldc, nc,
                      p.col_bias ? p.col_bias + col0 : nullptr, kb > 0);
    }
  }
}

}  // namespace pq
