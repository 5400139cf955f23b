// NEON i8mm path (Armv8.6 int8 matrix multiply: Graviton 3/4, Apple M2+, recent Ampere): smmla
// multiplies a 2x8 s8 block of A by the transpose of a 2x8 s8 block of W into a 2x2 int32 block,
// 32 products per instruction where sdot does 16. Activations arrive as s8, as for the sdot path
// (the driver flips uint8 by 128 and adds 128 * column sums back).
//
// The shared panels hold 4 k per column per group ([K/4][64 columns][4 k]); a 2x8 weight operand
// (columns c, c+1 x 8 k) comes from two consecutive groups with one zip of 32-bit lanes:
//   zip1(group g [c..c+3], group g+1 [c..c+3]) = [c: k0-3 | c: k4-7 | c+1: k0-3 | c+1: k4-7].
// Tile: 8 rows x 8 columns = 16 accumulators (4 row pairs x 4 column pairs) + 4 weight and 4
// activation operands; per 8 k, 16 smmla, 4 zips, 12 loads. An odd last k group runs with zero
// upper halves; an odd last row is left to the sdot kernel.
#include <arm_neon.h>

#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kMR = 8;
constexpr size_t kTileCols = 8;
constexpr size_t kBlockGroups = 256;  // k groups per K block: 8 KiB of an 8-column slice

inline int8x16_t zip_lo(int8x16_t g0, int8x16_t g1) {
  return vreinterpretq_s8_s32(vzip1q_s32(vreinterpretq_s32_s8(g0), vreinterpretq_s32_s8(g1)));
}
inline int8x16_t zip_hi(int8x16_t g0, int8x16_t g1) {
  return vreinterpretq_s8_s32(vzip2q_s32(vreinterpretq_s32_s8(g0), vreinterpretq_s32_s8(g1)));
}
// 4 activations of a row in the low half, zeros above
inline int8x8_t load4(const int8_t* p) {
  return vreinterpret_s8_u32(vset_lane_u32(load_u32(p), vdup_n_u32(0), 0));
}

// Rows [0, 2P) x the tile's 8 columns (nc <= 8) for one K block; the first block starts from the
// column bias (or zero), later blocks add to C.
template <size_t P>
void tile(const int8_t* a, size_t lda, const int8_t* b, size_t groups, int32_t* c, size_t ldc,
          size_t nc, const int32_t* bias, bool accumulate) {
  int32x4_t acc[P][4];
  for (size_t p = 0; p < P; ++p)
    for (size_t j = 0; j < 4; ++j) acc[p][j] = vdupq_n_s32(0);
  size_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const int8_t* b0 = b + g * kInt8PanelGroupBytes;
    const int8_t* b1 = b0 + kInt8PanelGroupBytes;
    const int8x16_t lo0 = vld1q_s8(b0), lo1 = vld1q_s8(b0 + 16);
    const int8x16_t hi0 = vld1q_s8(b1), hi1 = vld1q_s8(b1 + 16);
    const int8x16_t w[4] = {zip_lo(lo0, hi0), zip_hi(lo0, hi0), zip_lo(lo1, hi1), zip_hi(lo1, hi1)};
    for (size_t p = 0; p < P; ++p) {
      const int8_t* ar = a + 2 * p * lda + g * 4;
      const int8x16_t av = vcombine_s8(vld1_s8(ar), vld1_s8(ar + lda));
      for (size_t j = 0; j < 4; ++j) acc[p][j] = vmmlaq_s32(acc[p][j], av, w[j]);
    }
  }
  if (g < groups) {  // odd last group: k4-7 are zero on both sides
    const int8_t* b0 = b + g * kInt8PanelGroupBytes;
    const int8x16_t lo0 = vld1q_s8(b0), lo1 = vld1q_s8(b0 + 16), zero = vdupq_n_s8(0);
    const int8x16_t w[4] = {zip_lo(lo0, zero), zip_hi(lo0, zero), zip_lo(lo1, zero),
                            zip_hi(lo1, zero)};
    for (size_t p = 0; p < P; ++p) {
      const int8_t* ar = a + 2 * p * lda + g * 4;
      const int8x16_t av = vcombine_s8(load4(ar), load4(ar + lda));
      for (size_t j = 0; j < 4; ++j) acc[p][j] = vmmlaq_s32(acc[p][j], av, w[j]);
    }
  }
  for (size_t p = 0; p < P; ++p) {
    // acc[p][j] = [r c2j, r c2j+1, r+1 c2j, r+1 c2j+1]: 64-bit zips give rows of 4 columns
    int32_t sums[2][kTileCols];
    for (size_t h = 0; h < 2; ++h) {
      const int64x2_t x = vreinterpretq_s64_s32(acc[p][2 * h]);
      const int64x2_t y = vreinterpretq_s64_s32(acc[p][2 * h + 1]);
      vst1q_s32(sums[0] + 4 * h, vreinterpretq_s32_s64(vzip1q_s64(x, y)));
      vst1q_s32(sums[1] + 4 * h, vreinterpretq_s32_s64(vzip2q_s64(x, y)));
    }
    for (size_t r = 0; r < 2; ++r) {
      int32_t* c_row = c + (2 * p + r) * ldc;
      for (size_t col = 0; col < nc; ++col) {
        // uint32 adds: wrap-around is defined, as on every other path
        uint32_t v = static_cast<uint32_t>(sums[r][col]);
        if (accumulate)
          v += static_cast<uint32_t>(c_row[col]);
        else if (bias)
          v += static_cast<uint32_t>(bias[col]);
        c_row[col] = static_cast<int32_t>(v);
      }
    }
  }
}

void tile_pairs(size_t pairs, const int8_t* a, size_t lda, const int8_t* b, size_t groups,
                int32_t* c, size_t ldc, size_t nc, const int32_t* bias, bool accumulate) {
  switch (pairs) {
    case 4: return tile<4>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 3: return tile<3>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 2: return tile<2>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    default: return tile<1>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
  }
}

}  // namespace

void int8_compute_neon_i8mm(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                            size_t p1) {
  const size_t m_pairs = m0 + (m1 - m0) / 2 * 2;
  if (m_pairs < m1) int8_compute_neon(p, m_pairs, m1, p0, p1);  // odd last row
  if (m_pairs == m0) return;
  const int8_t* a = static_cast<const int8_t*>(p.a);
  for (size_t kb = 0; kb < p.k_groups; kb += kBlockGroups) {
    const size_t groups = p.k_groups - kb < kBlockGroups ? p.k_groups - kb : kBlockGroups;
    for (size_t panel = p0; panel < p1; ++panel) {
      const int8_t* b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
      const size_t col0 = panel * kInt8PanelCols;
      const size_t nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
      for (size_t sub = 0; sub * kTileCols < nc; ++sub) {
        const size_t sub_nc = nc - sub * kTileCols < kTileCols ? nc - sub * kTileCols : kTileCols;
        const size_t col = col0 + sub * kTileCols;
        const int32_t* bias = p.col_bias ? p.col_bias + col : nullptr;
        for (size_t m = m0; m < m_pairs; m += kMR) {
          const size_t rows = m_pairs - m < kMR ? m_pairs - m : kMR;
          tile_pairs(rows / 2, a + m * p.lda + kb * kInt8GroupK, p.lda,
                     b + sub * kTileCols * kInt8GroupK, groups, p.c + m * p.ldc + col, p.ldc,
                     sub_nc, bias, kb > 0);
        }
      }
    }
  }
}

}  // namespace pq
