// AVX2 trimming, 32 values per step, computed rather than looked up whole (no 256-entry byte
// permute on AVX2): the leading-one position p comes from two nibble tables (vpshufb, max of
// high and low nibble), then 16-entry tables indexed by p | partner_zero<<3 give the window's
// LSB (1<<s), the rounding half and the all-ones window, and the rounding is plain byte logic.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "sparq/sparq.h"

namespace pq {
namespace {

// 32 bytes from p, of which only the first len may be read (zeros past them: the odd tail's
// partner, the K tail's padding).
inline __m256i load32_padded(const uint8_t* p, size_t len) {
  if (len >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  alignas(32) uint8_t tail[32] = {0};
  std::memcpy(tail, p, len);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
}

inline __m256i table16(const uint8_t* t) {
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

// The trim of 32 values in a register (pairs (k, k+1), k even, inside the 32): the constants
// loaded once per row.
class Trim32 {
 public:
  explicit Trim32(const SparqPlan& plan)
      : one_t_(table16(plan.one)), half_t_(table16(plan.half)), top_t_(table16(plan.top)),
        pairs_(plan.cfg.pairs), round_(plan.cfg.round) {}

  // Pairs (k, k + 1) inside the 32 judge the zero partner.
  __m256i operator()(__m256i a) const {
    __m256i idx = msb(a);
    if (pairs_) {
      const __m256i z = _mm256_cmpeq_epi8(a, _mm256_setzero_si256());
      const __m256i partner_zero =
          _mm256_or_si256(_mm256_slli_epi16(z, 8), _mm256_srli_epi16(z, 8));
      idx = _mm256_or_si256(idx, _mm256_and_si256(partner_zero, _mm256_set1_epi8(8)));
    }
    return window(a, idx);
  }
  // Every value as if its partner were non-zero (lut[0]) or zero (lut[1]).
  __m256i with_partner(__m256i a, bool partner_zero) const {
    const __m256i idx = msb(a);
    return window(a, partner_zero ? _mm256_or_si256(idx, _mm256_set1_epi8(8)) : idx);
  }

 private:
  static __m256i msb(__m256i a) {
    // msb position of a nibble: high nibble h -> 4 + msb(h) (0 if h == 0), low nibble l -> msb(l)
    const __m256i msb_hi = _mm256_setr_epi8(0, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7,
                                            0, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7);
    const __m256i msb_lo = _mm256_setr_epi8(0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                                            0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), nib);
    return _mm256_max_epu8(_mm256_shuffle_epi8(msb_hi, hi),
                           _mm256_shuffle_epi8(msb_lo, _mm256_and_si256(a, nib)));
  }
  // The window at the shift of table index idx = p | partner_zero << 3.
  __m256i window(__m256i a, __m256i idx) const {
    const __m256i ones = _mm256_set1_epi8(1);
    const __m256i one = _mm256_shuffle_epi8(one_t_, idx);  // 1 << s
    const __m256i low = _mm256_sub_epi8(one, ones);        // dropped bits
    __m256i r = _mm256_andnot_si256(low, a);               // window << s (truncated)
    if (round_) {
      const __m256i rem = _mm256_and_si256(a, low);
      const __m256i half = _mm256_shuffle_epi8(half_t_, idx);  // <= 0x7f: signed compare is fine
      const __m256i odd = _mm256_cmpeq_epi8(_mm256_and_si256(a, one), one);
      const __m256i up = _mm256_or_si256(_mm256_cmpgt_epi8(rem, half),
                                         _mm256_and_si256(_mm256_cmpeq_epi8(rem, half), odd));
      const __m256i full = _mm256_cmpeq_epi8(r, _mm256_shuffle_epi8(top_t_, idx));  // saturate
      r = _mm256_add_epi8(r, _mm256_andnot_si256(full, _mm256_and_si256(up, one)));
    }
    return r;
  }

  __m256i one_t_, half_t_, top_t_;
  bool pairs_, round_;
};

}  // namespace

void sparq_trim_row_avx2(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  const Trim32 trim(plan);
  for (size_t i = 0; i < k; i += 32) {
    const size_t len = k - i < 32 ? k - i : 32;
    const __m256i r = trim(load32_padded(src + i, len));
    if (len == 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), r);
    else {
      alignas(32) uint8_t tail[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tail), r);
      std::memcpy(dst + i, tail, len);
    }
  }
}

// 2:4 selector tables (sparq24_tables_row's layout and values), 8 k groups (32 activations) per
// step: both trims of the 32 values (partner non-zero: lut[0], zero: lut[1]), then per group
// three vpshufb and a blend place them. Table byte e of a group's E0 | E1 (lanes 0 | 1) holds
// its own activation's trim, the zero-partner one where its partner is zero and always for a
// single (partner index 0x80 reads 0: "not non-zero"); unused bytes read 0 from both trims.
namespace {
struct Tables24Shuffles {
  // [group i of a 16-activation lane][table byte]: own / partner activation index (0x80: none)
  alignas(32) uint8_t own[4][32];
  alignas(32) uint8_t partner[4][32];
  Tables24Shuffles() {
    for (int i = 0; i < 4; ++i)
      for (size_t b = 0; b < 32; ++b) {
        const S24TableByte t = sparq24_table_byte(b);
        own[i][b] = static_cast<uint8_t>(t.own < 0 ? 0x80 : 4 * i + t.own);
        partner[i][b] = static_cast<uint8_t>(t.partner < 0 ? 0x80 : 4 * i + t.partner);
      }
  }
};

inline __m256i lane_in_both(__m256i v, size_t lane) {
  return lane ? _mm256_permute2x128_si256(v, v, 0x11) : _mm256_permute2x128_si256(v, v, 0x00);
}
}  // namespace

namespace {

// The tables of a row of magnitudes `a`; with `negative` (k flags, non-zero: the activation is
// negative) split by sign as sparq24_split_tables does (into out and neg, with `high` the narrow
// tables too), in the same pass: a table byte's sign is its own activation's (one more vpshufb).
template <bool kSigned>
size_t tables24_avx2(const SparqPlan& plan, const uint8_t* a, const uint8_t* negative, size_t k,
                     uint8_t* out, uint8_t* neg, uint64_t* high) {
  static const Tables24Shuffles sh;
  const Trim32 trim(plan);
  const size_t groups = (k + 3) / 4;
  const __m256i zero = _mm256_setzero_si256(), low7 = _mm256_set1_epi8(0x7f);
  const __m256i one = _mm256_set1_epi8(1);
  if (kSigned && high) std::memset(high, 0, (groups + 63) / 64 * sizeof(uint64_t));
  size_t count = 0;
  for (size_t g0 = 0; g0 < groups; g0 += 8) {
    const __m256i x = load32_padded(a + 4 * g0, k - 4 * g0);
    const __m256i w = trim.with_partner(x, false), f = trim.with_partner(x, true);
    const __m256i nz = _mm256_xor_si256(_mm256_cmpeq_epi8(x, zero), _mm256_set1_epi8(-1));
    __m256i ng = zero;  // 0xff: the activation is negative
    if (kSigned)
      ng = _mm256_xor_si256(_mm256_cmpeq_epi8(load32_padded(negative + 4 * g0, k - 4 * g0), zero),
                            _mm256_set1_epi8(-1));
    for (size_t h = 0; h < 2; ++h) {  // groups g0 + 4h .. g0 + 4h + 3: lane h, in both lanes
      const __m256i wh = lane_in_both(w, h), fh = lane_in_both(f, h), nzh = lane_in_both(nz, h);
      const __m256i ngh = lane_in_both(ng, h);
      for (size_t i = 0; i < 4 && g0 + 4 * h + i < groups; ++i) {
        const size_t g = g0 + 4 * h + i;
        const __m256i own = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh.own[i]));
        const __m256i partner = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh.partner[i]));
        const __m256i v = _mm256_blendv_epi8(_mm256_shuffle_epi8(fh, own),
                                             _mm256_shuffle_epi8(wh, own),
                                             _mm256_shuffle_epi8(nzh, partner));
        __m256i* dst = reinterpret_cast<__m256i*>(out + g * kS24TableBytes);
        if (!kSigned) {
          _mm256_storeu_si256(dst, v);
          continue;
        }
        __m256i* dst_neg = reinterpret_cast<__m256i*>(neg + g * kS24TableBytes);
        const __m256i m = _mm256_shuffle_epi8(ngh, own);  // (own 0x80: no activation, 0)
        __m256i p = _mm256_andnot_si256(m, v), n = _mm256_and_si256(m, v);
        if (high) {  // E1 halves: l = sign * (|t| & 127), h = sign * (|t| >> 7) of E0's bytes
          const __m256i l = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(v, low7), m), m);
          const __m256i top = _mm256_and_si256(_mm256_srli_epi16(v, 7), one);
          const __m256i hi = _mm256_sub_epi8(_mm256_xor_si256(top, m), m);
          p = _mm256_permute2x128_si256(p, l, 0x20);
          n = _mm256_permute2x128_si256(n, hi, 0x20);
          if (_mm256_movemask_epi8(v) & 0xffff) {
            high[g / 64] |= uint64_t{1} << (g % 64);
            ++count;
          }
        }
        _mm256_storeu_si256(dst, p);
        _mm256_storeu_si256(dst_neg, n);
      }
    }
  }
  return count;
}

}  // namespace

void sparq24_tables_row_avx2(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out) {
  tables24_avx2<false>(plan, a, nullptr, k, out, nullptr, nullptr);
}

size_t sparq24_tables_row_signed_avx2(const SparqPlan& plan, const uint8_t* a,
                                      const uint8_t* negative, size_t k, uint8_t* out,
                                      uint8_t* neg, uint64_t* high) {
  return tables24_avx2<true>(plan, a, negative, k, out, neg, high);
}

}  // namespace pq

// ---------------------------------------------------------------- fused forward row preparation
// The scalar definition (sparq_prep_row_scalar) 32 values per step: max |x| (vmaxps ignores NaN
// like the scalar compare), then one pass of q = trunc(min(|x| * inv + 0.5, 255.25)) with the
// same separate multiply and add, the trim and the row format's bytes, all in registers. s16
// rows (no AVX2 path uses them) go to the scalar code. `tq` is not needed here.
namespace pq {
namespace {

// 32 floats -> 32 bytes in order (the values are in [0, 255] or a conversion's 0x80000000).
inline __m256i pack_u8(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
  const __m256i w01 = _mm256_packs_epi32(i0, i1), w23 = _mm256_packs_epi32(i2, i3);
  const __m256i b = _mm256_packus_epi16(w01, w23);
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// x < 0 of 32 floats as a byte mask (0xff / 0), in order.
inline __m256i neg_mask(const float* x) {
  const __m256 z = _mm256_setzero_ps();
  __m256i m[4];
  for (int j = 0; j < 4; ++j)
    m[j] = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * j), z, _CMP_LT_OQ));
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(m[0], m[1]), _mm256_packs_epi32(m[2], m[3]));
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

}  // namespace

float sparq_prep_row_avx2(const SparqPlan& plan, const float* x, size_t k, const float* fixed_amax,
                          SparqRowFormat fmt, uint8_t flip, uint8_t* tq, uint8_t* dp, uint8_t* dn,
                          bool* has_neg) {
  if (fmt == SparqRowFormat::s16)
    return sparq_prep_row_scalar(plan, x, k, fixed_amax, fmt, flip, tq, dp, dn, has_neg);
  const size_t kv = k / 32 * 32;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  float amax = 0.0f;
  if (fixed_amax) {
    amax = *fixed_amax;
  } else {
    // four running maxima: one chain of dependent vmaxps bounded the whole row preparation
    // (a quarter of a post-ReLU SPARQ layer's time, AVX2-only tier)
    __m256 m4[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                    _mm256_setzero_ps()};
    size_t i = 0;
    for (; i + 32 <= k; i += 32)
      for (int j = 0; j < 4; ++j)  // NaN: keeps the running max
        m4[j] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 8 * j), abs_mask), m4[j]);
    for (; i < k / 8 * 8; i += 8)
      m4[0] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m4[0]);
    const __m256 m = _mm256_max_ps(_mm256_max_ps(m4[0], m4[1]), _mm256_max_ps(m4[2], m4[3]));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, m);
    for (float v : lanes) amax = v > amax ? v : amax;
    for (size_t i = k / 8 * 8; i < k; ++i) {
      const float a = std::fabs(x[i]);
      amax = a > amax ? a : amax;
    }
  }
  const float s = amax > 0.0f ? amax / 255.0f : 1.0f;
  const float inv = 1.0f / s;
  const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f),
               cap = _mm256_set1_ps(255.25f);
  // One pass, 32 values per step: quantize, trim and write both bytes from registers. The tail
  // (k % 32 values: all of a K < 32 row, e.g. an RGB stem conv's 27) runs the same step on a
  // zero-padded copy, of which only the first k % 32 results are kept (the zeros are also the
  // odd last value's partner, as in the trim of a row).
  const Trim32 trim(plan);
  __m256i any = _mm256_setzero_si256();
  const __m256i vflip = _mm256_set1_epi8(static_cast<char>(flip));
  const __m256i bias = _mm256_set1_epi16(256), three = _mm256_set1_epi16(3);
  auto step = [&](const float* xs, uint8_t* p, uint8_t* n) {
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      __m256 v = _mm256_mul_ps(_mm256_and_ps(_mm256_loadu_ps(xs + 8 * j), abs_mask), vinv);
      asm("" : "+x"(v));  // a separate multiply and add, as the scalar definition
      v = _mm256_add_ps(v, half);
      // NaN: cvtt gives INT_MIN, 0 after the saturating packs, as the scalar code
      q[j] = _mm256_cvttps_epi32(_mm256_min_ps(cap, v));
    }
    const __m256i qb = pack_u8(q[0], q[1], q[2], q[3]);
    const __m256i t = fmt == SparqRowFormat::magnitude ? qb : trim(qb);
    const __m256i ng = neg_mask(xs);  // (x < 0: false for NaN and for the zero padding)
    any = _mm256_or_si256(any, ng);
    if (fmt == SparqRowFormat::split) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                          _mm256_xor_si256(_mm256_andnot_si256(ng, t), vflip));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(n),
                          _mm256_xor_si256(_mm256_and_si256(ng, t), vflip));
    } else if (fmt == SparqRowFormat::sign || fmt == SparqRowFormat::magnitude) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), t);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(n), ng);
    } else {  // wide: u = 256 +- t in 16-bit lanes (two halves of 16), top 7 and low 2 bits
      __m256i hi[2], lo[2];
      for (int h = 0; h < 2; ++h) {
        const __m128i th = h ? _mm256_extracti128_si256(t, 1) : _mm256_castsi256_si128(t);
        const __m128i nb = h ? _mm256_extracti128_si256(ng, 1) : _mm256_castsi256_si128(ng);
        const __m256i t16 = _mm256_cvtepu8_epi16(th);
        const __m256i n16 = _mm256_cvtepi8_epi16(nb);  // 0 or -1
        const __m256i u = _mm256_add_epi16(bias, _mm256_sub_epi16(_mm256_xor_si256(t16, n16), n16));
        hi[h] = _mm256_srli_epi16(u, 2);
        lo[h] = _mm256_and_si256(u, three);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                          _mm256_permute4x64_epi64(_mm256_packus_epi16(hi[0], hi[1]), 0xd8));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(n),
                          _mm256_permute4x64_epi64(_mm256_packus_epi16(lo[0], lo[1]), 0xd8));
    }
  };
  for (size_t i = 0; i < kv; i += 32) step(x + i, dp + i, dn + i);
  if (const size_t tail = k - kv) {
    alignas(32) float x_tail[32] = {};
    alignas(32) uint8_t dp_tail[32], dn_tail[32];
    std::memcpy(x_tail, x + kv, tail * sizeof(float));
    step(x_tail, dp_tail, dn_tail);
    std::memcpy(dp + kv, dp_tail, tail);
    std::memcpy(dn + kv, dn_tail, tail);
  }
  *has_neg = !_mm256_testz_si256(any, any);
  return s;
}

}  // namespace pq
