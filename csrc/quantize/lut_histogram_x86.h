// The LUT2 "mse" histogram's counting loop, shared by the AVX2 and AVX-512 builds (included by
// those translation units only: it uses SSE4.1 extracts).
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "quantize/act_quantize.h"

namespace pq {

// ++c[j][lane j] for the 4 bins in v (moved out by extracts: the vector stored and reloaded
// lane by lane stalled, ~4.5 ns a value on an Intel Xeon model 207, 2.5x the extracts' time)
static inline void lut_count4(__m128i v, uint32_t* const* c) {  // (static: one per ISA build)
  ++c[0][_mm_cvtsi128_si32(v)];
  ++c[1][_mm_extract_epi32(v, 1)];
  ++c[2][_mm_extract_epi32(v, 2)];
  ++c[3][_mm_extract_epi32(v, 3)];
}

// Adds the bins of x[0, i) to count, W values a step: bins_at(i) gives the vector of bins
// i..i+W-1, count_bins(bins, sets) adds lane j to sets[j % 4] (lut_count4). Rows from
// kLutSplitCountsFrom values count into four sets summed at the end (act_quantize.h), 528 words
// apart: sets 4 KiB apart alias in the low 12 address bits, and a load then waits for the other
// sets' stores. Returns i, where the whole steps end.
template <size_t W, class BinsAt, class CountBins>
size_t lut_count_steps(size_t k, uint32_t* count, BinsAt&& bins_at, CountBins&& count_bins) {
  size_t i = 0;
  if (k >= kLutSplitCountsFrom) {
    alignas(64) uint32_t part[4][kLutBins + 16] = {};
    uint32_t* const sets[4] = {part[0], part[1], part[2], part[3]};
    for (; i + W <= k; i += W) count_bins(bins_at(i), sets);
    for (int b = 0; b < kLutBins; ++b)
      count[b] += part[0][b] + part[1][b] + part[2][b] + part[3][b];
  }
  uint32_t* const one[4] = {count, count, count, count};
  for (; i + W <= k; i += W) count_bins(bins_at(i), one);
  return i;
}

}  // namespace pq
