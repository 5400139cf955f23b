// DeepGEMM kernel, AVX2: 16-entry product tables in a register, one pshufb per 32 products.
// Tile: 3 rows x one 64-column panel (2 ymm). Per packed group of 4 k and per row:
//   index = (pre-shifted weight bits, masked once per group and shared by the 3 rows) | (activation
//   dword broadcast), pshufb, vpaddb into 8-bit lanes.
// The table holds the products biased by -pmin (0..pmax-pmin), so the 8-bit lanes are unsigned
// and may sum LutCodebook::u8_products = floor(255 / (pmax - pmin)) products (never fewer than
// the signed int8 count min(127 / pmax, 128 / -pmin)); they are then widened to uint16 (whole
// words + the odd bytes, vpsrlw 8) and to int32 after at most 256 widenings. The bias is
// removed by the constant correction K_pad * pmin.
#include <immintrin.h>

#include <cstring>

#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

constexpr int kMR = 3;

inline __m256i bcast_dword(const uint32_t* p) { return _mm256_set1_epi32(static_cast<int>(*p)); }

// Keeps `v` in a register at this point: stops GCC from reassociating the 8-bit adds into a tree
// that holds every lookup result live at once (that spills the 16 ymm registers).
#define PQ_PIN(v) __asm__("" : "+x"(v))

// uint8 lanes of `v` (32 columns) into uint16 accumulators in memory: words[16] += v as words
// (even + 256 * odd, mod 2^16), odd[16] += v >> 8. The even sum is words - 256 * odd.
inline void widen_add(__m256i v, uint16_t* words, uint16_t* odd) {
  __m256i* w = reinterpret_cast<__m256i*>(words);
  __m256i* o = reinterpret_cast<__m256i*>(odd);
  _mm256_store_si256(w, _mm256_add_epi16(_mm256_load_si256(w), v));
  _mm256_store_si256(o, _mm256_add_epi16(_mm256_load_si256(o), _mm256_srli_epi16(v, 8)));
}

// LPW: lookups per 8-bit lane before widening when below one group (1 or 2); 4 means every
// `gpw` whole groups.
template <int R, int LPW>
void tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const __m256i tp = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_p)));
  const __m256i tq = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_q)));
  const __m256i m0c = _mm256_set1_epi8(0x0C), m03 = _mm256_set1_epi8(0x03);
  const size_t gpw = LPW == 4 ? static_cast<size_t>(p.cb->u8_products / 4) : 1;
  // widenings per uint16 block <= 256 (each adds <= 255)
  const size_t block = LPW == 4 ? 256 * gpw : (LPW == 2 ? 128 : 64);
  const uint32_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_deep + (m0 + r) * p.k_pad;
  alignas(32) uint16_t words[R][2][16], odd[R][2][16];
  __m256i v[R][2];
  for (size_t gb = 0; gb < groups; gb += block) {
    const size_t ge = gb + block < groups ? gb + block : groups;
    std::memset(words, 0, sizeof(words));
    std::memset(odd, 0, sizeof(odd));
    for (int r = 0; r < R; ++r) v[r][0] = v[r][1] = _mm256_setzero_si256();
    auto widen_all = [&]() {
      for (int r = 0; r < R; ++r) {
        widen_add(v[r][0], words[r][0], odd[r][0]);
        widen_add(v[r][1], words[r][1], odd[r][1]);
        v[r][0] = v[r][1] = _mm256_setzero_si256();
      }
    };
    for (size_t g0 = gb; g0 < ge; g0 += gpw) {
      const size_t g1 = g0 + gpw < ge ? g0 + gpw : ge;
      for (size_t g = g0; g < g1; ++g) {
        const __m256i* wg = reinterpret_cast<const __m256i*>(wp + g * 64);
        __m256i b0 = _mm256_loadu_si256(wg), b1 = _mm256_loadu_si256(wg + 1);
#pragma GCC unroll 4
        for (int s = 0; s < 4; ++s) {
          // weight codes of this slot, already at their index bits (slots 2, 3: one >>4 first)
          if (s == 2) {
            b0 = _mm256_srli_epi16(b0, 4);
            b1 = _mm256_srli_epi16(b1, 4);
          }
          const __m256i mask = (s & 1) ? m03 : m0c;
          const __m256i w0 = _mm256_and_si256(b0, mask), w1 = _mm256_and_si256(b1, mask);
          const __m256i t = (s & 1) ? tq : tp;
#pragma GCC unroll 4
          for (int r = 0; r < R; ++r) {
            const __m256i av = bcast_dword(arow[r] + g * 4 + s);
            v[r][0] = _mm256_add_epi8(v[r][0], _mm256_shuffle_epi8(t, _mm256_or_si256(w0, av)));
            v[r][1] = _mm256_add_epi8(v[r][1], _mm256_shuffle_epi8(t, _mm256_or_si256(w1, av)));
            PQ_PIN(v[r][0]);
            PQ_PIN(v[r][1]);
          }
          if (LPW < 4 && (s + 1) % LPW == 0) widen_all();
        }
      }
      if (LPW == 4) widen_all();
    }
    uint32_t* acc = reinterpret_cast<uint32_t*>(acc32);  // sums wrap modulo 2^32 (see driver)
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 16; ++i) {
          const uint16_t o = odd[r][h][i];
          acc[r * 64 + h * 32 + 2 * i] += static_cast<uint16_t>(words[r][h][i] - (o << 8));
          acc[r * 64 + h * 32 + 2 * i + 1] += o;
        }
  }
}

template <int LPW>
void run_rows(const LutProblem& p, size_t m0, size_t rows, size_t panel, int32_t* acc32) {
  switch (rows) {
    case 3: tile<3, LPW>(p, m0, panel, acc32); break;
    case 2: tile<2, LPW>(p, m0, panel, acc32); break;
    default: tile<1, LPW>(p, m0, panel, acc32); break;
  }
}

}  // namespace

// DeepGEMM activations (see prepare_deep in lut_gemm_driver.cc): 8 codes per step, each
// replicated into a dword by vpshufb, odd k shifted to bits 3:2.
void lut_prepare_deep_avx2(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint32_t* out,
                           size_t m0, size_t m1) {
  const __m256i rep = _mm256_set_epi8(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4,
                                      3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m256i odd = _mm256_set_epi32(-1, 0, -1, 0, -1, 0, -1, 0);
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint32_t* d = out + m * k_pad;
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
      int64_t c8;
      std::memcpy(&c8, src + i, 8);
      const __m256i c = _mm256_set1_epi64x(c8);
      const __m256i r = _mm256_shuffle_epi8(c, rep);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                          _mm256_blendv_epi8(r, _mm256_slli_epi32(r, 2), odd));
    }
    for (; i < k; ++i) d[i] = (static_cast<uint32_t>(src[i]) << (2 * (i & 1))) * 0x01010101u;
    for (; i < k_pad; ++i) d[i] = 0;
  }
}

void lut_deepgemm_avx2(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t col0 = panel * kLutPanelCols;
  const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
  const int lpw = p.cb->u8_products >= 4 ? 4 : p.cb->u8_products >= 2 ? 2 : 1;
  for (size_t m = m0; m < m1; m += kMR) {
    const size_t rows = m1 - m < kMR ? m1 - m : kMR;
    alignas(32) int32_t acc32[kMR * 64] = {0};
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
