// AMX int8 path (Intel Sapphire Rapids and later Xeons): tdpbusd on tiles, u8 activations x s8
// weights -> int32, exact like every path. On such a CPU PyTorch's int8 and bf16 matmuls run
// on AMX (torch._int_mm about 1900 GOP/s at 256x4096x4096, one core), 2.5x the zmm VNNI tile.
//
// The shared panels ([K/4][64 columns][4 k] int8) are already AMX's B layout: 16 k-groups x 16
// columns is a 16-row x 64-byte tile at panel + g * 256 + q * 64 with a 256-byte stride, so the
// weights load in place. A tile = 16 activation rows x 64 k (stride lda), C tile = 16 rows x 16
// int32 columns. Register plan (8 tiles): C 2 row tiles x 2 column tiles (32 rows x 32 columns:
// each loaded A and B tile used twice), A 2, B 2; a panel runs as two 32-column halves.
// Tails use small zeroed staging tiles, so nothing is read past the caller's rows or panels:
// rows past m1 (fewer than 16 in a row tile) and the K tail (k-groups past the last whole 64 k)
// are copied into 16 x 64-byte buffers, zero elsewhere (zero x anything adds nothing).
// Outputs go through a 16 x 16 int32 buffer: only valid rows and columns are written, with the
// column bias added.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "core/amx_tiles.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

using amx::kTileBytes;
using amx::kTileRows;
constexpr size_t kStepGroups = 16;       // k-groups per tile step (64 k)
constexpr size_t kPanelStride = kInt8PanelCols * kInt8GroupK;  // bytes per panel k-group
// From 8 rows the staged tile beats the zmm kernel: 8x14336x4096 3.4 vs 5.0 ms, 12 rows 3.4 vs
// 5.5 (a 6-row and a 2-row zmm tile read each panel twice); at 2-6 rows the zmm kernel is
// faster (4x4096x4096 0.61 vs 0.98 ms).
constexpr size_t kAmxMinRows = 8;
constexpr size_t kBlockSteps = 8;  // tile steps (64 k) per K block: 512 k

// C tiles 0-3 += two A row tiles x the column tiles q0, q0 + 1 of the panel at b: tiles 0, 1
// from a0 (rows0 <= 16 rows), tiles 2, 3 from a1 (rows1 <= 16, 0: none), over tile steps
// [s0, s1) (64 k each) and, when `tail`, the k-groups past the last whole step. a0/a1: the row
// tiles' first rows (rows 16-31 of a block, or the negative parts of split 9-bit rows).
void accumulate(const Int8GemmProblem& p, const uint8_t* a0, size_t rows0, const uint8_t* a1,
                size_t rows1, const int8_t* b, size_t q0, size_t s0, size_t s1, bool tail) {
  const size_t lda = p.lda;
  // staging for row tiles under 16 rows: zeroed once, the first rows overwritten each step
  alignas(64) uint8_t a_buf[2][kTileRows * kTileBytes];
  if (rows0 < kTileRows || (rows1 && rows1 < kTileRows)) std::memset(a_buf, 0, sizeof a_buf);
  for (size_t s = s0; s < s1; ++s) {
    const size_t k0 = s * kStepGroups * kInt8GroupK;
    const int8_t* bs = b + s * kStepGroups * kPanelStride + q0 * kTileBytes;
    if (rows0 == kTileRows) {
      _tile_loadd(4, a0 + k0, lda);
    } else {
      amx::copy_rows(a0, lda, rows0, k0, kTileBytes, a_buf[0]);
      _tile_loadd(4, a_buf[0], kTileBytes);
    }
    _tile_loadd(6, bs, kPanelStride);
    _tile_loadd(7, bs + kTileBytes, kPanelStride);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    if (rows1) {
      if (rows1 == kTileRows) {
        _tile_loadd(5, a1 + k0, lda);
      } else {
        amx::copy_rows(a1, lda, rows1, k0, kTileBytes, a_buf[1]);
        _tile_loadd(5, a_buf[1], kTileBytes);
      }
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
  const size_t groups_tail = p.k_groups % kStepGroups;
  if (tail && groups_tail) {  // the last k-groups: A and B staged, zero past the tail
    const size_t full = p.k_groups / kStepGroups;
    const size_t k0 = full * kStepGroups * kInt8GroupK, bytes = groups_tail * kInt8GroupK;
    alignas(64) int8_t b_buf[2][kTileRows * kTileBytes] = {};
    const int8_t* bs = b + full * kStepGroups * kPanelStride + q0 * kTileBytes;
    for (size_t g = 0; g < groups_tail; ++g)
      for (size_t j = 0; j < 2; ++j)
        std::memcpy(b_buf[j] + g * kTileBytes, bs + g * kPanelStride + j * kTileBytes, kTileBytes);
    std::memset(a_buf, 0, sizeof a_buf);  // zero past the tail's bytes
    amx::copy_rows(a0, lda, rows0, k0, bytes, a_buf[0]);
    _tile_loadd(4, a_buf[0], kTileBytes);
    _tile_loadd(6, b_buf[0], kTileBytes);
    _tile_loadd(7, b_buf[1], kTileBytes);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    if (rows1) {
      amx::copy_rows(a1, lda, rows1, k0, bytes, a_buf[1]);
      _tile_loadd(5, a_buf[1], kTileBytes);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
}

// rows x 16 columns at col of C (only the valid columns) = tile rows (minus the matching rows
// of `minus`: split 9-bit rows) + column bias + row bias.
void write_tile(const Int8GemmProblem& p, const int32_t* tile, const int32_t* minus, size_t m0,
                size_t rows, size_t col) {
  if (col >= p.n) return;
  const size_t nc = p.n - col < kTileRows ? p.n - col : kTileRows;
  const __mmask16 mask = static_cast<__mmask16>((1u << nc) - 1);
  const __m512i bias = p.col_bias ? _mm512_maskz_loadu_epi32(mask, p.col_bias + col)
                                  : _mm512_setzero_si512();
  for (size_t r = 0; r < rows; ++r) {
    __m512i v = _mm512_add_epi32(_mm512_load_si512(tile + r * kTileRows), bias);
    if (minus) v = _mm512_sub_epi32(v, _mm512_load_si512(minus + r * kTileRows));
    if (p.row_bias) v = _mm512_add_epi32(v, _mm512_set1_epi32(p.row_bias[m0 + r]));
    _mm512_mask_storeu_epi32(p.c + (m0 + r) * p.ldc + col, mask, v);
  }
}

// Rows [m0, m1) x panels [p0, p1). kSplit (Int8WideFormat::split_u8): 16-row blocks, tiles
// 0-1 the positive parts (p.a), 2-3 the negative parts (p.a_low) of the same rows, C = their
// difference; else 32-row blocks, tiles 2-3 rows 16-31.
template <bool kSplit>
void compute(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const size_t block_rows = kSplit ? kTileRows : 2 * kTileRows;
  const size_t steps = p.k_groups / kStepGroups;
  const size_t blocks = div_round_up(m1 - m0, block_rows);
  // K blocks of kBlockSteps: a 32-column half's weights (16 KiB) stay in L1 across the row
  // blocks, whose partial C tiles wait in `partial` (4 KiB per block and half) between K blocks
  thread_local std::vector<int32_t> partial;
  const bool blocked = steps > kBlockSteps;
  if (blocked && partial.size() < blocks * 2 * 4 * kTileRows * kTileRows)
    partial.resize(blocks * 2 * 4 * kTileRows * kTileRows);
  amx::configure(kTileBytes, kTileRows);
  for (size_t panel = p0; panel < p1; ++panel) {
    const int8_t* b = p.panels + panel * p.k_groups * kPanelStride;
    const size_t col0 = panel * kInt8PanelCols;
    const size_t halves = col0 + 2 * kTileRows >= p.n ? 1 : 2;  // the second half all padding
    for (size_t s0 = 0; s0 < steps || s0 == 0; s0 += kBlockSteps) {
      const size_t s1 = steps - s0 < kBlockSteps ? steps : s0 + kBlockSteps;
      const bool first = s0 == 0, last = s1 == steps;
      for (size_t h = 0; h < halves; ++h)
        for (size_t blk = 0; blk < blocks; ++blk) {
          const size_t m = m0 + blk * block_rows;
          const size_t rows = m1 - m < block_rows ? m1 - m : block_rows;
          const size_t rows0 = rows < kTileRows ? rows : kTileRows;
          const size_t rows1 = kSplit ? rows0 : rows - rows0;
          const uint8_t* a1 = kSplit ? p.a_low + m * p.lda
                              : rows1     ? a + (m + kTileRows) * p.lda
                                          : nullptr;
          int32_t* saved = blocked ? partial.data() + (blk * 2 + h) * 4 * kTileRows * kTileRows
                                   : nullptr;
          for (size_t t = 0; t < 4; ++t) {
            if (first)
              amx::zero_c(t);
            else
              amx::load_c(t, saved + t * kTileRows * kTileRows);
          }
          accumulate(p, a + m * p.lda, rows0, a1, rows1, b, 2 * h, s0, s1, last);
          if (!last) {
            for (size_t t = 0; t < 4; ++t) amx::store_c(t, saved + t * kTileRows * kTileRows);
            continue;
          }
          alignas(64) int32_t out[4][kTileRows * kTileRows];
          for (size_t t = 0; t < (rows1 ? 4u : 2u); ++t) amx::store_c(t, out[t]);
          const size_t col = col0 + 2 * h * kTileRows;
          for (size_t j = 0; j < 2; ++j) {
            if (kSplit) {
              write_tile(p, out[j], out[2 + j], m, rows0, col + j * kTileRows);
            } else {
              write_tile(p, out[j], nullptr, m, rows0, col + j * kTileRows);
              if (rows1) write_tile(p, out[2 + j], nullptr, m + kTileRows, rows1, col + j * kTileRows);
            }
          }
        }
      if (last) break;
    }
  }
  _tile_release();
}

}  // namespace

void int8_compute_amx(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  if (m1 - m0 < kAmxMinRows) return int8_compute_avx512(p, m0, m1, p0, p1);
  compute<false>(p, m0, m1, p0, p1);
}

// SPARQ's signed rows split into positive and negative parts (Int8WideFormat::split_u8): one
// pass over the weights, each B tile multiplied by both parts. Any row count (a row tile with
// fewer rows is staged; at decode the weights' bandwidth bounds it, not the wasted rows).
void int8_compute_wide_amx(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                           size_t p1) {
  compute<true>(p, m0, m1, p0, p1);
}

}  // namespace pq
