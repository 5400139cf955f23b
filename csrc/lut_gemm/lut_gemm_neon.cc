// DeepGEMM kernel, NEON: the scheme of lut_gemm_avx2.cc with tbl. One vqtbl1q_u8 per 16
// products; 64 columns = 4 q-registers per row, 4 rows per tile (16 accumulators).
// tbl returns 0 for indices >= 16, so the index bytes are kept clean (codes masked, activation
// bytes hold only their code): index = (w & mask) | a, exactly 0..15.
// Products are biased by -pmin into uint8 lanes (LutCodebook::u8_products per widening), widened
// to uint16 (whole words + odd bytes) in memory, flushed to int32 every <= 256 widenings.
#include <arm_neon.h>

#include <cstring>

#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

constexpr int kMR = 4;

inline void widen_add(uint8x16_t v, uint16_t* words, uint16_t* odd) {
  const uint16x8_t v16 = vreinterpretq_u16_u8(v);
  vst1q_u16(words, vaddq_u16(vld1q_u16(words), v16));
  vst1q_u16(odd, vaddq_u16(vld1q_u16(odd), vshrq_n_u16(v16, 8)));
}

template <int R, int LPW>
void tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const uint8x16_t tp = vld1q_u8(p.tab_p), tq = vld1q_u8(p.tab_q);
  const uint8x16_t m0c = vdupq_n_u8(0x0C), m03 = vdupq_n_u8(0x03);
  const size_t gpw = LPW == 4 ? static_cast<size_t>(p.cb->u8_products / 4) : 1;
  const size_t block = LPW == 4 ? 256 * gpw : (LPW == 2 ? 128 : 64);
  const uint32_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_deep + (m0 + r) * p.k_pad;
  uint16_t words[R][4][8], odd[R][4][8];
  uint8x16_t v[R][4];
  for (size_t gb = 0; gb < groups; gb += block) {
    const size_t ge = gb + block < groups ? gb + block : groups;
    std::memset(words, 0, sizeof(words));
    std::memset(odd, 0, sizeof(odd));
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) v[r][j] = vdupq_n_u8(0);
    auto widen_all = [&]() {
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 4; ++j) {
          widen_add(v[r][j], words[r][j], odd[r][j]);
          v[r][j] = vdupq_n_u8(0);
        }
    };
    for (size_t g0 = gb; g0 < ge; g0 += gpw) {
      const size_t g1 = g0 + gpw < ge ? g0 + gpw : ge;
      for (size_t g = g0; g < g1; ++g) {
        const uint8_t* wg = wp + g * 64;
        uint8x16_t b[4] = {vld1q_u8(wg), vld1q_u8(wg + 16), vld1q_u8(wg + 32), vld1q_u8(wg + 48)};
        for (int s = 0; s < 4; ++s) {
          if (s == 2)
            for (int j = 0; j < 4; ++j) b[j] = vshrq_n_u8(b[j], 4);
          const uint8x16_t mask = (s & 1) ? m03 : m0c;
          const uint8x16_t t = (s & 1) ? tq : tp;
          uint8x16_t w[4];
          for (int j = 0; j < 4; ++j) w[j] = vandq_u8(b[j], mask);
          for (int r = 0; r < R; ++r) {
            const uint8x16_t av = vreinterpretq_u8_u32(vld1q_dup_u32(arow[r] + g * 4 + s));
            for (int j = 0; j < 4; ++j)
              v[r][j] = vaddq_u8(v[r][j], vqtbl1q_u8(t, vorrq_u8(w[j], av)));
          }
          if (LPW < 4 && (s + 1) % LPW == 0) widen_all();
        }
      }
      if (LPW == 4) widen_all();
    }
    uint32_t* acc = reinterpret_cast<uint32_t*>(acc32);  // sums wrap modulo 2^32 (see driver)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 8; ++i) {
          const uint16_t o = odd[r][j][i];
          acc[r * 64 + j * 16 + 2 * i] += static_cast<uint16_t>(words[r][j][i] - (o << 8));
          acc[r * 64 + j * 16 + 2 * i + 1] += o;
        }
  }
}

template <int LPW>
void run_rows(const LutProblem& p, size_t m0, size_t rows, size_t panel, int32_t* acc32) {
  switch (rows) {
    case 4: tile<4, LPW>(p, m0, panel, acc32); break;
    case 3: tile<3, LPW>(p, m0, panel, acc32); break;
    case 2: tile<2, LPW>(p, m0, panel, acc32); break;
    default: tile<1, LPW>(p, m0, panel, acc32); break;
  }
}

}  // namespace

void lut_deepgemm_neon(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t col0 = panel * kLutPanelCols;
  const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
  const int lpw = p.cb->u8_products >= 4 ? 4 : p.cb->u8_products >= 2 ? 2 : 1;
  for (size_t m = m0; m < m1; m += kMR) {
    const size_t rows = m1 - m < kMR ? m1 - m : kMR;
    int32_t acc32[kMR * 64] = {0};
    if (lpw == 4) run_rows<4>(p, m, rows, panel, acc32);
    else if (lpw == 2) run_rows<2>(p, m, rows, panel, acc32);
    else run_rows<1>(p, m, rows, panel, acc32);
    for (size_t r = 0; r < rows; ++r) {
      int32_t* out = p.c + (m + r) * p.ldc + col0;
      for (size_t c = 0; c < cols; ++c)
        out[c] = static_cast<int32_t>(static_cast<uint32_t>(acc32[r * 64 + c]) +
                                      static_cast<uint32_t>(p.corr));
    }
  }
}

}  // namespace pq
