// The GRU step (gru_step.inc) for plans whose operands are exact in 32 bits (GruNarrow): every
// value sits in the low dword of a 64-bit lane, 4 elements per ymm.
//   t * M mod 2^64 = (t * hi << 31) + t * lo        two vpmuldq (M split at plan time)
//   (t + 2^35) >> 36 = int32(high dword) >> 4       no 64-bit arithmetic shift needed
// and every requantized value is small, so clamps are int32 min/max. Products are the int64
// step's (wrapping) products exactly, so the bits are the reference's.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"
#include "gru/gru_step.h"

namespace pq {
namespace {

PQ_INLINE __m256i load4(const int64_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
PQ_INLINE __m256i sum4(const int32_t* x, const int32_t* b) {  // x + b, exact in int32
  return _mm256_cvtepi32_epi64(_mm_add_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)),
                                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(b))));
}
PQ_INLINE __m256i mul_split(__m256i t, __m256i hi, __m256i lo) {  // t * (hi * 2^31 + lo) mod 2^64
  return _mm256_add_epi64(_mm256_slli_epi64(_mm256_mul_epi32(t, hi), 31), _mm256_mul_epi32(t, lo));
}
// clamp((t + 2^35) >> 36, lo, hi) in the low dword (high dword 0: a valid gather index once >= 0)
PQ_INLINE __m256i rq(__m256i t, int32_t lo, int32_t hi) {
  const __m256i half = _mm256_set1_epi64x(int64_t{1} << (kGruShift - 1));
  const __m256i v = _mm256_srai_epi32(_mm256_srli_epi64(_mm256_add_epi64(t, half), 32),
                                      kGruShift - 32);
  return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi64x(lo)), _mm256_set1_epi64x(hi));
}
PQ_INLINE __m256i lookup(const int64_t* lut, __m256i index) {
  return _mm256_i64gather_epi64(reinterpret_cast<const long long*>(lut), index, 8);
}
PQ_INLINE __m256i split(int32_t v) { return _mm256_set1_epi64x(v); }

}  // namespace

void gru_step_narrow_avx2(const GruStepArgs& a) {
  const GruNarrow& nw = *a.narrow;
  const size_t H = a.hidden;
  const int32_t qpr = static_cast<int32_t>(a.q_pre[0]), qpz = static_cast<int32_t>(a.q_pre[1]),
                qpn = static_cast<int32_t>(a.q_pre[2]);
  const int32_t q_rn = static_cast<int32_t>(a.q_rn), L_omz = static_cast<int32_t>(a.L_omz),
                q_zn = static_cast<int32_t>(a.q_zn), q_zh = static_cast<int32_t>(a.q_zh),
                q_h = static_cast<int32_t>(a.q_h);
  const __m256i L_z = _mm256_set1_epi64x(a.L_z);
  const __m256i omz_hi = split(nw.omz_hi), omz_lo = split(nw.omz_lo), zn_hi = split(nw.zn_hi),
                zn_lo = split(nw.zn_lo), zh_hi = split(nw.zh_hi), zh_lo = split(nw.zh_lo),
                h0_hi = split(nw.h0_hi), h0_lo = split(nw.h0_lo), h1_hi = split(nw.h1_hi),
                h1_lo = split(nw.h1_lo);
  const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const int32_t* bi = nw.b_ih.data();
  const int32_t* bh = nw.b_hh.data();
  for (size_t b = 0; b < a.batch; ++b) {
    const size_t row = a.gi_row0 + b * a.gi_row_step;
    const int32_t* xr = a.gi[0].p + row * a.gi[0].ld;
    const int32_t* xz = a.gi[1].p + row * a.gi[1].ld;
    const int32_t* xn = a.gi[2].p + row * a.gi[2].ld;
    const int32_t* hr = a.gh[0].p + b * a.gh[0].ld;
    const int32_t* hz = a.gh[1].p + b * a.gh[1].ld;
    const int32_t* hn = a.gh[2].p + b * a.gh[2].ld;
    int8_t* hb = a.h + b * H;
    int64_t* ob = a.out + row * H;
    // Three passes over the row, each with at most one table lookup on its dependency chain,
    // so the out-of-order core overlaps the gathers of neighbouring elements (one pass would
    // chain two gathers per element). Scratch rows (L1) carry indices and values between them.
    __m256i* s_r = reinterpret_cast<__m256i*>(a.v_r);  // r index
    __m256i* s_z = reinterpret_cast<__m256i*>(a.v_z);  // z index, then z
    __m256i* s_n = reinterpret_cast<__m256i*>(a.v_n);  // n index
    for (size_t j = 0; j < H; j += 4) {  // gates r, z: clamped pre-activation codes + q_pre
      const __m256i tr = _mm256_add_epi64(
          mul_split(sum4(xr + j, bi + j), load4(nw.mi_hi[0].data() + j), load4(nw.mi_lo[0].data() + j)),
          mul_split(sum4(hr + j, bh + j), load4(nw.mh_hi[0].data() + j), load4(nw.mh_lo[0].data() + j)));
      const __m256i tz = _mm256_add_epi64(
          mul_split(sum4(xz + j, bi + H + j), load4(nw.mi_hi[1].data() + j), load4(nw.mi_lo[1].data() + j)),
          mul_split(sum4(hz + j, bh + H + j), load4(nw.mh_hi[1].data() + j), load4(nw.mh_lo[1].data() + j)));
      _mm256_storeu_si256(s_r + j / 4, _mm256_add_epi32(rq(tr, -qpr, qpr), split(qpr)));
      _mm256_storeu_si256(s_z + j / 4, _mm256_add_epi32(rq(tz, -qpz, qpz), split(qpz)));
    }
    for (size_t j = 0; j < H; j += 4) {  // r * (W_hn h + b_hn), then the n index
      const __m256i r = lookup(a.lut_r, _mm256_loadu_si256(s_r + j / 4));
      _mm256_storeu_si256(s_z + j / 4, lookup(a.lut_z, _mm256_loadu_si256(s_z + j / 4)));
      // r * (u * m_rn): r is in [0, 2^31), so the second product is the low and the high dword
      // of u * m_rn times r (vpmuludq), mod 2^64
      const __m256i p = mul_split(sum4(hn + j, bh + 2 * H + j), load4(nw.rn_hi.data() + j),
                                  load4(nw.rn_lo.data() + j));
      const __m256i prn = _mm256_add_epi64(
          _mm256_mul_epu32(p, r), _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(p, 32), r), 32));
      const __m256i rn = rq(prn, -q_rn, q_rn);
      const __m256i tn = _mm256_add_epi64(
          mul_split(sum4(xn + j, bi + 2 * H + j), load4(nw.mi_hi[2].data() + j), load4(nw.mi_lo[2].data() + j)),
          mul_split(rn, load4(nw.mh_hi[2].data() + j), load4(nw.mh_lo[2].data() + j)));
      _mm256_storeu_si256(s_n + j / 4, _mm256_add_epi32(rq(tn, -qpn, qpn), split(qpn)));
    }
    for (size_t j = 0; j < H; j += 4) {  // h' = (1 - z) * n + z * h (products exact in int32)
      const __m256i n = lookup(a.lut_n, _mm256_loadu_si256(s_n + j / 4));
      const __m256i z = _mm256_loadu_si256(s_z + j / 4);
      int32_t h4;
      std::memcpy(&h4, hb + j, 4);
      const __m256i h = _mm256_cvtepi8_epi64(_mm_cvtsi32_si128(h4));
      const __m256i omz = rq(mul_split(_mm256_sub_epi32(L_z, z), omz_hi, omz_lo), 0, L_omz);
      const __m256i zn = rq(mul_split(_mm256_mullo_epi32(omz, n), zn_hi, zn_lo), -q_zn, q_zn);
      const __m256i zh = rq(mul_split(_mm256_mullo_epi32(z, h), zh_hi, zh_lo), -q_zh, q_zh);
      const __m256i hn4 = rq(_mm256_add_epi64(mul_split(zn, h0_hi, h0_lo), mul_split(zh, h1_hi, h1_lo)),
                             -q_h, q_h);
      const __m128i h32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(hn4, low_dwords));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + j), _mm256_cvtepi32_epi64(h32));
      const __m128i h8 = _mm_packs_epi16(_mm_packs_epi32(h32, h32), _mm_setzero_si128());
      h4 = _mm_cvtsi128_si32(h8);
      std::memcpy(hb + j, &h4, 4);  // |h'| <= q_h <= 127: the packs never saturate
    }
  }
}

}  // namespace pq
