// The scalar reference: each value computed arithmetically, exactly as algorithms.md section 5
// words it. The SIMD paths' tables are built from sparq_trim_value, so they agree by construction
// (and tests compare every value and every pair on every path).
#include "quantize/act_quantize.h"
#include "sparq/sparq.h"

namespace pq {

uint8_t sparq_trim_value(uint8_t a, int nw, uint32_t shifts, bool round) {
  if (a == 0) return 0;
  const int p = 31 - __builtin_clz(a);  // leading one
  int s = 0;
  for (int t = 0; t < 8; ++t) {
    if (((shifts >> t) & 1u) && t + nw - 1 >= p) {  // smallest allowed window covering p
      s = t;
      break;
    }
  }
  uint32_t w = static_cast<uint32_t>(a) >> s;
  if (round && s > 0) {
    const uint32_t rem = a & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (w & 1u))) ++w;  // half to even on the window LSB
    if (w == (1u << nw)) w = (1u << nw) - 1;          // carry-out: saturate, same shift
  }
  return static_cast<uint8_t>(w << s);
}

void sparq_trim_row_scalar(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  const SparqConfig& c = plan.cfg;
  const uint32_t shifts = sparq_shift_mask(c.bits, c.options);
  const uint32_t wide = sparq_zero_partner_mask(c.bits);
  for (size_t i = 0; i < k; i += 2) {
    const uint8_t a0 = src[i];
    const uint8_t a1 = i + 1 < k ? src[i + 1] : 0;  // odd tail: implicit zero partner
    const bool zero_partner = c.pairs && (a0 == 0 || a1 == 0);
    const int nw = zero_partner ? 2 * c.bits : c.bits;
    const uint32_t s = zero_partner ? wide : shifts;
    dst[i] = sparq_trim_value(a0, nw, s, c.round);
    if (i + 1 < k) dst[i + 1] = sparq_trim_value(a1, nw, s, c.round);
  }
}

float sparq_prep_row_scalar(const SparqPlan& plan, const float* x, size_t k,
                            const float* fixed_amax, SparqRowFormat fmt, uint8_t flip, uint8_t* tq,
                            uint8_t* dp, uint8_t* dn, bool* has_neg) {
  const float s = quantize_row_abs_u8(x, k, fixed_amax, tq);
  if (fmt != SparqRowFormat::magnitude) sparq_trim_row_scalar(plan, tq, k, tq);
  bool neg_seen = false;
  if (fmt == SparqRowFormat::s16) {
    int16_t* d = reinterpret_cast<int16_t*>(dp);
    for (size_t i = 0; i < k; ++i) {
      const int16_t v = tq[i];
      d[i] = x[i] < 0.0f ? static_cast<int16_t>(-v) : v;
    }
  } else if (fmt == SparqRowFormat::wide) {  // u = v + 256 in [1, 511]: top 7 bits, low 2 bits
    for (size_t i = 0; i < k; ++i) {
      const int u = 256 + (x[i] < 0.0f ? -tq[i] : tq[i]);
      dp[i] = static_cast<uint8_t>(u >> 2);
      dn[i] = static_cast<uint8_t>(u & 3);
    }
  } else if (fmt == SparqRowFormat::sign || fmt == SparqRowFormat::magnitude) {
    for (size_t i = 0; i < k; ++i) {
      dp[i] = tq[i];
      dn[i] = x[i] < 0.0f ? 0xff : 0x00;
    }
  } else {
    for (size_t i = 0; i < k; ++i) {
      const bool ng = x[i] < 0.0f;
      dp[i] = static_cast<uint8_t>((ng ? 0 : tq[i]) ^ flip);
      dn[i] = static_cast<uint8_t>((ng ? tq[i] : 0) ^ flip);
    }
  }
  for (size_t i = 0; i < k && !neg_seen; ++i) neg_seen = x[i] < 0.0f;
  *has_neg = neg_seen;
  return s;
}

}  // namespace pq
