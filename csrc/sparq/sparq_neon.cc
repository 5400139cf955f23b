// NEON trimming, 16 values per step: the same computation as the AVX2 path (nibble tables for
// the leading one, 16-entry tables indexed by p | partner_zero<<3 for the window constants),
// with tbl for vpshufb and rev16 to swap each pair's zero flags.
#include <arm_neon.h>

#include <cstring>

#include "sparq/sparq.h"

namespace pq {

void sparq_trim_row_neon(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  static const uint8_t kMsbHi[16] = {0, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7};
  static const uint8_t kMsbLo[16] = {0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  const uint8x16_t msb_hi = vld1q_u8(kMsbHi), msb_lo = vld1q_u8(kMsbLo);
  const uint8x16_t one_t = vld1q_u8(plan.one), half_t = vld1q_u8(plan.half),
                   top_t = vld1q_u8(plan.top);
  const uint8x16_t nib = vdupq_n_u8(0x0f), eight = vdupq_n_u8(8), ones = vdupq_n_u8(1);
  const bool pairs = plan.cfg.pairs, round = plan.cfg.round;
  for (size_t i = 0; i < k; i += 16) {
    const size_t len = k - i < 16 ? k - i : 16;
    uint8_t tail[16] = {0};  // zeros past the row end: the odd tail's partner
    const uint8_t* in = src + i;
    if (len < 16) {
      std::memcpy(tail, in, len);
      in = tail;
    }
    const uint8x16_t a = vld1q_u8(in);
    uint8x16_t idx = vmaxq_u8(vqtbl1q_u8(msb_hi, vshrq_n_u8(a, 4)), vqtbl1q_u8(msb_lo, vandq_u8(a, nib)));
    if (pairs) {
      const uint8x16_t partner_zero = vrev16q_u8(vceqzq_u8(a));
      idx = vorrq_u8(idx, vandq_u8(partner_zero, eight));
    }
    const uint8x16_t one = vqtbl1q_u8(one_t, idx);  // 1 << s
    const uint8x16_t low = vsubq_u8(one, ones);     // dropped bits
    uint8x16_t r = vbicq_u8(a, low);                // window << s (truncated)
    if (round) {
      const uint8x16_t rem = vandq_u8(a, low);
      const uint8x16_t half = vqtbl1q_u8(half_t, idx);
      const uint8x16_t odd = vtstq_u8(a, one);
      const uint8x16_t up = vorrq_u8(vcgtq_u8(rem, half), vandq_u8(vceqq_u8(rem, half), odd));
      const uint8x16_t full = vceqq_u8(r, vqtbl1q_u8(top_t, idx));  // saturate
      r = vaddq_u8(r, vbicq_u8(vandq_u8(up, one), full));
    }
    if (len == 16)
      vst1q_u8(dst + i, r);
    else {
      vst1q_u8(tail, r);
      std::memcpy(dst + i, tail, len);
    }
  }
}

}  // namespace pq
