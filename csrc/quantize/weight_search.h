// Conversion-time weight quantizers: the clipping searches of WeightOnlyConfig (group-wise
// symmetric integer codes) and LUT2Config (codes into 4 levels, one scale per row), and the
// plain per-row int8 of Int8Config / SparqConfig. The searches take one pass per group over
// weights that stay in L1 (the PyTorch version made ~10 passes per candidate over L2-sized row
// chunks: 1.7 s per 11.5 M weights for LUT2).
//
// For every group g of row n (columns [g * gs, min((g + 1) * gs, k))) and every candidate scale
// s = scales[r][n][g] (r in [0, R)), in float32 without fused multiply-add:
//   v = w * (1 / s);  y = the nearest level to v (uniform: clamp(round_half_even(v), qmin, qmax);
//                     levels: the lowest sorted level plus its steps past each midpoint v
//                     exceeds, ties down)
//   e = y * s - w;  err(r) = the sum of e * e in 8 lanes (lane = column mod 8 within the group,
//   each lane summed in column order), then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)):
//   one fixed order, so the same bits on every ISA and thread count.
// The first candidate with the smallest err is kept (ties: the lower r); its codes are written
// (uniform: y as int8; levels: the index of y in the caller's level order) and its scale.
// Weights must be finite (checked by the caller: a NaN gets some in-range code) and scales
// positive and finite.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quantize/gptq_sweep.h"

namespace pq {

struct LevelQuantizer {
  float sorted[4];   // the 4 levels, ascending
  float mids[3];     // midpoints between consecutive sorted levels
  uint8_t code[4];   // code written for sorted level i (its index in the caller's order)
};

// codes int8 [n, k]; best float32 [n, groups]; scales float32 [r, n, groups].
void clip_search_uniform(const float* w, size_t n, size_t k, size_t group_size,
                         const float* scales, size_t candidates, int qmin, int qmax,
                         int8_t* codes, float* best, int threads);

// One group per row (group_size = k): codes uint8 [n, k]; best float32 [n]; scales [r, n].
void clip_search_levels(const float* w, size_t n, size_t k, const float* scales,
                        size_t candidates, const LevelQuantizer& q, uint8_t* codes, float* best,
                        int threads);

// Int8Config's and SparqConfig's symmetric per-row int8 (no search), the same bits as PyTorch's
// w.abs().amax(1).clamp(min=1e-12) / 127 and round(w / s).clamp(-127, 127):
// codes int8 [n, k]; scales float32 [n].
void quantize_rows_int8(const float* w, size_t n, size_t k, int8_t* codes, float* scales,
                        int threads);

// The per-group statistics around them (one pass each, no temporaries): max |w| per group
// (float32 [n, groups]); the sum of int8 codes per group (int32 [n, groups]); how many codes of
// each value 0..3 a row of uint8 codes holds (int32 [n, 4]; other values are not counted).
void group_absmax(const float* w, size_t n, size_t k, size_t group_size, float* out, int threads);
void group_sums(const int8_t* codes, size_t n, size_t k, size_t group_size, int32_t* out,
                int threads);
void level_counts(const uint8_t* codes, size_t n, size_t k, int32_t* out, int threads);

// The functions above and GPTQ's sweeps (gptq_sweep.h) for one vector width (weight_search.inc): 16-byte vectors in the baseline
// build, 32-byte ones in weight_search_avx2.cc; the AVX2 and AVX-512 tiers (PYQUANT_ISA) take the
// latter. Every width gives the same bits.
struct WeightSearchFns {
  decltype(&clip_search_uniform) search_uniform;
  decltype(&clip_search_levels) search_levels;
  decltype(&group_absmax) absmax;
  decltype(&group_sums) sums;
  decltype(&level_counts) counts;
  decltype(&quantize_rows_int8) int8_rows;
  decltype(&gptq_block) gptq;
  decltype(&sparsegpt24_block) sparsegpt24;
};
namespace ws_base { const WeightSearchFns& fns(); }
namespace ws_avx2 { const WeightSearchFns& fns(); }

}  // namespace pq
