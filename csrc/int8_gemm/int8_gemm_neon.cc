// NEON path (AArch64 with the dot-product extension): sdot s8 x s8 -> s32, 4-way.
// Activations arrive as s8 (the driver flips uint8 by 128 and adds 128 * column sums back).
// Register tile: 4 rows x 16 columns (16 accumulators, 4 weight registers, 1 broadcast).
#include <arm_neon.h>

#include <cstring>

#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kMR = 4;
constexpr size_t kSubCols = 16;
constexpr size_t kBlockGroups = 256;

template <size_t MR>
void tile(const int8_t* a, size_t lda, const int8_t* b, size_t groups, int32_t* c, size_t ldc,
          size_t nc, const int32_t* bias, bool accumulate) {
  int32x4_t acc[MR][4];
  for (size_t r = 0; r < MR; ++r)
    for (size_t j = 0; j < 4; ++j) acc[r][j] = vdupq_n_s32(0);
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    const int8x16_t b0 = vld1q_s8(bg), b1 = vld1q_s8(bg + 16), b2 = vld1q_s8(bg + 32),
                    b3 = vld1q_s8(bg + 48);
    for (size_t r = 0; r < MR; ++r) {
      int32_t word;
      std::memcpy(&word, a + r * lda + g * 4, 4);
      const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(word));
      acc[r][0] = vdotq_s32(acc[r][0], b0, av);
      acc[r][1] = vdotq_s32(acc[r][1], b1, av);
      acc[r][2] = vdotq_s32(acc[r][2], b2, av);
      acc[r][3] = vdotq_s32(acc[r][3], b3, av);
    }
  }
  for (size_t r = 0; r < MR; ++r) {
    int32_t sums[kSubCols];
    for (size_t j = 0; j < 4; ++j) vst1q_s32(sums + 4 * j, acc[r][j]);
    int32_t* c_row = c + r * ldc;
    for (size_t col = 0; col < nc; ++col) {
      // uint32 adds: wrap-around is defined, as on every other path
      uint32_t v = static_cast<uint32_t>(sums[col]);
      if (accumulate)
        v += static_cast<uint32_t>(c_row[col]);
      else if (bias)
        v += static_cast<uint32_t>(bias[col]);
      c_row[col] = static_cast<int32_t>(v);
    }
  }
}

void tile_dispatch(size_t mr, const int8_t* a, size_t lda, const int8_t* b, size_t groups,
                   int32_t* c, size_t ldc, size_t nc, const int32_t* bias, bool accumulate) {
  switch (mr) {
    case 4: return tile<4>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 3: return tile<3>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    case 2: return tile<2>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
    default: return tile<1>(a, lda, b, groups, c, ldc, nc, bias, accumulate);
  }
}

}  // namespace

void int8_compute_neon(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const int8_t* a = static_cast<const int8_t*>(p.a);
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
          tile_dispatch(mr, a + m * p.lda + kb * kInt8GroupK, p.lda,
                        b + sub * kSubCols * kInt8GroupK, groups, p.c + m * p.ldc + col, p.ldc,
                        sub_nc, bias, kb > 0);
        }
      }
    }
  }
}

}  // namespace pq
