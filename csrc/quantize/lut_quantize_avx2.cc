// LUT2's row range and codes, 8 lanes at a time, with the scalar loops' bits (act_quantize.h).
// Range: each lane runs the scalar rule (vminps(x, lo) is x < lo ? x : lo, NaN x skipped) from
// x[0]; the lanes' results are equal values but for a zero's sign, which is then the row's first
// zero's, as the scalar rule keeps the first of equal values. Codes: subtract, then multiply
// (no FMA), three ordered compares (false for NaN, as in the scalar loop), a 4-entry lookup.
#include <immintrin.h>

#include <cmath>

#include "core/avx2_reduce.h"
#include "quantize/act_quantize.h"
#include "quantize/lut_histogram_x86.h"

namespace pq {

void lut_row_range_avx2(const float* x, size_t k, float* lo, float* hi) {
  if (std::isnan(x[0]) || k < 16) return lut_row_range(x, k, lo, hi);
  __m256 vlo = _mm256_set1_ps(x[0]), vhi = vlo;
  size_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vlo = _mm256_min_ps(v, vlo);
    vhi = _mm256_max_ps(v, vhi);
  }
  float l = hmin8(vlo), h = hmax8(vhi);  // lanes hold no NaN: they started from x[0]
  for (; i < k; ++i) {
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
  }
  lut_range_zero_sign(x, &l, &h);
  *lo = l;
  *hi = h;
}

// The bin index 8 values at a time (the scalar formula's operations), the counts from the
// lanes one by one (long rows in four sets of counters); the bitmap 8 counts per compare.
void lut_histogram_avx2(const float* x, size_t k, float lo, float inv_bw, uint32_t* count,
                        uint64_t* occupied) {
  const __m256 vlo = _mm256_set1_ps(lo), vinv = _mm256_set1_ps(inv_bw);
  const __m256 top = _mm256_set1_ps(static_cast<float>(kLutBins - 1)), zero = _mm256_setzero_ps();
  const auto bins_at = [&](size_t i) {
    __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + i), vlo);
    t = _mm256_mul_ps(t, vinv);
    // t > 0 (false for NaN) ? trunc(min(t, B - 1)) : 0
    return _mm256_and_si256(_mm256_cvttps_epi32(_mm256_min_ps(t, top)),
                            _mm256_castps_si256(_mm256_cmp_ps(t, zero, _CMP_GT_OQ)));
  };
  const auto count_bins = [](__m256i b, uint32_t* const* c) {
    lut_count4(_mm256_castsi256_si128(b), c);
    lut_count4(_mm256_extracti128_si256(b, 1), c);
  };
  const size_t i = lut_count_steps<8>(k, count, bins_at, count_bins);
  if (i < k) lut_histogram(x + i, k - i, lo, inv_bw, count);
  for (int w = 0; w < kLutBins / 64; ++w) {
    uint64_t empty = 0;
    for (int q = 0; q < 8; ++q) {
      const __m256i c =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(count + 64 * w + 8 * q));
      const __m256i z = _mm256_cmpeq_epi32(c, _mm256_setzero_si256());
      empty |= uint64_t(static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(z)))) << (8 * q);
    }
    occupied[w] = ~empty;
  }
}

void lut_codes_row_avx2(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                        uint8_t* codes) {
  const float inv = 1.0f / s;
  const __m256 voff = _mm256_set1_ps(off), vinv = _mm256_set1_ps(inv);
  const __m256 m0 = _mm256_set1_ps(lv.mids[0]), m1 = _mm256_set1_ps(lv.mids[1]),
               m2 = _mm256_set1_ps(lv.mids[2]);
  const __m256i table = _mm256_setr_epi32(lv.order[0], lv.order[1], lv.order[2], lv.order[3], 0,
                                          0, 0, 0);
  // dword j of each 128-bit lane -> byte j of the lane, then the lanes' 4 bytes side by side
  const __m256i to_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                            -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                            -1, -1, -1, -1);
  size_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), voff);
    v = _mm256_mul_ps(v, vinv);
    // each true compare is -1: pos = -(c0 + c1 + c2)
    const __m256i c = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_castps_si256(_mm256_cmp_ps(v, m0, _CMP_GT_OQ)),
                         _mm256_castps_si256(_mm256_cmp_ps(v, m1, _CMP_GT_OQ))),
        _mm256_castps_si256(_mm256_cmp_ps(v, m2, _CMP_GT_OQ)));
    const __m256i pos = _mm256_sub_epi32(_mm256_setzero_si256(), c);
    const __m256i b = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(table, pos), to_bytes);
    const uint32_t lo4 = static_cast<uint32_t>(_mm256_extract_epi32(b, 0));
    const uint32_t hi4 = static_cast<uint32_t>(_mm256_extract_epi32(b, 4));
    const uint64_t eight = lo4 | static_cast<uint64_t>(hi4) << 32;
    __builtin_memcpy(codes + i, &eight, 8);
  }
  if (i < k) lut_codes_row(x + i, k - i, lv, s, off, codes + i);
}

}  // namespace pq
