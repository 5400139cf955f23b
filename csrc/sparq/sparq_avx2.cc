// AVX2 trimming, 32 values per step, computed rather than looked up whole (no 256-entry byte
// permute on AVX2): the leading-one position p comes from two nibble tables (vpshufb, max of
// high and low nibble), then 16-entry tables indexed by p | partner_zero<<3 give the window's
// LSB (1<<s), the rounding half and the all-ones window, and the rounding is plain byte logic.
#include <immintrin.h>

#include <cstring>

#include "sparq/sparq.h"

namespace pq {
namespace {

inline __m256i table16(const uint8_t* t) {
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

}  // namespace

void sparq_trim_row_avx2(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  // msb position of a nibble: high nibble h -> 4 + msb(h) (0 if h == 0), low nibble l -> msb(l)
  const __m256i msb_hi = _mm256_setr_epi8(0, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7,
                                          0, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7);
  const __m256i msb_lo = _mm256_setr_epi8(0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                                          0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i one_t = table16(plan.one), half_t = table16(plan.half), top_t = table16(plan.top);
  const __m256i nib = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  const __m256i ones = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
  const bool pairs = plan.cfg.pairs, round = plan.cfg.round;
  for (size_t i = 0; i < k; i += 32) {
    const size_t len = k - i < 32 ? k - i : 32;
    alignas(32) uint8_t tail[32] = {0};  // zeros past the row end: the odd tail's partner
    const uint8_t* in = src + i;
    if (len < 32) {
      std::memcpy(tail, in, len);
      in = tail;
    }
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), nib);
    __m256i idx = _mm256_max_epu8(_mm256_shuffle_epi8(msb_hi, hi),
                                  _mm256_shuffle_epi8(msb_lo, _mm256_and_si256(a, nib)));
    if (pairs) {
      const __m256i z = _mm256_cmpeq_epi8(a, zero);
      const __m256i partner_zero = _mm256_or_si256(_mm256_slli_epi16(z, 8), _mm256_srli_epi16(z, 8));
      idx = _mm256_or_si256(idx, _mm256_and_si256(partner_zero, eight));
    }
    const __m256i one = _mm256_shuffle_epi8(one_t, idx);  // 1 << s
    const __m256i low = _mm256_sub_epi8(one, ones);       // dropped bits
    __m256i r = _mm256_andnot_si256(low, a);              // window << s (truncated)
    if (round) {
      const __m256i rem = _mm256_and_si256(a, low);
      const __m256i half = _mm256_shuffle_epi8(half_t, idx);  // <= 0x7f: signed compare is fine
      const __m256i odd = _mm256_cmpeq_epi8(_mm256_and_si256(a, one), one);
      const __m256i up = _mm256_or_si256(_mm256_cmpgt_epi8(rem, half),
                                         _mm256_and_si256(_mm256_cmpeq_epi8(rem, half), odd));
      const __m256i full = _mm256_cmpeq_epi8(r, _mm256_shuffle_epi8(top_t, idx));  // saturate
      r = _mm256_add_epi8(r, _mm256_andnot_si256(full, _mm256_and_si256(up, one)));
    }
    if (len == 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), r);
    else {
      _mm256_store_si256(reinterpret_cast<__m256i*>(tail), r);
      std::memcpy(dst + i, tail, len);
    }
  }
}

}  // namespace pq
