// LUT2's row range and codes, 16 lanes at a time, with the scalar loops' bits (the reasoning of
// lut_quantize_avx2.cc; masked tails instead of scalar ones).
#include <immintrin.h>

#include <cmath>

#include "quantize/act_quantize.h"
#include "quantize/lut_histogram_x86.h"

namespace pq {

void lut_row_range_avx512(const float* x, size_t k, float* lo, float* hi) {
  if (std::isnan(x[0]) || k < 32) return lut_row_range(x, k, lo, hi);
  __m512 vlo = _mm512_set1_ps(x[0]), vhi = vlo;
  size_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vlo = _mm512_min_ps(v, vlo);
    vhi = _mm512_max_ps(v, vhi);
  }
  if (i < k) {  // masked-off lanes keep their value
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    vlo = _mm512_mask_min_ps(vlo, m, v, vlo);
    vhi = _mm512_mask_max_ps(vhi, m, v, vhi);
  }
  // no NaN in the lanes (they started from x[0]): the reductions give the value
  float l = _mm512_reduce_min_ps(vlo), h = _mm512_reduce_max_ps(vhi);
  lut_range_zero_sign(x, &l, &h);
  *lo = l;
  *hi = h;
}

// The bin index 16 values at a time (the scalar formula's operations), the counts from the
// lanes one by one (long rows in four sets of counters); the bitmap 16 counts per test.
void lut_histogram_avx512(const float* x, size_t k, float lo, float inv_bw, uint32_t* count,
                          uint64_t* occupied) {
  const __m512 vlo = _mm512_set1_ps(lo), vinv = _mm512_set1_ps(inv_bw);
  const __m512 top = _mm512_set1_ps(static_cast<float>(kLutBins - 1)), zero = _mm512_setzero_ps();
  const auto bins_at = [&](size_t i) {
    __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + i), vlo);
    t = _mm512_mul_ps(t, vinv);
    // t > 0 (false for NaN) ? trunc(min(t, B - 1)) : 0
    return _mm512_maskz_cvttps_epi32(_mm512_cmp_ps_mask(t, zero, _CMP_GT_OQ),
                                     _mm512_min_ps(t, top));
  };
  const auto count_bins = [](__m512i b, uint32_t* const* c) {
    lut_count4(_mm512_castsi512_si128(b), c);
    lut_count4(_mm512_extracti32x4_epi32(b, 1), c);
    lut_count4(_mm512_extracti32x4_epi32(b, 2), c);
    lut_count4(_mm512_extracti32x4_epi32(b, 3), c);
  };
  const size_t i = lut_count_steps<16>(k, count, bins_at, count_bins);
  if (i < k) lut_histogram(x + i, k - i, lo, inv_bw, count);
  for (int w = 0; w < kLutBins / 64; ++w) {
    uint64_t bits = 0;
    for (int q = 0; q < 4; ++q) {
      const __m512i c = _mm512_loadu_si512(count + 64 * w + 16 * q);
      bits |= uint64_t{_mm512_test_epi32_mask(c, c)} << (16 * q);
    }
    occupied[w] = bits;
  }
}

void lut_codes_row_avx512(const float* x, size_t k, const LutActLevels& lv, float s, float off,
                          uint8_t* codes) {
  const float inv = 1.0f / s;
  const __m512 voff = _mm512_set1_ps(off), vinv = _mm512_set1_ps(inv);
  const __m512 m0 = _mm512_set1_ps(lv.mids[0]), m1 = _mm512_set1_ps(lv.mids[1]),
               m2 = _mm512_set1_ps(lv.mids[2]);
  const __m512i table = _mm512_setr_epi32(lv.order[0], lv.order[1], lv.order[2], lv.order[3], 0,
                                          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i one = _mm512_set1_epi32(1);
  for (size_t i = 0; i < k; i += 16) {
    const __mmask16 m =
        k - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), voff);
    v = _mm512_mul_ps(v, vinv);
    __m512i pos = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, m0, _CMP_GT_OQ), one);
    pos = _mm512_mask_add_epi32(pos, _mm512_cmp_ps_mask(v, m1, _CMP_GT_OQ), pos, one);
    pos = _mm512_mask_add_epi32(pos, _mm512_cmp_ps_mask(v, m2, _CMP_GT_OQ), pos, one);
    _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, _mm512_permutexvar_epi32(pos, table));
  }
}

}  // namespace pq
