// AVX-512 kernels. Both use tile = up to 6 rows x one 64-column panel (one zmm).
//
// deepgemm: the DeepGEMM scheme of lut_gemm_avx2.cc in zmm: per packed group of 4 k and per row,
//   4 x (vpord with an embedded dword broadcast of the activation, vpshufb, vpaddb) = 256 products.
//
// vpermb ("beyond DeepGEMM"): a 64-entry table indexed by three 2-bit weights. The table only
//   depends on the activation triple, so all 64 possible tables are one constant 4 KiB set built
//   per call from the codebook; each lookup is a vpermb with its table as a memory operand and
//   yields 64 columns x 3 products. Entries are biased to unsigned (s - 3 pmin), summed in uint8
//   lanes for LutCodebook::u8_lookups lookups, split into even/odd uint16 lanes (vpandd /
//   vpsrlw), flushed to int32 every 256 widenings. 3 packed groups (12 k) give 4 index vectors:
//   the low 6 bits of each group byte, and the top 2 bits of the three gathered by shifts and
//   two vpternlogd selects (shared by all rows of the tile).
#include <immintrin.h>

#include <cstring>

#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

constexpr int kMR = 6;

// m ? a : b, bitwise
inline __m512i select_bits(__m512i a, __m512i b, __m512i m) {
  return _mm512_ternarylogic_epi32(a, b, m, 0xE4);
}

// ---------------------------------------------------------------- deepgemm
inline void widen_s8(__m512i& v, __m512i& lo16, __m512i& hi16) {
  lo16 = _mm512_add_epi16(lo16, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
  hi16 = _mm512_add_epi16(hi16, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(v, 1)));
  v = _mm512_setzero_si512();
}

template <int R, int LPW>
void deep_tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const __m512i tp = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_p)));
  const __m512i tq = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_q)));
  const __m512i m0c = _mm512_set1_epi8(0x0C), m03 = _mm512_set1_epi8(0x03);
  const size_t gpw = LPW == 4 ? static_cast<size_t>(p.cb->int8_products / 4) : 1;
  const size_t block = LPW == 4 ? 255 * gpw : (LPW == 2 ? 127 : 63);
  const uint32_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_deep + (m0 + r) * p.k_pad;
  __m512i v[R], lo[R], hi[R];
  for (size_t gb = 0; gb < groups; gb += block) {
    const size_t ge = gb + block < groups ? gb + block : groups;
    for (int r = 0; r < R; ++r) v[r] = lo[r] = hi[r] = _mm512_setzero_si512();
    size_t since = 0;
    for (size_t g = gb; g < ge; ++g) {
      const __m512i b = _mm512_loadu_si512(wp + g * 64);
      const __m512i s = _mm512_srli_epi16(b, 4);
      const __m512i w[4] = {_mm512_and_si512(b, m0c), _mm512_and_si512(b, m03),
                            _mm512_and_si512(s, m0c), _mm512_and_si512(s, m03)};
#pragma GCC unroll 4
      for (int sl = 0; sl < 4; ++sl) {
        const __m512i t = (sl & 1) ? tq : tp;
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
          const __m512i av = _mm512_set1_epi32(static_cast<int>(arow[r][g * 4 + sl]));
          v[r] = _mm512_add_epi8(v[r], _mm512_shuffle_epi8(t, _mm512_or_si512(w[sl], av)));
        }
        if (LPW < 4 && (sl + 1) % LPW == 0)
          for (int r = 0; r < R; ++r) widen_s8(v[r], lo[r], hi[r]);
      }
      if (LPW == 4 && ++since == gpw) {
        since = 0;
        for (int r = 0; r < R; ++r) widen_s8(v[r], lo[r], hi[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      if (LPW == 4) widen_s8(v[r], lo[r], hi[r]);
      __m512i* d = reinterpret_cast<__m512i*>(acc32 + r * 64);
      d[0] = _mm512_add_epi32(d[0], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(lo[r])));
      d[1] = _mm512_add_epi32(d[1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(lo[r], 1)));
      d[2] = _mm512_add_epi32(d[2], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(hi[r])));
      d[3] = _mm512_add_epi32(d[3], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(hi[r], 1)));
    }
  }
}

// ---------------------------------------------------------------- vpermb
inline void widen_u8(__m512i& v, __m512i& even16, __m512i& odd16, __m512i m00ff) {
  even16 = _mm512_add_epi16(even16, _mm512_and_si512(v, m00ff));
  odd16 = _mm512_add_epi16(odd16, _mm512_srli_epi16(v, 8));
  v = _mm512_setzero_si512();
}

// LPW: lookups per uint8 lane before widening when below one block (1 or 2); 4 means every
// `bpw` whole blocks of 4 lookups.
template <int R, int LPW>
void vpermb_tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4, blocks = p.k_pad / 12, per_row = p.k_pad / 3;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const uint8_t* tables = p.tables;
  const __m512i m03 = _mm512_set1_epi8(0x03), m0f = _mm512_set1_epi8(0x0F);
  const __m512i m00ff = _mm512_set1_epi16(0x00FF);
  const size_t bpw = LPW == 4 ? static_cast<size_t>(p.cb->u8_lookups / 4) : 1;
  // widenings per uint16 block <= 256 (each adds <= 255)
  const size_t block = LPW == 4 ? 256 * bpw : (LPW == 2 ? 128 : 64);
  const uint32_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_offs + (m0 + r) * per_row;
  __m512i v[R], ev[R], od[R];
  for (size_t bb = 0; bb < blocks; bb += block) {
    const size_t be = bb + block < blocks ? bb + block : blocks;
    for (int r = 0; r < R; ++r) v[r] = ev[r] = od[r] = _mm512_setzero_si512();
    size_t since = 0;
    for (size_t b = bb; b < be; ++b) {
      const uint8_t* wb = wp + b * 3 * 64;
      const __m512i x0 = _mm512_loadu_si512(wb);
      const __m512i x1 = _mm512_loadu_si512(wb + 64);
      const __m512i x2 = _mm512_loadu_si512(wb + 128);
      // top 2 bits of x0, x1, x2 -> index bits 1:0, 3:2, 5:4 (bits 7:6 are ignored by vpermb)
      const __m512i t01 = select_bits(_mm512_srli_epi16(x0, 6), _mm512_srli_epi16(x1, 4), m03);
      const __m512i x3 = select_bits(t01, _mm512_srli_epi16(x2, 2), m0f);
      const __m512i idx[4] = {x0, x1, x2, x3};
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
          const __m512i tab = _mm512_loadu_si512(tables + arow[r][b * 4 + j]);
          v[r] = _mm512_add_epi8(v[r], _mm512_permutexvar_epi8(idx[j], tab));
        }
        if (LPW < 4 && (j + 1) % LPW == 0)
          for (int r = 0; r < R; ++r) widen_u8(v[r], ev[r], od[r], m00ff);
      }
      if (LPW == 4 && ++since == bpw) {
        since = 0;
        for (int r = 0; r < R; ++r) widen_u8(v[r], ev[r], od[r], m00ff);
      }
    }
    for (int r = 0; r < R; ++r) {
      if (LPW == 4) widen_u8(v[r], ev[r], od[r], m00ff);
      alignas(64) uint16_t e[32], o[32];
      _mm512_store_si512(e, ev[r]);
      _mm512_store_si512(o, od[r]);
      int32_t* d = acc32 + r * 64;
      for (int i = 0; i < 32; ++i) {
        d[2 * i] += e[i];
        d[2 * i + 1] += o[i];
      }
    }
  }
}

template <int LPW, bool Vpermb>
void run_rows(const LutProblem& p, size_t m0, size_t rows, size_t panel, int32_t* acc32) {
#define PQ_CASE(R)                                            \
  case R:                                                     \
    if (Vpermb) vpermb_tile<R, LPW>(p, m0, panel, acc32);     \
    else deep_tile<R, LPW>(p, m0, panel, acc32);              \
    break;
  switch (rows) {
    PQ_CASE(6) PQ_CASE(5) PQ_CASE(4) PQ_CASE(3) PQ_CASE(2)
    default: PQ_CASE(1)
  }
#undef PQ_CASE
}

template <bool Vpermb>
void compute(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t col0 = panel * kLutPanelCols;
  const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
  const int per = Vpermb ? p.cb->u8_lookups : p.cb->int8_products;
  const int lpw = per >= 4 ? 4 : per >= 2 ? 2 : 1;
  for (size_t m = m0; m < m1; m += kMR) {
    const size_t rows = m1 - m < kMR ? m1 - m : kMR;
    alignas(64) int32_t acc32[kMR * 64] = {0};
    if (lpw == 4) run_rows<4, Vpermb>(p, m, rows, panel, acc32);
    else if (lpw == 2) run_rows<2, Vpermb>(p, m, rows, panel, acc32);
    else run_rows<1, Vpermb>(p, m, rows, panel, acc32);
    for (size_t r = 0; r < rows; ++r) {
      int32_t* out = p.c + (m + r) * p.ldc + col0;
      const uint32_t corr = static_cast<uint32_t>(p.corr);
      for (size_t c = 0; c < cols; ++c)
        out[c] = static_cast<int32_t>(static_cast<uint32_t>(acc32[r * 64 + c]) + corr);
    }
  }
}

}  // namespace

void lut_deepgemm_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  compute<false>(p, m0, m1, panel);
}

void lut_vpermb_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  compute<true>(p, m0, m1, panel);
}

}  // namespace pq
