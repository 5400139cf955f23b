// Row quantizers of the fused forwards other than the asymmetric uint8 one (row_quantize.h).
// Portable code, and AVX2 / AVX-512 loops for LUT2's range and codes (lut_quantize_avx2.cc,
// lut_quantize_avx512.cc); float32 with no fused multiply-add, so every path gives the same bits.
// pyquant/nn/schemes.py mirrors each definition in PyTorch.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

// SPARQ magnitudes: amax = max_k |x| (or the fixed value), s = amax / 255 (1 if amax is 0),
//   q = trunc(min(|x| * (1/s) + 0.5, 255.25))       (round half up, saturating)
// Returns s. The sign is read from x again where it is needed.
float quantize_row_abs_u8(const float* x, size_t k, const float* fixed_amax, uint8_t* q);

// Whether any x[i] < 0 (SPARQ's sign-magnitude inputs), in steps of 1024 values without an early
// exit inside a step, so the compiler vectorizes it: a post-ReLU input is scanned whole. static:
// internal linkage, so an ISA-specific translation unit's copy is never shared with another.
template <class T>
static inline bool any_negative(const T* x, size_t count) {
  for (size_t i = 0; i < count; i += 1024) {
    const size_t end = i + 1024 < count ? i + 1024 : count;
    int neg = 0;
    for (size_t j = i; j < end; ++j) neg |= x[j] < 0;
    if (neg) return true;
  }
  return false;
}

// LUT2 activations: x ~= off + s * levels[code], code in 0..3.
struct LutActLevels {
  float sorted[4];   // the 4 levels ascending
  uint8_t order[4];  // order[i]: code of sorted[i]
  float mids[3];     // (sorted[i] + sorted[i+1]) / 2
};
LutActLevels lut_act_levels(const int32_t levels[4]);

// Codes for one row given (s, off): v = (x - off) * (1/s); i = #{j : v > mids[j]}; code = order[i].
void lut_codes_row(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                   uint8_t* codes);

// A row's range as the loop lo = hi = x[f]; lo = x[i] < lo ? x[i] : lo; hi = x[i] > hi ? x[i] :
// hi from f + 1 on, f the first non-NaN value: NaN values are skipped (an all-NaN row gives NaN),
// and of equal values the first stays (so a zero's sign is that of the row's first zero). k >= 1.
void lut_row_range(const float* x, size_t k, float* lo, float* hi);
using LutRowRangeFn = void (*)(const float* x, size_t k, float* lo, float* hi);
// For the vector range loops: their lanes agree with the scalar rule on the values, but a zero
// result's sign is the row's first zero's (the scalar rule keeps the first of equal values).
// static: each tier's file keeps its own copy (a shared inline one could be the AVX-512 build's).
static inline void lut_range_zero_sign(const float* x, float* lo, float* hi) {
  if (*lo != 0.0f && *hi != 0.0f) return;
  size_t j = 0;
  while (x[j] != 0.0f) ++j;  // a zero exists: lo or hi is one of the row's values
  if (*lo == 0.0f) *lo = x[j];
  if (*hi == 0.0f) *hi = x[j];
}
LutRowRangeFn lut_row_range_kernel(Isa isa);  // the tier's loop, the same bits

// Range -> parameters ("minmax" and static): s = (hi - lo) / (lmax - lmin) (1 if not > 0),
// off = lo - s * lmin (both in double, rounded to float32, when hi - lo overflows float32:
// range_overflows in row_quantize.h; "mse" takes these parameters for such a row).
void lut_params_minmax(const LutActLevels& lv, float lo, float hi, float* s, float* off);

// "mse": the clipping search of the Python front end, evaluated on a histogram instead of the
// data (bounded cost: one pass over the row, then per candidate 3 level boundaries found from the
// affine v(b) and checked bin by bin, and 4 segment sums from prefix sums of n, n c, n c^2).
// Bins of equal
// width over [lo, hi] (row min, max), b = min(B - 1, trunc((x - lo) * (B / (hi - lo)))), each
// represented by its centre c_b = lo + (b + 0.5) (hi - lo) / B (float64 from here on);
// mu = sum_b n_b c_b / K; candidate r shrinks the range towards mu:
// [mu + r (lo - mu), mu + r (hi - mu)], params as minmax; its error is
// sum_b n_b (c_b - (off + s * level(c_b)))^2 (level: nearest by v = (c_b - off) * (1 / s)),
// summed per level from exact integer moments of the bin index measured from lo (no
// cancellation on rows whose spread is a few ulps of their mean); the first smallest wins; s and
// off rounded to float32. Exact for every value in a bin that no decision midpoint crosses
// (almost all bins).
constexpr int kLutCandidates = 12;
constexpr int kLutBins = 512;
float lut_candidate_ratio(int i);  // 1 - 0.85 i / 11, rounded to float32
// The estimator's histogram: ++count[b] per value, b as above with inv_bw = B / (hi - lo)
// (t = (x - lo) * inv_bw; b = t > 0 ? min(trunc(t), B - 1) : 0, so NaN goes to bin 0).
// The tier kernels also write the occupancy bitmap (bit b of occupied[b / 64]: count[b] != 0),
// so the estimator never loops over empty bins.
void lut_histogram(const float* x, size_t k, float lo, float inv_bw, uint32_t* count);
// The tier kernels count rows from this length into four sets of counters (by lane, summed at
// the end: the same counts): one set chains every increment of a repeated value (a conv's zero
// padding) through one counter's store and reload, ~5 cycles each.
constexpr size_t kLutSplitCountsFrom = 512;
void lut_occupied(const uint32_t* count, uint64_t* occupied);  // kLutBins / 64 words
using LutHistogramFn = void (*)(const float* x, size_t k, float lo, float inv_bw,
                                uint32_t* count, uint64_t* occupied);
LutHistogramFn lut_histogram_kernel(Isa isa);  // the tier's loops, the same counts and bitmap
// lo, hi: the row's range (lut_row_range); hist: the tier's histogram loop (the same counts).
void lut_params_mse(const float* x, size_t k, const LutActLevels& lv, float lo, float hi,
                    LutHistogramFn hist, float* s, float* off);

// One row of LUT2Config's activation quantizer: (s, off) from the static range [lo, hi]
// (is_static), the mse estimator, or the row's range (minmax), then the codes; the range and
// code loops of `isa`'s tier.
void lut_quantize_row(const float* x, size_t k, const LutActLevels& lv, bool mse, bool is_static,
                      float lo, float hi, Isa isa, uint8_t* codes, float* s, float* off);
#if defined(PQ_HAVE_X86)
void lut_row_range_avx2(const float* x, size_t k, float* lo, float* hi);
void lut_histogram_avx2(const float* x, size_t k, float lo, float inv_bw, uint32_t* count,
                        uint64_t* occupied);
void lut_codes_row_avx2(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                        uint8_t* codes);
void lut_row_range_avx512(const float* x, size_t k, float* lo, float* hi);
void lut_histogram_avx512(const float* x, size_t k, float lo, float inv_bw, uint32_t* count,
                          uint64_t* occupied);
void lut_codes_row_avx512(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                          uint8_t* codes);
#endif

}  // namespace pq
