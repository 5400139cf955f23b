#include "quantize/act_quantize.h"
#include "quantize/row_quantize.h"

#include <algorithm>
#include <cmath>

namespace pq {

float quantize_row_abs_u8(const float* x, size_t k, const float* fixed_amax, uint8_t* q) {
  float amax = 0.0f;
  if (fixed_amax) {
    amax = *fixed_amax;
  } else {
    for (size_t i = 0; i < k; ++i) {
      const float a = std::fabs(x[i]);
      amax = a > amax ? a : amax;
    }
  }
  const float s = amax > 0.0f ? amax / 255.0f : 1.0f;
  const float inv = 1.0f / s;
  for (size_t i = 0; i < k; ++i) {
    float t = std::fabs(x[i]) * inv;
    t = t + 0.5f;
    t = t > 0.0f ? (t < 255.25f ? t : 255.25f) : 0.0f;  // NaN (x NaN, or inf * 0) -> 0
    q[i] = static_cast<uint8_t>(t);
  }
  return s;
}

LutActLevels lut_act_levels(const int32_t levels[4]) {
  LutActLevels lv;
  uint8_t idx[4] = {0, 1, 2, 3};
  std::sort(idx, idx + 4, [&](uint8_t a, uint8_t b) { return levels[a] < levels[b]; });
  for (int i = 0; i < 4; ++i) {
    lv.order[i] = idx[i];
    lv.sorted[i] = static_cast<float>(levels[idx[i]]);
  }
  for (int i = 0; i < 3; ++i) lv.mids[i] = (lv.sorted[i] + lv.sorted[i + 1]) / 2.0f;
  return lv;
}

void lut_codes_row(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                   uint8_t* codes) {
  const float inv = 1.0f / s;
  const float m0 = lv.mids[0], m1 = lv.mids[1], m2 = lv.mids[2];
  // codes of sorted positions 0..3 packed in one word: code = (table >> (8 * i)) & 0xff
  const uint32_t table = lv.order[0] | lv.order[1] << 8 | lv.order[2] << 16 |
                         static_cast<uint32_t>(lv.order[3]) << 24;
  for (size_t i = 0; i < k; ++i) {
    float v = x[i] - off;
    v = v * inv;
    const uint32_t pos = (v > m0) + (v > m1) + (v > m2);
    codes[i] = static_cast<uint8_t>(table >> (8 * pos));
  }
}

void lut_params_minmax(const LutActLevels& lv, float lo, float hi, float* s, float* off) {
  const float span = lv.sorted[3] - lv.sorted[0];
  if (range_overflows(lo, hi)) {  // s and off in double: neither hi - lo nor s * lmin overflows
    const double ds = (static_cast<double>(hi) - lo) / span;
    *s = static_cast<float>(ds);
    *off = static_cast<float>(lo - ds * lv.sorted[0]);
    return;
  }
  float sa = (hi - lo) / span;
  if (!(sa > 0.0f)) sa = 1.0f;
  *s = sa;
  *off = lo - sa * lv.sorted[0];
}

float lut_candidate_ratio(int i) { return static_cast<float>(1.0 - 0.85 * i / 11.0); }

void lut_row_range(const float* x, size_t k, float* lo, float* hi) {
  size_t first = 0;  // NaN values are skipped, leading ones too (an all-NaN row gives NaN)
  while (first + 1 < k && std::isnan(x[first])) ++first;
  float l = x[first], h = x[first];
  for (size_t i = first + 1; i < k; ++i) {
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
  }
  *lo = l;
  *hi = h;
}

LutRowRangeFn lut_row_range_kernel(Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx512) return lut_row_range_avx512;
  if (isa == Isa::avx2) return lut_row_range_avx2;
#else
  (void)isa;
#endif
  return lut_row_range;
}

namespace {
void lut_histogram_occupied(const float* x, size_t k, float lo, float inv_bw, uint32_t* count,
                            uint64_t* occupied) {
  lut_histogram(x, k, lo, inv_bw, count);
  lut_occupied(count, occupied);
}
}  // namespace

LutHistogramFn lut_histogram_kernel(Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx512) return lut_histogram_avx512;
  if (isa == Isa::avx2) return lut_histogram_avx2;
#else
  (void)isa;
#endif
  return lut_histogram_occupied;
}

void lut_quantize_row(const float* x, size_t k, const LutActLevels& lv, bool mse, bool is_static,
                      float lo, float hi, Isa isa, uint8_t* codes, float* s, float* off) {
  const LutRowRangeFn range = lut_row_range_kernel(isa);
  const LutHistogramFn hist = lut_histogram_kernel(isa);
  auto code_row = lut_codes_row;
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx512) code_row = lut_codes_row_avx512;
  if (isa == Isa::avx2) code_row = lut_codes_row_avx2;
#endif
  if (is_static) {
    lut_params_minmax(lv, lo, hi, s, off);
  } else {
    range(x, k, &lo, &hi);
    if (mse)
      lut_params_mse(x, k, lv, lo, hi, hist, s, off);
    else
      lut_params_minmax(lv, lo, hi, s, off);
  }
  code_row(x, k, lv, *s, *off, codes);
}

void lut_histogram(const float* x, size_t k, float lo, float inv_bw, uint32_t* count) {
  for (size_t i = 0; i < k; ++i) {
    float t = x[i] - lo;
    t = t * inv_bw;
    // NaN (a NaN input, or inf * 0 when hi - lo overflows) goes to bin 0: never an int cast
    // of NaN or of a value out of range
    const int b = t > 0.0f ? (t < kLutBins - 1 ? static_cast<int>(t) : kLutBins - 1) : 0;
    ++count[b];
  }
}

void lut_occupied(const uint32_t* count, uint64_t* occupied) {
  for (int w = 0; w < kLutBins / 64; ++w) {
    uint64_t bits = 0;  // in a register: an |= into memory per bin was a store-forwarding chain
    for (int i = 0; i < 64; ++i) bits |= uint64_t{count[64 * w + i] != 0} << i;
    occupied[w] = bits;
  }
}

void lut_params_mse(const float* x, size_t k, const LutActLevels& lv, float lo, float hi,
                    LutHistogramFn hist, float* s, float* off) {
  // (no float32 bin width for a range wider than FLT_MAX: minmax's parameters instead)
  if (!(hi > lo) || range_overflows(lo, hi)) return lut_params_minmax(lv, lo, hi, s, off);
  uint32_t count[kLutBins] = {};
  uint64_t occupied[kLutBins / 64];
  hist(x, k, lo, static_cast<float>(kLutBins) / (hi - lo), count, occupied);
  // The occupied bins in increasing order, with prefix sums of n, n t and n t^2 where t = 2b + 1:
  // bin b's centre is c_b = lo + t h (h = width / 2), so a level's error over a run of bins,
  // sum n (c_b - R)^2 = h^2 T2 - 2 h d T1 + d^2 S0 with d = R - lo, comes from exact integer
  // sums (n <= k, t < 2 kLutBins) measured from lo. (Sums of n c and n c^2 on the absolute
  // centres cancelled on rows whose spread is a few ulps of their mean, and chained a float
  // add per bin.) Only occupied bins are visited (an empty bin adds exactly 0), found from the
  // bitmap; below(b) = the number of occupied bins before bin b, by popcounts of the bitmap.
  uint64_t q0[kLutBins + 1], q1[kLutBins + 1], q2[kLutBins + 1];
  int word_below[kLutBins / 64 + 1];
  int nb = 0;
  const double dlo = lo, width = (static_cast<double>(hi) - dlo) / kLutBins, h = width / 2,
               inv_width = 1.0 / width;
  q0[0] = q1[0] = q2[0] = 0;
  for (int w = 0; w < kLutBins / 64; ++w) {
    word_below[w] = nb;
    for (uint64_t bits = occupied[w]; bits; bits &= bits - 1) {
      const uint64_t t = 2 * uint64_t(64 * w + __builtin_ctzll(bits)) + 1, n = count[t / 2];
      q0[nb + 1] = q0[nb] + n;
      q1[nb + 1] = q1[nb] + n * t;
      q2[nb + 1] = q2[nb] + n * t * t;
      ++nb;
    }
  }
  word_below[kLutBins / 64] = nb;
  const auto below = [&](int b) {  // 0 <= b <= kLutBins
    const int w = b / 64, i = b % 64;
    return i == 0 ? word_below[w]
                  : word_below[w] + __builtin_popcountll(occupied[w] & (~uint64_t{0} >> (64 - i)));
  };
  const double mu_lo = h * static_cast<double>(q1[nb]) / static_cast<double>(k);  // mu - lo
  const double mu = dlo + mu_lo;
  const double lmin = lv.sorted[0], span = static_cast<double>(lv.sorted[3]) - lmin;
  double best_err = 0.0, best_s = 1.0, best_off = 0.0;
  for (int c = 0; c < kLutCandidates; ++c) {
    const double r = lut_candidate_ratio(c);
    const double clo = mu + r * (dlo - mu), chi = mu + r * (static_cast<double>(hi) - mu);
    const double sa = (chi - clo) / span, o = clo - sa * lmin, inv = 1.0 / sa;
    // v(b) = (c_b - o) * inv is non-decreasing in the bin b: level j covers the occupied bins
    // with mids[j-1] < v <= mids[j]; split[j] = the number of occupied bins with v <= mids[j] =
    // below[first bin with v > mids[j]]. That bin is estimated from the affine v(b) and then
    // moved until the exact test (the same double expression per bin) brackets it.
    int split[4];
    for (int j = 0; j < 3; ++j) {
      const auto above = [&](int b) { return (dlo + (b + 0.5) * width - o) * inv > lv.mids[j]; };
      // only a starting point (the walks below make the split exact): no division needed
      const double est = (lv.mids[j] * sa + o - dlo) * inv_width - 0.5;
      int b = est >= 0.0 ? (est < kLutBins ? static_cast<int>(est) : kLutBins) : 0;  // NaN: 0
      while (b > 0 && above(b - 1)) --b;
      while (b < kLutBins && !above(b)) ++b;
      split[j] = below(b);
    }
    split[3] = nb;
    double err = 0.0;
    for (int j = 0, from = 0; j < 4; from = split[j], ++j) {
      // the level's value o + sa * level measured from lo, without the large terms:
      // clo - lo = (1 - r) (mu - lo), o + sa * level - clo = sa * (level - lmin)
      const double d = (1.0 - r) * mu_lo + sa * (lv.sorted[j] - lmin);
      const double s0 = static_cast<double>(q0[split[j]] - q0[from]),
                   t1 = static_cast<double>(q1[split[j]] - q1[from]),
                   t2 = static_cast<double>(q2[split[j]] - q2[from]);
      err += h * h * t2 - 2.0 * h * d * t1 + d * d * s0;
    }
    if (c == 0 || err < best_err) {
      best_err = err;
      best_s = sa;
      best_off = o;
    }
  }
  float sa = static_cast<float>(best_s);
  if (!(sa > 0.0f)) sa = 1.0f;
  *s = sa;
  *off = static_cast<float>(best_off);
}

}  // namespace pq
