// AVX-512 kernels.
//
// deepgemm: the DeepGEMM scheme of lut_gemm_avx2.cc in zmm, 6 rows x one 64-column panel: per
//   packed group of 4 k and per row, 4 x (vpord with the broadcast activation dword, vpshufb,
//   vpaddb) = 256 products into biased uint8 lanes.
//
// vpermb ("beyond DeepGEMM"): a 64-entry table indexed by three 2-bit weights. The table only
//   depends on the activation triple, so all 64 possible tables are one constant 4 KiB set built
//   from the codebook (each thread keeps its last codebook's); each lookup is a vpermb with its
//   table as a memory operand and yields 64 columns x 3 products. Entries are biased to unsigned
//   (s - 3 pmin), summed in uint8 lanes for LutCodebook::u8_lookups lookups, widened into uint16
//   words + odd bytes, flushed to int32 every 256 widenings. 3 packed groups (12 k) give 4 index
//   vectors: the low 6 bits of each group byte, and the top 2 bits of the three gathered by
//   shifts and two vpternlogd selects (shared by all rows of the tile). Tile: 3 rows x 2 panels
//   (a table load serves two vpermb), or 6 rows x 1 panel for a lone panel.
#include <immintrin.h>

#include <cstring>

#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

constexpr int kMR = 6;        // deepgemm rows
constexpr int kVpermbMR = 3;  // vpermb rows (x 2 panels)

// 16-bit logical shift right done as vpmulhuw by 2^(16-n): on Zen 4 vpsrlw competes with vpermb
// for the shuffle/shift pipes while the multiply runs beside it (measured 6-8% faster overall).
template <int N>
inline __m512i shr16(__m512i x) {
  return _mm512_mulhi_epu16(x, _mm512_set1_epi16(static_cast<short>(1u << (16 - N))));
}

// Keeps an accumulator in a register at this point (an empty asm that "modifies" it). Without
// it GCC reassociates the adds and parks the accumulators in stack memory around the widening
// (measured: vpermb 95 -> 110 MAC/cycle with it).
#define PQ_PIN_ZMM(v) __asm__("" : "+v"(v))

// m ? a : b, bitwise
inline __m512i select_bits(__m512i a, __m512i b, __m512i m) {
  return _mm512_ternarylogic_epi32(a, b, m, 0xE4);
}

// ---------------------------------------------------------------- deepgemm
// uint16 (even + 256 * odd words, odd bytes) of two accumulators -> int32 columns 0..63 added
// to d[0..3]. Even-lane sums are recovered as words - 256 * odd (mod 2^16).
inline void flush_u16(__m512i words, __m512i odd, int32_t* acc) {
  const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9,
                                          40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1,
                                          32, 0);
  const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
  const __m512i even = _mm512_sub_epi16(words, _mm512_slli_epi16(odd, 8));
  const __m512i c0 = _mm512_permutex2var_epi16(even, lo_idx, odd);  // cols 0..31
  const __m512i c1 = _mm512_permutex2var_epi16(even, hi_idx, odd);  // cols 32..63
  __m512i* d = reinterpret_cast<__m512i*>(acc);
  d[0] = _mm512_add_epi32(d[0], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(c0)));
  d[1] = _mm512_add_epi32(d[1], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(c0, 1)));
  d[2] = _mm512_add_epi32(d[2], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(c1)));
  d[3] = _mm512_add_epi32(d[3], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(c1, 1)));
}

// Biased products (p - pmin) in uint8 lanes, LutCodebook::u8_products of them per widening;
// see lut_gemm_avx2.cc for the scheme.
template <int R, int LPW>
void deep_tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const __m512i tp = _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_p)));
  const __m512i tq = _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_load_si128(reinterpret_cast<const __m128i*>(p.tab_q)));
  const __m512i m0c = _mm512_set1_epi8(0x0C), m03 = _mm512_set1_epi8(0x03);
  const size_t gpw = LPW == 4 ? static_cast<size_t>(p.cb->u8_products / 4) : 1;
  const size_t block = LPW == 4 ? 256 * gpw : (LPW == 2 ? 128 : 64);
  const uint32_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_deep + (m0 + r) * p.k_pad;
  __m512i v[R], ws[R], od[R];
#define PQ_WIDEN_DEEP()                                           \
  for (int r = 0; r < R; ++r) {                                   \
    ws[r] = _mm512_add_epi16(ws[r], v[r]);                        \
    od[r] = _mm512_add_epi16(od[r], shr16<8>(v[r]));              \
    v[r] = _mm512_setzero_si512();                                \
  }
  for (size_t gb = 0; gb < groups; gb += block) {
    const size_t ge = gb + block < groups ? gb + block : groups;
    for (int r = 0; r < R; ++r) v[r] = ws[r] = od[r] = _mm512_setzero_si512();
    for (size_t g0 = gb; g0 < ge; g0 += gpw) {
      const size_t g1 = g0 + gpw < ge ? g0 + gpw : ge;
      for (size_t g = g0; g < g1; ++g) {
        const __m512i b = _mm512_loadu_si512(wp + g * 64);
        const __m512i s = shr16<4>(b);
        const __m512i w[4] = {_mm512_and_si512(b, m0c), _mm512_and_si512(b, m03),
                              _mm512_and_si512(s, m0c), _mm512_and_si512(s, m03)};
#pragma GCC unroll 4
        for (int sl = 0; sl < 4; ++sl) {
          const __m512i t = (sl & 1) ? tq : tp;
#pragma GCC unroll 6
          for (int r = 0; r < R; ++r) {
            const __m512i av = _mm512_set1_epi32(static_cast<int>(arow[r][g * 4 + sl]));
            v[r] = _mm512_add_epi8(v[r], _mm512_shuffle_epi8(t, _mm512_or_si512(w[sl], av)));
            PQ_PIN_ZMM(v[r]);
          }
          if (LPW < 4 && (sl + 1) % LPW == 0) PQ_WIDEN_DEEP()
        }
      }
      if (LPW == 4) PQ_WIDEN_DEEP()
    }
    for (int r = 0; r < R; ++r) flush_u16(ws[r], od[r], acc32 + r * 64);
  }
#undef PQ_WIDEN_DEEP
}

// ---------------------------------------------------------------- vpermb

// R rows x NP panels; each table (one per row and lookup) is loaded once and used for NP panels.
// LPW: lookups per uint8 lane before widening when below one block (1 or 2); 4 means every
// `bpw` whole blocks of 4 lookups. All accumulators stay in registers (R=3, NP=2: 6 uint8 + 12
// uint16 + 8 index vectors). Widening adds the whole 16-bit word (even + 256 * odd, mod 2^16) to
// one accumulator and the odd byte (vpsrlw 8) to another; the even sum is recovered at the flush.
template <int R, int NP, int LPW>
void vpermb_tile(const LutProblem& p, size_t m0, size_t panel, int32_t* acc32) {
  const size_t groups = p.k_pad / 4, blocks = p.k_pad / 12, per_row = p.k_pad / 3;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const size_t panel_stride = groups * kLutPanelCols;
  const uint8_t* tables = p.tables;
  const __m512i m03 = _mm512_set1_epi8(0x03), m0f = _mm512_set1_epi8(0x0F);
  const size_t bpw = LPW == 4 ? static_cast<size_t>(p.cb->u8_lookups / 4) : 1;
  // widenings per uint16 block <= 256 (each adds <= 255)
  const size_t block = LPW == 4 ? 256 * bpw : (LPW == 2 ? 128 : 64);
  const uint16_t* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = p.a_offs + (m0 + r) * per_row;
  __m512i v[R][NP], ev[R][NP], od[R][NP];
#define PQ_WIDEN()                                                         \
  for (int r = 0; r < R; ++r)                                              \
    for (int q = 0; q < NP; ++q) {                                         \
      ev[r][q] = _mm512_add_epi16(ev[r][q], v[r][q]);                      \
      od[r][q] = _mm512_add_epi16(od[r][q], shr16<8>(v[r][q]));       \
      v[r][q] = _mm512_setzero_si512();                                    \
    }
  for (size_t bb = 0; bb < blocks; bb += block) {
    const size_t be = bb + block < blocks ? bb + block : blocks;
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) v[r][q] = ev[r][q] = od[r][q] = _mm512_setzero_si512();
    for (size_t b0 = bb; b0 < be; b0 += bpw) {
      const size_t b1 = b0 + bpw < be ? b0 + bpw : be;
      for (size_t b = b0; b < b1; ++b) {
        __m512i idx[NP][4];
        for (int q = 0; q < NP; ++q) {
          const uint8_t* wb = wp + q * panel_stride + b * 3 * 64;
          idx[q][0] = _mm512_loadu_si512(wb);
          idx[q][1] = _mm512_loadu_si512(wb + 64);
          idx[q][2] = _mm512_loadu_si512(wb + 128);
          // top 2 bits of the 3 groups -> index bits 1:0, 3:2, 5:4 (7:6 are ignored by vpermb)
          const __m512i t01 = select_bits(shr16<6>(idx[q][0]), shr16<4>(idx[q][1]), m03);
          idx[q][3] = select_bits(t01, shr16<2>(idx[q][2]), m0f);
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const __m512i tab = _mm512_load_si512(tables + arow[r][b * 4 + j]);
#pragma GCC unroll 2
            for (int q = 0; q < NP; ++q) {
              v[r][q] = _mm512_add_epi8(v[r][q], _mm512_permutexvar_epi8(idx[q][j], tab));
              PQ_PIN_ZMM(v[r][q]);
            }
          }
          if (LPW < 4 && (j + 1) % LPW == 0) PQ_WIDEN()
        }
      }
      if (LPW == 4) PQ_WIDEN()
    }
    // even lanes = ev - 256 * od (mod 2^16); interleave back to column order, widen to int32
    const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9,
                                            40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1,
                                            32, 0);
    const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) {
        const __m512i even = _mm512_sub_epi16(ev[r][q], _mm512_slli_epi16(od[r][q], 8));
        const __m512i c0 = _mm512_permutex2var_epi16(even, lo_idx, od[r][q]);  // cols 0..31
        const __m512i c1 = _mm512_permutex2var_epi16(even, hi_idx, od[r][q]);  // cols 32..63
        __m512i* d = reinterpret_cast<__m512i*>(acc32 + (q * kMR + r) * 64);
        d[0] = _mm512_add_epi32(d[0], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(c0)));
        d[1] = _mm512_add_epi32(d[1], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(c0, 1)));
        d[2] = _mm512_add_epi32(d[2], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(c1)));
        d[3] = _mm512_add_epi32(d[3], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(c1, 1)));
      }
  }
#undef PQ_WIDEN
}

template <int LPW>
void deep_rows(const LutProblem& p, size_t m0, size_t rows, size_t panel, int32_t* acc32) {
  switch (rows) {
    case 6: deep_tile<6, LPW>(p, m0, panel, acc32); break;
    case 5: deep_tile<5, LPW>(p, m0, panel, acc32); break;
    case 4: deep_tile<4, LPW>(p, m0, panel, acc32); break;
    case 3: deep_tile<3, LPW>(p, m0, panel, acc32); break;
    case 2: deep_tile<2, LPW>(p, m0, panel, acc32); break;
    default: deep_tile<1, LPW>(p, m0, panel, acc32); break;
  }
}

template <int LPW, int NP>
void vpermb_rows(const LutProblem& p, size_t m0, size_t rows, size_t panel, int32_t* acc32) {
  switch (rows) {
    case 6: vpermb_tile<6, 1, LPW>(p, m0, panel, acc32); break;  // NP == 1 only
    case 5: vpermb_tile<5, 1, LPW>(p, m0, panel, acc32); break;
    case 4: vpermb_tile<4, 1, LPW>(p, m0, panel, acc32); break;
    case 3: vpermb_tile<3, NP, LPW>(p, m0, panel, acc32); break;
    case 2: vpermb_tile<2, NP, LPW>(p, m0, panel, acc32); break;
    default: vpermb_tile<1, NP, LPW>(p, m0, panel, acc32); break;
  }
}

template <int LPW>
void tile_rows(bool vpermb, size_t np, const LutProblem& p, size_t m0, size_t rows, size_t panel,
               int32_t* acc32) {
  if (!vpermb) deep_rows<LPW>(p, m0, rows, panel, acc32);
  else if (np == 2) vpermb_rows<LPW, 2>(p, m0, rows, panel, acc32);
  else vpermb_rows<LPW, 1>(p, m0, rows, panel, acc32);
}

// Rows [m0, m1) of panels [panel, panel + np).
void compute(bool vpermb, const LutProblem& p, size_t m0, size_t m1, size_t panel, size_t np) {
  const int per = vpermb ? p.cb->u8_lookups : p.cb->u8_products;
  const int lpw = per >= 4 ? 4 : per >= 2 ? 2 : 1;
  // vpermb: 3 rows x 2 panels, or 6 rows x 1 panel for a lone (last or only) panel
  const size_t mr = vpermb ? (np == 2 ? kVpermbMR : 6) : kMR;
  for (size_t m = m0; m < m1; m += mr) {
    const size_t rows = m1 - m < mr ? m1 - m : mr;
    alignas(64) int32_t acc32[2 * kMR * 64] = {0};  // [panel][row][64]
    if (lpw == 4) tile_rows<4>(vpermb, np, p, m, rows, panel, acc32);
    else if (lpw == 2) tile_rows<2>(vpermb, np, p, m, rows, panel, acc32);
    else tile_rows<1>(vpermb, np, p, m, rows, panel, acc32);
    const __m512i corr = _mm512_set1_epi32(p.corr);
    for (size_t q = 0; q < np; ++q) {
      const size_t col0 = (panel + q) * kLutPanelCols;
      const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
      for (size_t r = 0; r < rows; ++r) {
        int32_t* out = p.c + (m + r) * p.ldc + col0;
        const int32_t* src = acc32 + (q * kMR + r) * 64;
        for (size_t j = 0; j < cols; j += 16) {
          const size_t left = cols - j;
          const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                            : static_cast<__mmask16>((1u << left) - 1);
          _mm512_mask_storeu_epi32(out + j, mask,
                                   _mm512_add_epi32(_mm512_load_si512(src + j), corr));
        }
      }
    }
  }
}

}  // namespace

// vpermb activation offsets (see prepare_vpermb in lut_gemm_driver.cc for the definition), 8
// blocks (96 codes -> 32 uint16 offsets) per step: three vpermt2b gather the index's 3 codes
// into zero-extended 16-bit lanes, shifts and ORs place them. The row tail goes word at a time.
void lut_prepare_vpermb_avx512(const uint8_t* a, size_t lda, size_t k, size_t k_pad,
                               uint16_t* out, size_t m0, size_t m1) {
  alignas(64) uint8_t ix[64], iy[64], iz[64];
  for (int i = 0; i < 32; ++i) {
    const int b = i / 4, j = i % 4;
    const int base = 12 * b + 4 * j;
    ix[2 * i] = static_cast<uint8_t>(j < 3 ? base + 1 : 12 * b + 2);   // index bits 1:0
    iy[2 * i] = static_cast<uint8_t>(j < 3 ? base + 0 : 12 * b + 6);   // bits 3:2
    iz[2 * i] = static_cast<uint8_t>(j < 3 ? base + 3 : 12 * b + 10);  // bits 5:4
    ix[2 * i + 1] = iy[2 * i + 1] = iz[2 * i + 1] = 0;
  }
  const __m512i vx = _mm512_load_si512(ix), vy = _mm512_load_si512(iy), vz = _mm512_load_si512(iz);
  const __mmask64 even = 0x5555555555555555ull;
  const size_t per_row = k_pad / 3, chunks = k / 96;
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint16_t* d = out + m * per_row;
    for (size_t c = 0; c < chunks; ++c) {
      const uint8_t* s = src + 96 * c;
      const __m512i lo = _mm512_loadu_si512(s);
      const __m512i hi = _mm512_maskz_loadu_epi8(0xFFFFFFFFull, s + 64);  // bytes 64..95
      const __m512i x = _mm512_maskz_permutex2var_epi8(even, lo, vx, hi);
      const __m512i y = _mm512_maskz_permutex2var_epi8(even, lo, vy, hi);
      const __m512i z = _mm512_maskz_permutex2var_epi8(even, lo, vz, hi);
      const __m512i v = _mm512_or_si512(
          _mm512_or_si512(_mm512_slli_epi16(x, 6), _mm512_slli_epi16(y, 8)),
          _mm512_slli_epi16(z, 10));
      _mm512_storeu_si512(d + 32 * c, v);
    }
    for (size_t b = 8 * chunks; b < per_row / 4; ++b) {  // remaining blocks, zero padded
      uint8_t q[12] = {0};
      const size_t start = 12 * b, n = k > start ? (k - start < 12 ? k - start : 12) : 0;
      std::memcpy(q, src + start, n);
      uint16_t* o = d + 4 * b;
      for (int j = 0; j < 3; ++j)
        o[j] = static_cast<uint16_t>((q[4 * j + 1] | q[4 * j] << 2 | q[4 * j + 3] << 4) << 6);
      o[3] = static_cast<uint16_t>((q[2] | q[6] << 2 | q[10] << 4) << 6);
    }
  }
}

// DeepGEMM activations (see prepare_deep in lut_gemm_driver.cc): 16 codes per step, each
// replicated into a dword by vpshufb, odd k shifted to bits 3:2.
void lut_prepare_deep_avx512(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint32_t* out,
                             size_t m0, size_t m1) {
  const __m512i rep = _mm512_set_epi8(15, 15, 15, 15, 14, 14, 14, 14, 13, 13, 13, 13, 12, 12, 12, 12,
                                      11, 11, 11, 11, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8,
                                      7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4,
                                      3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint32_t* d = out + m * k_pad;
    for (size_t i = 0; i < k_pad; i += 16) {
      const size_t n = k > i ? (k - i < 16 ? k - i : 16) : 0;
      const __m128i c = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), src + i);
      // every 128-bit lane gets the 16 codes; lane L then picks codes 4L..4L+3, each 4 times
      const __m512i lanes = _mm512_maskz_broadcast_i32x4(0xFFFF, c);
      __m512i r = _mm512_shuffle_epi8(lanes, rep);
      r = _mm512_mask_slli_epi32(r, 0xAAAA, r, 2);  // odd k: code at bits 3:2 of each byte
      const size_t w = k_pad - i < 16 ? k_pad - i : 16;
      _mm512_mask_storeu_epi32(d + i, static_cast<__mmask16>((1u << w) - 1), r);
    }
  }
}

void lut_deepgemm_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  compute(false, p, m0, m1, panel, 1);
}

// Two panels per call (the driver's panel step for this kernel), one at the last odd panel.
void lut_vpermb_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t n_panels = (p.n + kLutPanelCols - 1) / kLutPanelCols;
  compute(true, p, m0, m1, panel, panel + 1 < n_panels ? 2 : 1);
}

}  // namespace pq
