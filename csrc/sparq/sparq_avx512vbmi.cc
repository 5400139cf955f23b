// AVX-512 trimming: the whole per-value function is a 256-entry table, looked up 64 bytes at a
// time with two vpermi2b (VBMI, 128 entries each) blended on the top bit. vSPARQ looks up the
// zero-partner table too and selects per byte with a mask: partner-is-zero is the zero mask
// with adjacent bits swapped (pairs are (k, k+1), k even, and rows start at even offsets).
// Also the fused forward's row preparation around that trim.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

inline __m512i lookup256(__m512i a, __mmask64 top_bit, const __m512i t[4]) {
  const __m512i lo = _mm512_permutex2var_epi8(t[0], a, t[1]);
  const __m512i hi = _mm512_permutex2var_epi8(t[2], a, t[3]);
  return _mm512_mask_blend_epi8(top_bit, lo, hi);
}

// The trim of 64 values in a register (pairs (k, k+1), k even, inside the 64), tables loaded
// once per row.
class Trim64 {
 public:
  explicit Trim64(const SparqPlan& plan) : pairs_(plan.cfg.pairs) {
    for (int j = 0; j < 4; ++j) {
      base_[j] = _mm512_load_si512(plan.lut[0] + 64 * j);
      wide_[j] = _mm512_load_si512(plan.lut[1] + 64 * j);
    }
  }

  __m512i operator()(__m512i a) const {
    constexpr uint64_t kEven = 0x5555555555555555ull;
    const __mmask64 top_bit = _mm512_movepi8_mask(a);
    __m512i r = lookup256(a, top_bit, base_);
    if (pairs_) {
      const uint64_t zero = _mm512_testn_epi8_mask(a, a);
      const __mmask64 partner_zero = ((zero >> 1) & kEven) | ((zero & kEven) << 1);
      r = _mm512_mask_blend_epi8(partner_zero, r, lookup256(a, top_bit, wide_));
    }
    return r;
  }

 private:
  __m512i base_[4], wide_[4];
  bool pairs_;
};

inline __mmask64 live_mask(size_t left) {
  return left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
}

}  // namespace

void sparq_trim_row_avx512(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst) {
  const Trim64 trim(plan);
  for (size_t i = 0; i < k; i += 64) {
    const __mmask64 live = live_mask(k - i);
    const __m512i a = _mm512_maskz_loadu_epi8(live, src + i);  // zeros past the row end
    _mm512_mask_storeu_epi8(dst + i, live, trim(a));
  }
}

// The scalar definition (sparq_prep_row_scalar) 64 values per step: max |x| (vmaxps keeps the
// running max on NaN, like the scalar compare), then one pass of q = trunc(min(|x| * inv + 0.5,
// 255.25)) with the same separate multiply and add (NaN -> INT_MIN -> 0 through the saturating
// packs, as the AVX2 code), the table trim and the row format's bytes, all in registers. The
// tail is masked: zeros past the row end (also the odd last value's partner, as in the trim).
// s16 rows go to the scalar code, 9-bit offset rows (AVX2's kernel format) to the AVX2 code.
// `tq` is not needed here (left unwritten).
float sparq_prep_row_avx512(const SparqPlan& plan, const float* x, size_t k,
                            const float* fixed_amax, SparqRowFormat fmt, uint8_t flip, uint8_t* tq,
                            uint8_t* dp, uint8_t* dn, bool* has_neg) {
  if (fmt == SparqRowFormat::s16)
    return sparq_prep_row_scalar(plan, x, k, fixed_amax, fmt, flip, tq, dp, dn, has_neg);
  if (fmt == SparqRowFormat::wide)
    return sparq_prep_row_avx2(plan, x, k, fixed_amax, fmt, flip, tq, dp, dn, has_neg);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  float amax = 0.0f;
  if (fixed_amax) {
    amax = *fixed_amax;
  } else {
    // four running maxima: one chain of dependent vmaxps bounded the whole row preparation
    __m512 m4[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                    _mm512_setzero_ps()};
    size_t i = 0;
    for (; i + 64 <= k; i += 64)
      for (int j = 0; j < 4; ++j)  // NaN: keeps the running max
        m4[j] = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + i + 16 * j), abs_mask), m4[j]);
    for (; i < k; i += 16) {
      const size_t left = k - i;
      const __mmask16 live = left >= 16 ? static_cast<__mmask16>(0xffff)
                                        : static_cast<__mmask16>((1u << left) - 1);
      const __m512 v = _mm512_and_ps(_mm512_maskz_loadu_ps(live, x + i), abs_mask);
      m4[0] = _mm512_max_ps(v, m4[0]);
    }
    const __m512 m = _mm512_max_ps(_mm512_max_ps(m4[0], m4[1]), _mm512_max_ps(m4[2], m4[3]));
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, m);
    for (float v : lanes) amax = v > amax ? v : amax;
  }
  const float s = amax > 0.0f ? amax / 255.0f : 1.0f;
  const float inv = 1.0f / s;
  const __m512 vinv = _mm512_set1_ps(inv), half = _mm512_set1_ps(0.5f),
               cap = _mm512_set1_ps(255.25f), zero = _mm512_setzero_ps();
  // packs work per 128-bit lane: dword 4L + j of the packed bytes is quarter j's lane L
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i vflip = _mm512_set1_epi8(static_cast<char>(flip));
  const Trim64 trim(plan);
  __mmask64 any = 0;
  for (size_t i = 0; i < k; i += 64) {
    const __mmask64 live = live_mask(k - i);
    __m512i q[4];
    uint64_t neg = 0;
    for (int j = 0; j < 4; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(static_cast<__mmask16>(live >> (16 * j)),
                                              x + i + 16 * j);
      __m512 v = _mm512_mul_ps(_mm512_and_ps(xv, abs_mask), vinv);
      asm("" : "+v"(v));  // a separate multiply and add, as the scalar definition
      v = _mm512_add_ps(v, half);
      q[j] = _mm512_cvttps_epi32(_mm512_min_ps(cap, v));
      // x < 0: false for NaN and for the zero padding
      neg |= uint64_t{_mm512_cmp_ps_mask(xv, zero, _CMP_LT_OQ)} << (16 * j);
    }
    const __m512i w01 = _mm512_packs_epi32(q[0], q[1]), w23 = _mm512_packs_epi32(q[2], q[3]);
    const __m512i qb = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w01, w23));
    const __m512i t = fmt == SparqRowFormat::magnitude ? qb : trim(qb);
    any |= neg;
    if (fmt == SparqRowFormat::sign || fmt == SparqRowFormat::magnitude) {
      _mm512_mask_storeu_epi8(dp + i, live, t);
      _mm512_mask_storeu_epi8(dn + i, live, _mm512_movm_epi8(neg));
    } else {  // split
      const __m512i pos_part = _mm512_maskz_mov_epi8(~neg, t), neg_part = _mm512_maskz_mov_epi8(neg, t);
      _mm512_mask_storeu_epi8(dp + i, live, _mm512_xor_si512(pos_part, vflip));
      _mm512_mask_storeu_epi8(dn + i, live, _mm512_xor_si512(neg_part, vflip));
    }
  }
  *has_neg = any != 0;
  return s;
}

// 2:4 selector tables (sparq24_tables_row's layout and values), 16 k groups (64 activations) per
// step: both trims of the 64 values by table, then per two groups four vpermb place them. A pair
// byte takes its value's zero-partner trim where either value of its pair is zero (lut[z] with z
// as in sparq24_tables_row), a single byte always (its partner is zero), other bytes are 0.
namespace {
struct Tables24Layout {
  // output vector j of a step (groups 2j, 2j + 1): the source byte of each table byte's own
  // value and of its partner in the step's 64 activations
  alignas(64) uint8_t own[8][64];
  alignas(64) uint8_t partner[8][64];
  uint64_t pair_bytes = 0, single_bytes = 0;  // the same for every j
  Tables24Layout() {
    for (int j = 0; j < 8; ++j)
      for (int p = 0; p < 64; ++p) {
        const int base = (2 * j + p / 32) * 4;
        const S24TableByte t = sparq24_table_byte(static_cast<size_t>(p % 32));
        // unused bytes read the group's first activation (masked off); a single's partner is
        // itself (the wide trim is forced for singles)
        const int o = t.own < 0 ? 0 : t.own;
        own[j][p] = static_cast<uint8_t>(base + o);
        partner[j][p] = static_cast<uint8_t>(base + (t.partner < 0 ? o : t.partner));
        if (t.partner >= 0) pair_bytes |= uint64_t{1} << p;
        else if (t.own >= 0) single_bytes |= uint64_t{1} << p;
      }
  }
};
}  // namespace

namespace {
// The tables of a row of magnitudes `a`; kSigned: split by the sign of each byte's own activation
// (negative: k flags, non-zero = negative) into out and neg as sparq24_split_tables does, or with
// `high` into the zmm kernel's narrow tables (sparq24_compute_signed_avx512): per table byte with
// signed value t = l + 128 * h (l = sign * (|t| & 127), h = sign * (|t| >> 7)) out gets l + 128 and
// neg gets h + 1 (unsigned bytes for vpdpbusd), and bit g of `high` is set when group g has an h.
template <bool kSigned>
size_t tables24_avx512(const SparqPlan& plan, const uint8_t* a, const uint8_t* negative, size_t k,
                       uint8_t* out, uint8_t* neg, uint64_t* high) {
  static const Tables24Layout layout;
  __m512i base[4], wide[4];
  for (int j = 0; j < 4; ++j) {
    base[j] = _mm512_load_si512(plan.lut[0] + 64 * j);
    wide[j] = _mm512_load_si512(plan.lut[1] + 64 * j);
  }
  const __mmask64 live_bytes = layout.pair_bytes | layout.single_bytes;
  const size_t groups = div_round_up(k, 4);
  if (kSigned && high) std::memset(high, 0, div_round_up(groups, 64) * sizeof(uint64_t));
  size_t count = 0;
  for (size_t g0 = 0; g0 < groups; g0 += 16) {
    const __mmask64 live = live_mask(k - 4 * g0);
    const __m512i x = _mm512_maskz_loadu_epi8(live, a + 4 * g0);  // tail: 0
    __m512i ng = _mm512_setzero_si512();  // 0xff: the activation is negative
    if (kSigned)
      ng = _mm512_movm_epi8(_mm512_test_epi8_mask(_mm512_maskz_loadu_epi8(live, negative + 4 * g0),
                                                  _mm512_set1_epi8(-1)));
    const __mmask64 top_bit = _mm512_movepi8_mask(x);
    const __m512i t0 = lookup256(x, top_bit, base), t1 = lookup256(x, top_bit, wide);
    const __m512i zero = _mm512_movm_epi8(_mm512_testn_epi8_mask(x, x));
    const size_t left = groups - g0 < 16 ? groups - g0 : 16;
    for (size_t j = 0; 2 * j < left; ++j) {
      const __m512i own = _mm512_load_si512(layout.own[j]);
      const __m512i partner = _mm512_load_si512(layout.partner[j]);
      const __mmask64 use_wide =
          _mm512_movepi8_mask(_mm512_or_si512(_mm512_permutexvar_epi8(own, zero),
                                              _mm512_permutexvar_epi8(partner, zero))) |
          layout.single_bytes;
      const __m512i v = _mm512_maskz_mov_epi8(
          live_bytes, _mm512_mask_blend_epi8(use_wide, _mm512_permutexvar_epi8(own, t0),
                                             _mm512_permutexvar_epi8(own, t1)));
      const size_t g = g0 + 2 * j;
      const __mmask64 store = 2 * j + 1 < left ? ~__mmask64{0} : __mmask64{0xffffffff};
      if (!kSigned) {
        _mm512_mask_storeu_epi8(out + g * kS24TableBytes, store, v);
        continue;
      }
      const __mmask64 m = _mm512_movepi8_mask(_mm512_permutexvar_epi8(own, ng)) & live_bytes;
      __m512i pos_v = _mm512_maskz_mov_epi8(~m, v), neg_v = _mm512_maskz_mov_epi8(m, v);
      if (high) {
        const __m512i l = _mm512_and_si512(v, _mm512_set1_epi8(0x7f));
        const __m512i h = _mm512_and_si512(_mm512_srli_epi16(v, 7), _mm512_set1_epi8(1));
        // (l + 128, h + 1; negated where negative)
        pos_v = _mm512_add_epi8(_mm512_mask_sub_epi8(l, m, _mm512_setzero_si512(), l),
                                _mm512_set1_epi8(static_cast<char>(0x80)));
        neg_v = _mm512_add_epi8(_mm512_mask_sub_epi8(h, m, _mm512_setzero_si512(), h),
                                _mm512_set1_epi8(1));
        const uint64_t groups_high = _mm512_movepi8_mask(v) & store;
        for (size_t i = 0; i < 2; ++i)
          if (groups_high >> (32 * i) & 0xffffffffull) {
            high[(g + i) / 64] |= uint64_t{1} << ((g + i) % 64);
            ++count;
          }
      }
      _mm512_mask_storeu_epi8(out + g * kS24TableBytes, store, pos_v);
      _mm512_mask_storeu_epi8(neg + g * kS24TableBytes, store, neg_v);
    }
  }
  return count;
}
}  // namespace

void sparq24_tables_row_avx512(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out) {
  tables24_avx512<false>(plan, a, nullptr, k, out, nullptr, nullptr);
}

size_t sparq24_tables_row_signed_avx512(const SparqPlan& plan, const uint8_t* a,
                                        const uint8_t* negative, size_t k, uint8_t* out,
                                        uint8_t* neg, uint64_t* high) {
  return tables24_avx512<true>(plan, a, negative, k, out, neg, high);
}

}  // namespace pq
