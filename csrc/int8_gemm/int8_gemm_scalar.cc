// Portable path over the packed panels (also the fallback on CPUs without AVX2/NEON). Plain
// loops in uint32 arithmetic, so wrap-around is defined; the compiler may vectorize them.
#include <cstring>

#include "int8_gemm/int8_gemm.h"

namespace pq {

void int8_compute_scalar(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  for (size_t panel = p0; panel < p1; ++panel) {
    const int8_t* b = p.panels + panel * p.k_groups * kInt8PanelGroupBytes;
    const size_t col0 = panel * kInt8PanelCols;
    const size_t nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
    for (size_t m = m0; m < m1; ++m) {
      const uint8_t* a_row = a + m * p.lda;
      uint32_t acc[kInt8PanelCols] = {0};
      for (size_t g = 0; g < p.k_groups; ++g) {
        const int8_t* bg = b + g * kInt8PanelGroupBytes;
        const uint8_t* ag = a_row + g * kInt8GroupK;
        for (size_t col = 0; col < kInt8PanelCols; ++col)
          for (size_t kk = 0; kk < kInt8GroupK; ++kk)
            acc[col] += static_cast<uint32_t>(static_cast<int32_t>(ag[kk]) * bg[col * kInt8GroupK + kk]);
      }
      int32_t* c_row = p.c + m * p.ldc + col0;
      for (size_t col = 0; col < nc; ++col) {
        uint32_t v = acc[col];
        if (p.col_bias) v += static_cast<uint32_t>(p.col_bias[col0 + col]);
        c_row[col] = static_cast<int32_t>(v);
      }
    }
  }
}

}  // namespace pq
