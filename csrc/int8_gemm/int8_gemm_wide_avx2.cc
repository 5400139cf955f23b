// AVX2 9-bit rows (Int8GemmKernels::compute_wide: SPARQ's signed inputs v in [-255, 255] as
// u = v + 256 in [0, 511], handed over as a = u >> 2 and a_low = u & 3; the 256 * colsum comes
// off through the column bias).
//
// vpmaddubsw's unsigned operand is exact only up to 7 bits here, so a 9-bit u costs it two
// multiplies (4 * a + a_low) and two widenings: four multiply uops per 32 products. vpmaddwd
// multiplies int16 pairs straight into int32: with u as int16 and the weights sign-extended
// (vpmovsxbw), 16 products cost one multiply uop, like the 7-bit fast route. So from
// kTileMinRows rows on, each row block's u is rebuilt once per K block as int16 and a 4-row x
// 8-column register tile runs vpmaddwd over it: 8 accumulators, 2 weight vectors (8 columns
// x 4 k, sign-extended from the shared panels: 32 bytes of each 256-byte k group) and the
// rows' broadcasts of 4 activations (6 rows spilled: GCC hoists all six broadcasts). Each accumulator holds two partial sums per column (k pairs 0-1
// and 2-3), added at the end of the tile. Fewer rows (decode) keep the one-row vpmaddubsw tile:
// there the weight stream from memory, not the multiplies, sets the time.
#include <immintrin.h>

#include <algorithm>

#include "core/avx2_store.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kVecCols = 8;
constexpr size_t kV = kInt8PanelCols / kVecCols;
constexpr size_t kBlockGroups = 1024;  // one-row tile: K blocks of 256 KiB of a panel (L2)
constexpr size_t kPrefetchBytes = 2048;

constexpr size_t kTileMinRows = 4;
constexpr size_t kTileRows = 4;
constexpr size_t kWideBlockGroups = 256;                        // 1024 k per K block
constexpr size_t kA16Stride = kWideBlockGroups * kInt8GroupK + 32;  // int16; rows' sets differ

// --- one row x the panel, vpmaddubsw (few rows) --------------------------------------------

// acc[v] += (4 hi + lo) . w over `groups` k groups: hi <= 127 and lo <= 3 are both
// vpmaddubsw's unsigned operand (pair sums within 127 * 128 * 2), widened by 4 and by 1.
PQ_INLINE void accumulate_wide(const uint8_t* hi, const uint8_t* lo, const int8_t* b,
                               size_t groups, __m256i (&acc)[kV]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i fours = _mm256_set1_epi16(4);
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    for (size_t line = 0; line < kInt8PanelGroupBytes; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(bg) + kPrefetchBytes + line, _MM_HINT_T0);
    const __m256i ah = _mm256_set1_epi32(load_i32(hi + g * 4));
    const __m256i al = _mm256_set1_epi32(load_i32(lo + g * 4));
#pragma GCC unroll 8
    for (size_t v = 0; v < kV; ++v) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + v * 32));
      acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(_mm256_maddubs_epi16(ah, w), fours));
      acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(_mm256_maddubs_epi16(al, w), ones));
    }
  }
}

void row_tile(const uint8_t* hi, const uint8_t* lo, const int8_t* b, size_t groups, int32_t* c,
              size_t nc, const int32_t* bias, bool accumulate_c) {
  __m256i acc[kV];
  for (size_t v = 0; v < kV; ++v) acc[v] = _mm256_setzero_si256();
  accumulate_wide(hi, lo, b, groups, acc);
  alignas(32) int32_t sums[kV * kVecCols];
  for (size_t v = 0; v < kV; ++v)
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + v * kVecCols), acc[v]);
  store_tile_rows(sums, kV * kVecCols, 1, c, 0, nc, bias, accumulate_c);
}

// Panels, then K blocks (one row streams the panel once, K unblocked; more rows reuse each
// 256 KiB K block from L2), then rows.
void rows_one_at_a_time(const Int8GemmProblem& p, const uint8_t* a, size_t m0, size_t m1,
                        size_t panel) {
  const size_t col0 = panel * kInt8PanelCols;
  const size_t nc = std::min(kInt8PanelCols, p.n - col0);
  const int32_t* bias = p.col_bias ? p.col_bias + col0 : nullptr;
  const size_t block = m1 - m0 == 1 ? p.k_groups : kBlockGroups;
  for (size_t kb = 0; kb < p.k_groups; kb += block) {
    const size_t groups = std::min(block, p.k_groups - kb);
    const int8_t* b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
    for (size_t m = m0; m < m1; ++m) {
      const size_t at = m * p.lda + kb * kInt8GroupK;
      row_tile(a + at, p.a_low + at, b, groups, p.c + m * p.ldc + col0, nc, bias, kb > 0);
    }
  }
}

// --- 4 rows x 8 columns, vpmaddwd on int16 ----------------------------------------------------

// sums[r][0..7] = sum over `groups` k groups of a16[r][4g..4g+3] . w[g][8 columns][4 k]
// (sums rows kInt8PanelCols apart).
// Out of line, so the register tile is allocated on its own (16 ymm).
template <size_t MR>
[[gnu::noinline]] void tile16(const int16_t* a16, const int8_t* b, size_t groups,
                              int32_t* sums) {
  // Each accumulator zeroed by its own instruction: from one shared zero GCC copies every
  // accumulator through another register once per k group.
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r)
    asm volatile("vpxor %0, %0, %0\n\tvpxor %1, %1, %1" : "=x"(acc[r][0]), "=x"(acc[r][1]));
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
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

void tile16_rows(size_t mr, const int16_t* a16, const int8_t* b, size_t groups, int32_t* sums) {
  switch (mr) {
    case 1: return tile16<1>(a16, b, groups, sums);
    case 2: return tile16<2>(a16, b, groups, sums);
    case 3: return tile16<3>(a16, b, groups, sums);
    default: return tile16<4>(a16, b, groups, sums);
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

void rows_tiled(const Int8GemmProblem& p, const uint8_t* a, size_t m0, size_t m1, size_t panel) {
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
        tile16_rows(mr, a16, b + j * kInt8GroupK, groups, sums + j);
      store_tile_rows(sums, kInt8PanelCols, mr, p.c + r0 * p.ldc + col0, p.ldc, nc,
                      p.col_bias ? p.col_bias + col0 : nullptr, kb > 0);
    }
  }
}

}  // namespace

// 9-bit rows (p.a = u >> 2, p.a_low = u & 3) in one pass.
void int8_compute_wide_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                            size_t p1) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  for (size_t panel = p0; panel < p1; ++panel) {
    if (m1 - m0 >= kTileMinRows)
      rows_tiled(p, a, m0, m1, panel);
    else
      rows_one_at_a_time(p, a, m0, m1, panel);
  }
}

}  // namespace pq
