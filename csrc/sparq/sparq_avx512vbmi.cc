// AVX-512 trimming: the whole per-value function is a 256-entry table, looked up 64 bytes at a
// time with two vpermi2b (VBMI, 128 entries each) blended on the top bit. vSPARQ looks up the
// zero-partner table too and selects per byte with a mask: partner-is-zero is the zero mask
// with adjacent bits swapped (pairs are (k, k+1), k even, and rows start at even offsets).
#include <immintrin.h>

#include "sparq/sparq.h"

namespace pq {
namespace {

inline __m512i lookup256(__m512i a, __mmask64 top_bit, const __m512i t[4]) {
  const __m512i lo = _mm512_permutex2var_epi8(t[0], a, t[1]);
  const __m512i hi = _mm512_permutex2var_epi8(t[2], a, t[3]);
  return _mm512_mask_blend_epi8(top_bit, lo, hi);
}

}  // namespace

void sparq_trim_row_avx512(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  __m512i base[4], wide[4];
  for (int j = 0; j < 4; ++j) {
    base[j] = _mm512_load_si512(plan.lut[0] + 64 * j);
    wide[j] = _mm512_load_si512(plan.lut[1] + 64 * j);
  }
  const bool pairs = plan.cfg.pairs;
  constexpr uint64_t kEven = 0x5555555555555555ull;
  for (size_t i = 0; i < k; i += 64) {
    const __mmask64 live = k - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (k - i)) - 1;
    const __m512i a = _mm512_maskz_loadu_epi8(live, src + i);  // zeros past the row end
    const __mmask64 top_bit = _mm512_movepi8_mask(a);
    __m512i r = lookup256(a, top_bit, base);
    if (pairs) {
      const uint64_t zero = _mm512_testn_epi8_mask(a, a);
      const __mmask64 partner_zero = ((zero >> 1) & kEven) | ((zero & kEven) << 1);
      r = _mm512_mask_blend_epi8(partner_zero, r, lookup256(a, top_bit, wide));
    }
    _mm512_mask_storeu_epi8(dst + i, live, r);
  }
}

}  // namespace pq
