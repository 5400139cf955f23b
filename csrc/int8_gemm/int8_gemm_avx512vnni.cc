// AVX-512 VNNI path: a 6x64 register tile of vpdpbusd (u8 x s8 -> s32, 4-way).
// Per k-group of 4: 4 zmm weight loads (64 columns x 4 k), one dword broadcast of A per row,
// 24 vpdpbusd into 24 accumulators (29 of 32 zmm registers in use).
// K is blocked so a panel's weight block stays in L1/L2 while all M tiles pass over it.
// compute_wide (Int8WideFormat::sign_xor, SPARQ's signed 9-bit rows) is the same code with
// kXor: each row also broadcasts its sign bytes and every weight vector is xor-ed with them
// before the vpdpbusd (|v| * ~w = -|v| * w - |v|, the row's sum of |v| over v < 0 added back);
// 31 of 32 registers then, and GCC 12 still keeps the loop free of stack accesses.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"

#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kMR = 6;
// k-groups per K block: 64 cols x 4096 k = 256 KiB of weights, in L2 while the row tiles pass.
// A panel's whole K (up to 4096) is then one contiguous stream: against 64 KiB blocks (four
// streams 256 KiB apart at K = 4096) 5-14% faster at M = 2-32 from DRAM and 1-6% at M = 64-512
// (Zen 4, 4096 -> 14336, 1 and 2 threads), the same in cache (K = 384).
constexpr size_t kBlockGroups = 1024;
// The xor tile issues ~1.8x the operations per weight byte, so the out-of-order window holds
// fewer of the weight stream's loads: from DRAM its 6-row tile ran at 60% of the plain tile's
// rate (Zen 4, M = 6, 4096 x 14336) and 8 KiB of software prefetch restores most of it (the
// plain tile is at the DRAM rate already: prefetch there measured neutral to slower).
constexpr size_t kXorPrefetchBytes = 8192;

// The accumulation loop writes its raw 6x64 sums to a small L1-resident buffer and a separate
// epilogue applies masks, bias and K-block accumulation: with the epilogue fused, GCC 12 spills
// the 24 accumulators to the stack on every iteration. Accumulators are named variables (an
// array of them also ends up in memory).
#define PQ_ROW_DECL(r)                                                   \
  __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, \
          c##r##3 = c##r##0;
#define PQ_ROW_FMA(r)                                                      \
  if constexpr (MR > r) {                                                  \
    const __m512i av = _mm512_set1_epi32(load_i32(a + r * lda + g * 4));   \
    if constexpr (kXor) {                                                  \
      const __m512i sv = _mm512_set1_epi32(load_i32(s + r * lda + g * 4)); \
      c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, _mm512_xor_si512(b0, sv)); \
      c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, _mm512_xor_si512(b1, sv)); \
      c##r##2 = _mm512_dpbusd_epi32(c##r##2, av, _mm512_xor_si512(b2, sv)); \
      c##r##3 = _mm512_dpbusd_epi32(c##r##3, av, _mm512_xor_si512(b3, sv)); \
    } else {                                                               \
      c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, b0);                      \
      c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, b1);                      \
      c##r##2 = _mm512_dpbusd_epi32(c##r##2, av, b2);                      \
      c##r##3 = _mm512_dpbusd_epi32(c##r##3, av, b3);                      \
    }                                                                      \
  }
#define PQ_ROW_SAVE(r)                                                   \
  if constexpr (MR > r) {                                                \
    _mm512_storeu_si512(sums + r * 64, c##r##0);                         \
    _mm512_storeu_si512(sums + r * 64 + 16, c##r##1);                    \
    _mm512_storeu_si512(sums + r * 64 + 32, c##r##2);                    \
    _mm512_storeu_si512(sums + r * 64 + 48, c##r##3);                    \
  }

// sums[r][64] = sum over `groups` k-groups of A rows x the panel block (kXor: the weights xor-ed
// with the rows' sign bytes s, same layout as a)
// prefetch: the weights kXorPrefetchBytes ahead (kXor only; a K block's first tile of 5-6 rows).
template <size_t MR, bool kXor>
__attribute__((noipa)) void accumulate_tile(const uint8_t* a, const uint8_t* s, size_t lda,
                                            const int8_t* b, size_t groups, bool prefetch,
                                            int32_t* sums) {
  PQ_ROW_DECL(0) PQ_ROW_DECL(1) PQ_ROW_DECL(2) PQ_ROW_DECL(3) PQ_ROW_DECL(4) PQ_ROW_DECL(5)
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    if (kXor && prefetch) prefetch_panel_group(bg + kXorPrefetchBytes);
    const __m512i b0 = _mm512_loadu_si512(bg);
    const __m512i b1 = _mm512_loadu_si512(bg + 64);
    const __m512i b2 = _mm512_loadu_si512(bg + 128);
    const __m512i b3 = _mm512_loadu_si512(bg + 192);
    PQ_ROW_FMA(0) PQ_ROW_FMA(1) PQ_ROW_FMA(2) PQ_ROW_FMA(3) PQ_ROW_FMA(4) PQ_ROW_FMA(5)
  }
  PQ_ROW_SAVE(0) PQ_ROW_SAVE(1) PQ_ROW_SAVE(2) PQ_ROW_SAVE(3) PQ_ROW_SAVE(4) PQ_ROW_SAVE(5)
}
#undef PQ_ROW_DECL
#undef PQ_ROW_FMA
#undef PQ_ROW_SAVE

// One row (decode): the block is read as two streams, its two K halves, into two accumulator
// sets. From DRAM two streams ran 1.11-1.16x faster than one (Xeon, 1 x 14336 x 4096, one process
// alternating; docs/notes/int8_gemm.md): the hardware prefetchers keep more lines in flight.
template <bool kXor>
__attribute__((noipa)) void accumulate_row(const uint8_t* a, const uint8_t* s, const int8_t* b,
                                           size_t groups, int32_t* sums) {
  __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0;  // the first half's sums
  __m512i y0 = x0, y1 = x0, y2 = x0, y3 = x0;                      // the second half's
#define PQ_STEP(c0, c1, c2, c3, g)                                        \
  {                                                                       \
    const int8_t* bg = b + (g) * kInt8PanelGroupBytes;                    \
    const __m512i av = _mm512_set1_epi32(load_i32(a + (g) * 4));          \
    __m512i w0 = _mm512_loadu_si512(bg), w1 = _mm512_loadu_si512(bg + 64); \
    __m512i w2 = _mm512_loadu_si512(bg + 128), w3 = _mm512_loadu_si512(bg + 192); \
    if constexpr (kXor) {                                                 \
      const __m512i sv = _mm512_set1_epi32(load_i32(s + (g) * 4));        \
      w0 = _mm512_xor_si512(w0, sv);                                      \
      w1 = _mm512_xor_si512(w1, sv);                                      \
      w2 = _mm512_xor_si512(w2, sv);                                      \
      w3 = _mm512_xor_si512(w3, sv);                                      \
    }                                                                     \
    c0 = _mm512_dpbusd_epi32(c0, av, w0);                                 \
    c1 = _mm512_dpbusd_epi32(c1, av, w1);                                 \
    c2 = _mm512_dpbusd_epi32(c2, av, w2);                                 \
    c3 = _mm512_dpbusd_epi32(c3, av, w3);                                 \
  }
  const size_t half = groups / 2;
  for (size_t g = 0; g < half; ++g) {
    PQ_STEP(x0, x1, x2, x3, g)
    PQ_STEP(y0, y1, y2, y3, half + g)
  }
  if (groups % 2) PQ_STEP(x0, x1, x2, x3, groups - 1)
#undef PQ_STEP
  _mm512_storeu_si512(sums, _mm512_add_epi32(x0, y0));
  _mm512_storeu_si512(sums + 16, _mm512_add_epi32(x1, y1));
  _mm512_storeu_si512(sums + 32, _mm512_add_epi32(x2, y2));
  _mm512_storeu_si512(sums + 48, _mm512_add_epi32(x3, y3));
}

// sums[r][64] (r < mr) -> C columns [0, nc): the first K block starts from the column bias and
// the row bias (or zero), later blocks add to C
void store_sums(const int32_t* sums, size_t mr, int32_t* c, size_t ldc, size_t nc,
                const int32_t* bias, const int32_t* row_bias, bool accumulate) {
  for (size_t j = 0; j * 16 < nc; ++j) {
    const size_t left = nc - j * 16;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xffff)
                                      : static_cast<__mmask16>((1u << left) - 1);
    for (size_t r = 0; r < mr; ++r) {
      int32_t* dst = c + r * ldc + j * 16;
      __m512i x = _mm512_load_si512(sums + r * 64 + j * 16);
      if (accumulate) {
        x = _mm512_add_epi32(x, _mm512_maskz_loadu_epi32(mask, dst));
      } else {
        if (bias) x = _mm512_add_epi32(x, _mm512_loadu_si512(bias + j * 16));
        if (row_bias) x = _mm512_add_epi32(x, _mm512_set1_epi32(row_bias[r]));
      }
      _mm512_mask_storeu_epi32(dst, mask, x);
    }
  }
}

// Where a tile's rows start and what its store adds: a and s (the sign bytes, kXor) at the
// tile's first row and K block, the biases at its first row and column.
struct TileArgs {
  const uint8_t* a;
  const uint8_t* s;
  size_t lda;
  const int8_t* b;
  size_t groups;
  int32_t* c;
  size_t ldc;
  size_t nc;
  const int32_t* bias;
  const int32_t* row_bias;
  bool accumulate;
  bool first_row_tile;  // the block's weights come from memory (later tiles find them in L2)
};

template <bool kXor>
void tile(size_t mr, const TileArgs& t) {
  alignas(64) int32_t sums[kMR * 64];
  // (with 4 rows or fewer the xor tile keeps up with the stream: prefetch measured slower)
  const bool pf = t.first_row_tile && mr >= 5;
  switch (mr) {
    case 6: accumulate_tile<6, kXor>(t.a, t.s, t.lda, t.b, t.groups, pf, sums); break;
    case 5: accumulate_tile<5, kXor>(t.a, t.s, t.lda, t.b, t.groups, pf, sums); break;
    case 4: accumulate_tile<4, kXor>(t.a, t.s, t.lda, t.b, t.groups, pf, sums); break;
    case 3: accumulate_tile<3, kXor>(t.a, t.s, t.lda, t.b, t.groups, pf, sums); break;
    case 2: accumulate_tile<2, kXor>(t.a, t.s, t.lda, t.b, t.groups, pf, sums); break;
    default: accumulate_row<kXor>(t.a, t.s, t.b, t.groups, sums); break;
  }
  store_sums(sums, mr, t.c, t.ldc, t.nc, t.bias, t.row_bias, t.accumulate);
}

// Narrow panels (N <= 16 or <= 32 columns in use: the last panel of a narrow layer, e.g. a
// 16-channel conv): the 6x64 tile would compute 4x or 2x the columns. Here NV zmm per row and
// MR = 24 / NV rows share each weight load (24 accumulators as above).
template <size_t MR, size_t NV, bool kXor>
__attribute__((noipa)) void accumulate_narrow(const uint8_t* a, const uint8_t* s, size_t lda,
                                              const int8_t* b, size_t groups, int32_t* sums) {
  __m512i acc[MR][NV];
#pragma GCC unroll 24
  for (size_t r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (size_t v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    __m512i w[NV];
#pragma GCC unroll 2
    for (size_t v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(bg + v * 64);
#pragma GCC unroll 24
    for (size_t r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi32(load_i32(a + r * lda + g * 4));
      if constexpr (kXor) {
        const __m512i sv = _mm512_set1_epi32(load_i32(s + r * lda + g * 4));
#pragma GCC unroll 2
        for (size_t v = 0; v < NV; ++v)
          acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, _mm512_xor_si512(w[v], sv));
      } else {
#pragma GCC unroll 2
        for (size_t v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, w[v]);
      }
    }
  }
#pragma GCC unroll 24
  for (size_t r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (size_t v = 0; v < NV; ++v) _mm512_storeu_si512(sums + r * 64 + v * 16, acc[r][v]);
}

// Rows [0, mr) x columns [0, nc <= 16 NV) through the narrow accumulation, in row blocks of
// 24 / NV and smaller for the rest.
template <size_t NV, bool kXor>
void tile_narrow(size_t mr, const TileArgs& t) {
  constexpr size_t kRows = 24 / NV;
  alignas(64) int32_t sums[kRows * 64];
  for (size_t r0 = 0; r0 < mr;) {
    const size_t left = mr - r0;
    const uint8_t* ar = t.a + r0 * t.lda;
    const uint8_t* sr = kXor ? t.s + r0 * t.lda : nullptr;
    size_t rows;
    if (left >= kRows) {
      rows = kRows;
      accumulate_narrow<kRows, NV, kXor>(ar, sr, t.lda, t.b, t.groups, sums);
    } else if (left >= kRows / 2) {
      rows = kRows / 2;
      accumulate_narrow<kRows / 2, NV, kXor>(ar, sr, t.lda, t.b, t.groups, sums);
    } else if (left >= 4) {
      rows = 4;
      accumulate_narrow<4, NV, kXor>(ar, sr, t.lda, t.b, t.groups, sums);
    } else {
      rows = 1;
      accumulate_narrow<1, NV, kXor>(ar, sr, t.lda, t.b, t.groups, sums);
    }
    store_sums(sums, rows, t.c + r0 * t.ldc, t.ldc, t.nc, t.bias,
               t.row_bias ? t.row_bias + r0 : nullptr, t.accumulate);
    r0 += rows;
  }
}

template <bool kXor>
void compute(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  for (size_t kb = 0; kb < p.k_groups; kb += kBlockGroups) {
    const size_t groups = p.k_groups - kb < kBlockGroups ? p.k_groups - kb : kBlockGroups;
    for (size_t panel = p0; panel < p1; ++panel) {
      const size_t col0 = panel * kInt8PanelCols;
      TileArgs t{};
      t.lda = p.lda;
      t.b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
      t.groups = groups;
      t.ldc = p.ldc;
      t.nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
      t.bias = p.col_bias ? p.col_bias + col0 : nullptr;
      t.accumulate = kb > 0;
      auto at_row = [&](size_t m) {
        t.a = a + m * p.lda + kb * kInt8GroupK;
        t.s = kXor ? p.a_low + m * p.lda + kb * kInt8GroupK : nullptr;
        t.c = p.c + m * p.ldc + col0;
        t.row_bias = kXor ? p.row_bias + m : nullptr;
      };
      if (t.nc <= 32 && m1 - m0 >= 4) {  // a narrow panel: rows share the 1 or 2 weight loads
        at_row(m0);
        if (t.nc <= 16)
          tile_narrow<1, kXor>(m1 - m0, t);
        else
          tile_narrow<2, kXor>(m1 - m0, t);
        continue;
      }
      for (size_t m = m0; m < m1; m += kMR) {
        at_row(m);
        t.first_row_tile = m == m0;
        tile<kXor>(m1 - m < kMR ? m1 - m : kMR, t);
      }
    }
  }
}

}  // namespace

void int8_compute_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  compute<false>(p, m0, m1, p0, p1);
}

void int8_compute_wide_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                              size_t p1) {
  compute<true>(p, m0, m1, p0, p1);
}

// The fixes' products with one panel (SPARQ's offset rows): one vpdpbusd per 16 columns and fix,
// exact on any fix bytes (int32 sums); negative fixes summed apart and subtracted.
void int8_add_fixes_avx512(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                           int32_t* c, size_t nc) {
  if (count == 0) return;
  __m512i p0 = _mm512_setzero_si512(), p1 = p0, p2 = p0, p3 = p0;
  __m512i n0 = p0, n1 = p0, n2 = p0, n3 = p0;
  for (size_t f = 0; f < count; ++f) {
    const __m512i av = _mm512_set1_epi32(static_cast<int>(fixes[f].bytes));
    const int8_t* bg = panel_b + (fixes[f].group & ~kFixNegative) * kInt8PanelGroupBytes;
    const __m512i b0 = _mm512_loadu_si512(bg), b1 = _mm512_loadu_si512(bg + 64);
    const __m512i b2 = _mm512_loadu_si512(bg + 128), b3 = _mm512_loadu_si512(bg + 192);
    if (fixes[f].group & kFixNegative) {
      n0 = _mm512_dpbusd_epi32(n0, av, b0);
      n1 = _mm512_dpbusd_epi32(n1, av, b1);
      n2 = _mm512_dpbusd_epi32(n2, av, b2);
      n3 = _mm512_dpbusd_epi32(n3, av, b3);
    } else {
      p0 = _mm512_dpbusd_epi32(p0, av, b0);
      p1 = _mm512_dpbusd_epi32(p1, av, b1);
      p2 = _mm512_dpbusd_epi32(p2, av, b2);
      p3 = _mm512_dpbusd_epi32(p3, av, b3);
    }
  }
  const __m512i sums[4] = {_mm512_sub_epi32(p0, n0), _mm512_sub_epi32(p1, n1),
                           _mm512_sub_epi32(p2, n2), _mm512_sub_epi32(p3, n3)};
  for (size_t j = 0; j * 16 < nc; ++j) {
    const size_t left = nc - j * 16;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xffff)
                                      : static_cast<__mmask16>((1u << left) - 1);
    int32_t* dst = c + j * 16;
    _mm512_mask_storeu_epi32(dst, mask,
                             _mm512_add_epi32(sums[j], _mm512_maskz_loadu_epi32(mask, dst)));
  }
}

}  // namespace pq
