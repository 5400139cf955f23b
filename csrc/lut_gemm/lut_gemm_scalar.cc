// Portable reference path: decodes the packed panel and sums int32 products (no padding, so no
// correction). Slow but obviously right; every SIMD kernel must match it bit for bit.
#include "lut_gemm/lut_gemm.h"

namespace pq {

void lut_compute_scalar(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* w = p.panels + panel * groups * kLutPanelCols;
  const size_t col0 = panel * kLutPanelCols;
  const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
  for (size_t m = m0; m < m1; ++m) {
    int32_t acc[kLutPanelCols] = {0};
    const uint8_t* a = p.a_codes + m * p.lda_codes;
    for (size_t k = 0; k < p.k; ++k) {
      const int8_t* row = p.cb->prod[a[k] & 3];
      const uint8_t* wg = w + (k / 4) * kLutPanelCols;
      const int sh = kLutSlotShift[k % 4];
      for (size_t c = 0; c < cols; ++c) acc[c] += row[(wg[c] >> sh) & 3];
    }
    int32_t* out = p.c + m * p.ldc + col0;
    for (size_t c = 0; c < cols; ++c) out[c] = acc[c] + p.corr;
  }
}

}  // namespace pq
