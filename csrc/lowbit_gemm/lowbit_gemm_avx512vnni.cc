// AVX-512 VNNI path: unpack codes in registers (AND, vpsrlw + AND) and feed vpdpbusd, a 6x64
// register tile like int8_gemm (24 accumulators). Per k-group, W4 loads 2 zmm of codes and W2
// loads 1 for the four 16-column x 4-k operands int8_gemm loads 4 zmm for; the unpack runs in
// the ALU slots next to the 24 vpdpbusd. Operand order: uint8 A is the u8 operand and the codes
// (0..15 fit s8) the s8 one; int8 A is the s8 operand and the codes the u8 one.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"

#include "lowbit_gemm/lowbit_gemm.h"
#include "lowbit_gemm/panel_scales.h"

namespace pq {
namespace {

// In-register 16x16 transpose of floats (unpack, shuffle within 128-bit lanes, then 128-bit lane
// shuffles): r[i] lane j -> r[j] lane i.
inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i+e], 128-bit lane L: rows 4i..4i+3 of column 4L+e
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512 y0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xEE);
    const __m512 y2 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x44);
    const __m512 y3 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xEE);
    t[e] = _mm512_shuffle_f32x4(y0, y2, 0x88);
    t[4 + e] = _mm512_shuffle_f32x4(y0, y2, 0xDD);
    t[8 + e] = _mm512_shuffle_f32x4(y1, y3, 0x88);
    t[12 + e] = _mm512_shuffle_f32x4(y1, y3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Scales of groups [g0, g0 + 16) for the panel's columns, from the caller's [N][n_groups] rows
// to out[16 groups][64 columns] (zeros past the last column or group).
inline void load_scales_t(const float* scales, size_t n_groups, size_t nc, size_t g0,
                          float* out) {
  const size_t left = n_groups - g0;
  const __mmask16 gm =
      left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
  for (size_t q = 0; q < 4; ++q) {
    __m512 r[16];
    for (size_t i = 0; i < 16; ++i) {
      const size_t j = q * 16 + i;
      if (j >= nc) {
        r[i] = _mm512_setzero_ps();
        continue;
      }
      r[i] = _mm512_maskz_loadu_ps(gm, scales + j * n_groups + g0);
    }
    transpose16(r);
    for (size_t i = 0; i < 16; ++i) _mm512_store_ps(out + i * 64 + q * 16, r[i]);
  }
}

// One panel's group scales as the grouped decode GEMVs read them. PANEL: the fused forward's
// bfloat16 [n_groups][64] block (panel_scales.h), read in place. Otherwise the caller's float
// [N][n_groups] rows at the panel's first column: the panel's contiguous [64][n_groups] block is
// transposed up front into sct (interleaving 64 short strided reads with the weight stream left
// the cold GEMV latency-bound), and the next panel's block can be prefetched as groups are read.
template <bool PANEL>
struct GemvScales {
  const uint16_t* sp;  // PANEL
  const float* st;     // not PANEL: the transposed scales
  const char* next;    // the next panel's block (nullptr: none, or PANEL)
  size_t next_bytes, n_groups, next_done = 0;

  GemvScales(const void* scales, size_t n_groups_, size_t nc, bool prefetch_next, float* sct)
      : sp(static_cast<const uint16_t*>(scales)), st(sct), next(nullptr),
        next_bytes(64 * n_groups_ * sizeof(float)), n_groups(n_groups_) {
    if constexpr (!PANEL) {
      const float* sf = static_cast<const float*>(scales);
      for (size_t g0 = 0; g0 < n_groups; g0 += 16)
        load_scales_t(sf, n_groups, nc, g0, sct + g0 * 64);
      if (prefetch_next) next = reinterpret_cast<const char*>(sf + 64 * n_groups);
    }
  }
  // columns 16q .. 16q + 15 of group gi
  __m512 get(size_t gi, size_t q) const {
    if constexpr (PANEL) return panel_scales16(sp + gi * 64, q);
    return _mm512_loadu_ps(st + gi * 64 + q * 16);
  }
  // prefetch the next panel's block in proportion to the groups read so far
  void prefetch_next(size_t groups_read) {
    if (PANEL || !next) return;
    for (const size_t upto = next_bytes * groups_read / n_groups; next_done < upto; next_done += 64)
      _mm_prefetch(next + next_done, _MM_HINT_T0);
  }
};

constexpr size_t kPrefetchBytes = kLowbitZmmPrefetchBytes;

// One k group's codes as the four vpdpbusd operands (16 columns x 4 k each), prefetching the
// weight stream kPrefetchBytes ahead: the tiles' shared unpack.
template <int BITS>
PQ_INLINE void tile_codes(const uint8_t* bg, __m512i mask, __m512i& w0, __m512i& w1, __m512i& w2,
                          __m512i& w3) {
  if constexpr (BITS == 4) {
    _mm_prefetch(reinterpret_cast<const char*>(bg + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bg + kPrefetchBytes + 64), _MM_HINT_T0);
    const __m512i v0 = _mm512_loadu_si512(bg), v1 = _mm512_loadu_si512(bg + 64);
    w0 = _mm512_and_si512(v0, mask);
    w1 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), mask);
    w2 = _mm512_and_si512(v1, mask);
    w3 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), mask);
  } else {
    _mm_prefetch(reinterpret_cast<const char*>(bg + kPrefetchBytes), _MM_HINT_T0);
    const __m512i v = _mm512_loadu_si512(bg);
    w0 = _mm512_and_si512(v, mask);
    w1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), mask);
    w2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    w3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);
  }
}

#define PQ_ROW_DECL(r) \
  __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
#define PQ_DOT(acc, av, w) \
  acc = SIGNED ? _mm512_dpbusd_epi32(acc, w, av) : _mm512_dpbusd_epi32(acc, av, w)
#define PQ_ROW_FMA(r)                                                    \
  if constexpr (MR > r) {                                                \
    const __m512i av = _mm512_set1_epi32(load_i32(a + r * lda + g * 4)); \
    PQ_DOT(c##r##0, av, w0);                                             \
    PQ_DOT(c##r##1, av, w1);                                             \
    PQ_DOT(c##r##2, av, w2);                                             \
    PQ_DOT(c##r##3, av, w3);                                             \
  }
#define PQ_ROW_SAVE(r)                                \
  if constexpr (MR > r) {                             \
    _mm512_storeu_si512(sums + r * 64, c##r##0);      \
    _mm512_storeu_si512(sums + r * 64 + 16, c##r##1); \
    _mm512_storeu_si512(sums + r * 64 + 32, c##r##2); \
    _mm512_storeu_si512(sums + r * 64 + 48, c##r##3); \
  }

template <int BITS, size_t MR, bool SIGNED>
__attribute__((noipa)) void tile(const uint8_t* a, size_t lda, const uint8_t* b, size_t kgroups,
                                 int32_t* sums) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  PQ_ROW_DECL(0) PQ_ROW_DECL(1) PQ_ROW_DECL(2) PQ_ROW_DECL(3) PQ_ROW_DECL(4) PQ_ROW_DECL(5)
  for (size_t g = 0; g < kgroups; ++g) {
    const uint8_t* bg = b + g * kGroupBytes;
    __m512i w0, w1, w2, w3;
    tile_codes<BITS>(bg, mask, w0, w1, w2, w3);
    PQ_ROW_FMA(0) PQ_ROW_FMA(1) PQ_ROW_FMA(2) PQ_ROW_FMA(3) PQ_ROW_FMA(4) PQ_ROW_FMA(5)
  }
  PQ_ROW_SAVE(0) PQ_ROW_SAVE(1) PQ_ROW_SAVE(2) PQ_ROW_SAVE(3) PQ_ROW_SAVE(4) PQ_ROW_SAVE(5)
}


// The grouped tile's operands: codes 0 .. 2^b - 1 (the offset removed per group in the fold).
template <int BITS>
PQ_INLINE void grouped_codes(const uint8_t* bg, __m512i& w0, __m512i& w1, __m512i& w2,
                             __m512i& w3) {
  tile_codes<BITS>(bg, _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1)), w0, w1, w2, w3);
}
#define PQ_TG_SIGNED_CODES 0
#include "lowbit_gemm/lowbit_tile_grouped_avx512.inc"
#undef PQ_TG_SIGNED_CODES

// One row (decode GEMV): DRAM-bound, so the loop must never wait on vpdpbusd latency: four
// k-groups per step (two of each K half) into 4 independent accumulator sets (16 zmm, named
// variables: GCC spills an array of them), summed at the end. Software prefetch runs
// kPrefetchBytes ahead of each stream.
#define PQ_GEMV_STEP(u, gg)                                                              \
  {                                                                                      \
    const uint8_t* bg = b + (gg) * kGroupBytes;                                          \
    const __m512i av = _mm512_set1_epi32(load_i32(a + (gg) * 4));                        \
    __m512i w0, w1, w2, w3;                                                              \
    if constexpr (BITS == 4) {                                                           \
      const __m512i v0 = _mm512_loadu_si512(bg), v1 = _mm512_loadu_si512(bg + 64);       \
      w0 = _mm512_and_si512(v0, mask);                                                   \
      w1 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), mask);                             \
      w2 = _mm512_and_si512(v1, mask);                                                   \
      w3 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), mask);                             \
    } else if constexpr (SCALED) {                                                       \
      const __m512i v = _mm512_loadu_si512(bg);                                          \
      w0 = _mm512_and_si512(v, mask);                                                    \
      w1 = _mm512_and_si512(v, _mm512_set1_epi8(0x0C));                                  \
      w2 = _mm512_and_si512(v, _mm512_set1_epi8(0x30));                                  \
      w3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);                              \
    } else {                                                                             \
      const __m512i v = _mm512_loadu_si512(bg);                                          \
      w0 = _mm512_and_si512(v, mask);                                                    \
      w1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), mask);                              \
      w2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);                              \
      w3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);                              \
    }                                                                                    \
    PQ_DOT(c##u##0, av, w0);                                                             \
    PQ_DOT(c##u##1, av, w1);                                                             \
    PQ_DOT(c##u##2, av, w2);                                                             \
    PQ_DOT(c##u##3, av, w3);                                                             \
  }

// W2 with SCALED: quarters 1 and 2 are only masked in place (values 4c and 16c, no vpsrlw,
// which shares the vpdpbusd pipes), so their accumulators hold 4x and 16x the sum and are shifted
// back at the end. Exact for K <= kLowbitScaledMaxK (lowbit_gemm.h).
template <int BITS, bool SIGNED, bool SCALED = false>
__attribute__((noipa)) void gemv(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                 int32_t* sums) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  PQ_ROW_DECL(0) PQ_ROW_DECL(1) PQ_ROW_DECL(2) PQ_ROW_DECL(3)
  // two streams, the K halves (sets 0-1 and 2-3), two k-groups of each in turn: from DRAM
  // faster than one stream (docs/notes/lowbit_gemm.md, 23rd session)
  const size_t half = kgroups / 2;
  size_t g = 0;
  for (; g + 2 <= half; g += 2) {
    const char* pa = reinterpret_cast<const char*>(b + g * kGroupBytes + kPrefetchBytes);
    const char* pb = pa + half * kGroupBytes;
    for (size_t i = 0; i < 2 * kGroupBytes; i += 64) {
      _mm_prefetch(pa + i, _MM_HINT_T0);
      _mm_prefetch(pb + i, _MM_HINT_T0);
    }
    PQ_GEMV_STEP(0, g) PQ_GEMV_STEP(2, half + g) PQ_GEMV_STEP(1, g + 1)
    PQ_GEMV_STEP(3, half + g + 1)
  }
  if (g < half) {  // an odd half
    PQ_GEMV_STEP(0, g) PQ_GEMV_STEP(2, half + g)
  }
  if (kgroups % 2) PQ_GEMV_STEP(1, kgroups - 1)
  __m512i s1 = _mm512_add_epi32(_mm512_add_epi32(c01, c11), _mm512_add_epi32(c21, c31));
  __m512i s2 = _mm512_add_epi32(_mm512_add_epi32(c02, c12), _mm512_add_epi32(c22, c32));
  if constexpr (SCALED) {  // exact: every term is a multiple of 4 (resp. 16), no overflow
    s1 = _mm512_srai_epi32(s1, 2);
    s2 = _mm512_srai_epi32(s2, 4);
  }
  const __m512i s0 = _mm512_add_epi32(_mm512_add_epi32(c00, c10), _mm512_add_epi32(c20, c30));
  const __m512i s3 = _mm512_add_epi32(_mm512_add_epi32(c03, c13), _mm512_add_epi32(c23, c33));
  _mm512_storeu_si512(sums, s0);
  _mm512_storeu_si512(sums + 16, s1);
  _mm512_storeu_si512(sums + 32, s2);
  _mm512_storeu_si512(sums + 48, s3);
}

// Grouped decode GEMV: per quantization group, the integer sums are folded into 4 float
// accumulators in registers: out += scale * float(sum - corr[g]) (mul, then add, like the
// portable epilogue; two streams: half the groups' products added from a buffer, in order).
// Scales are read from the caller's [N][G] array 16 groups at a time and transposed in
// registers (a scalar transposed copy cost more than the GEMV itself).
// PANEL_SCALES: `scales` is already this panel's [n_groups][64] block (the fused forward's
// layout: bfloat16, panel_scales.h), read in place; sct is unused. SCALED (W2): the gemv's
// in-place unpack, each group's quarter 1 and 2 sums shifted back before the fold (a group's
// sums are far inside kLowbitScaledMaxK): 2 shifts per group for 16 fewer unpack operations at g32.
template <int BITS, bool SIGNED, bool SCALED = false, bool PANEL_SCALES = false>
__attribute__((noipa)) void gemv_grouped(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                         size_t group_kgroups, const uint32_t* corr,
                                         const void* scales, size_t n_groups, size_t nc,
                                         bool prefetch_next, float* sct, float* out) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  GemvScales<PANEL_SCALES> scl(scales, n_groups, nc, prefetch_next, sct);
  // Two streams (docs/notes/lowbit_gemm.md, 23rd session): a chunk of quantization groups is
  // read as two halves, k-group by k-group in turn (accumulator set 0: the first half, set 1:
  // the second), which from DRAM ran faster than one stream. The first half's groups fold into
  // f in order; the second half's products wait in `later` and are added after them in order,
  // so every output sees the groups' products added in group order (the bits of every path).
  constexpr size_t kLater = 32;  // groups per half chunk: 8 KiB of products
  alignas(64) float later[kLater][64];
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
  const size_t n_grp = (kgroups + group_kgroups - 1) / group_kgroups;
  for (size_t c0 = 0; c0 < n_grp; c0 += 2 * kLater) {
    const size_t c1 = c0 + 2 * kLater < n_grp ? c0 + 2 * kLater : n_grp;
    const size_t half = (c1 - c0) / 2;  // first half [c0, c0 + half), second [c0 + half, c1)
    for (size_t i = 0; i < c1 - c0 - half; ++i) {
      const size_t ga = c0 + i, gb = c0 + half + i;
      scl.prefetch_next(c0 + 2 * (i + 1) < n_grp ? c0 + 2 * (i + 1) : n_grp);  // groups read
      const bool has_a = i < half;
      const size_t a0 = ga * group_kgroups, a1 = has_a ? a0 + group_kgroups : a0;
      const size_t b0 = gb * group_kgroups;
      const size_t b1 = b0 + group_kgroups < kgroups ? b0 + group_kgroups : kgroups;
      PQ_ROW_DECL(0) PQ_ROW_DECL(1)
      size_t ka = a0, kb = b0;
      for (; ka < a1 && kb < b1; ++ka, ++kb) {
        if ((ka - a0) % 4 == 0) {
          const char* pa = reinterpret_cast<const char*>(b + ka * kGroupBytes + kPrefetchBytes);
          const char* pb = reinterpret_cast<const char*>(b + kb * kGroupBytes + kPrefetchBytes);
          for (size_t l = 0; l < 4 * kGroupBytes; l += 64) {
            _mm_prefetch(pa + l, _MM_HINT_T0);
            _mm_prefetch(pb + l, _MM_HINT_T0);
          }
        }
        PQ_GEMV_STEP(0, ka) PQ_GEMV_STEP(1, kb)
      }
      for (; ka < a1; ++ka) PQ_GEMV_STEP(0, ka)  // the second half's last group may be short
      for (; kb < b1; ++kb) PQ_GEMV_STEP(1, kb)
#define PQ_GROUP_PROD(u, q, gi)                                                                \
  __m512 p##u##q;                                                                              \
  {                                                                                            \
    __m512i s = c##u##q;                                                                       \
    if constexpr (SCALED && q == 1) s = _mm512_srai_epi32(s, 2); /* exact: multiples of 4 */   \
    if constexpr (SCALED && q == 2) s = _mm512_srai_epi32(s, 4);                               \
    s = _mm512_sub_epi32(s, _mm512_set1_epi32(static_cast<int>(corr[gi])));                    \
    p##u##q = _mm512_mul_ps(scl.get(gi, q), _mm512_cvtepi32_ps(s));                            \
    asm("" : "+v"(p##u##q)); /* no FMA contraction, whatever -ffp-contract says */             \
  }
      if (has_a) {
        PQ_GROUP_PROD(0, 0, ga) PQ_GROUP_PROD(0, 1, ga) PQ_GROUP_PROD(0, 2, ga)
        PQ_GROUP_PROD(0, 3, ga)
        f0 = _mm512_add_ps(f0, p00);
        f1 = _mm512_add_ps(f1, p01);
        f2 = _mm512_add_ps(f2, p02);
        f3 = _mm512_add_ps(f3, p03);
      }
      PQ_GROUP_PROD(1, 0, gb) PQ_GROUP_PROD(1, 1, gb) PQ_GROUP_PROD(1, 2, gb)
      PQ_GROUP_PROD(1, 3, gb)
#undef PQ_GROUP_PROD
      _mm512_store_ps(later[i], p10);
      _mm512_store_ps(later[i] + 16, p11);
      _mm512_store_ps(later[i] + 32, p12);
      _mm512_store_ps(later[i] + 48, p13);
    }
    for (size_t i = 0; i < c1 - c0 - half; ++i) {
      f0 = _mm512_add_ps(f0, _mm512_load_ps(later[i]));
      f1 = _mm512_add_ps(f1, _mm512_load_ps(later[i] + 16));
      f2 = _mm512_add_ps(f2, _mm512_load_ps(later[i] + 32));
      f3 = _mm512_add_ps(f3, _mm512_load_ps(later[i] + 48));
    }
  }
  _mm512_storeu_ps(out, f0);
  _mm512_storeu_ps(out + 16, f1);
  _mm512_storeu_ps(out + 32, f2);
  _mm512_storeu_ps(out + 48, f3);
}
// Grouped decode GEMV, one stream: each group's k-groups
// alternate between two accumulator sets (so 8 vpdpbusd chains run at once), summed (exact)
// and folded into 4 float registers in group order: out = sum over groups of
// sc * float(sum - corr[g]) (mul, then add; 0 + the first): the bits of every other path.
// The zmm kernel's decode GEMVs (lowbit_gemv_grouped{,_panel}*_avx512): on an AMD Zen 5, 4096 ->
// 14336 from DRAM, 1.25-1.38x (W4 g32) and 1.30-1.45x (W2 g32) faster than gemv_grouped's two
// streams, which stay the AMX entry's (_2s: 1.04-1.07x over one stream on an SPR-class Xeon).
// Scales as GemvScales reads them (PANEL_SCALES: the fused forward's; else the raw
// lowbit_gemm_grouped's float rows).
template <int BITS, bool SIGNED, bool SCALED, bool PANEL_SCALES = true>
__attribute__((noipa)) void gemv_grouped_1s(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                            size_t group_kgroups, const uint32_t* corr,
                                            const void* scales, size_t n_groups, size_t nc,
                                            bool prefetch_next, float* sct, float* out) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  GemvScales<PANEL_SCALES> scl(scales, n_groups, nc, prefetch_next, sct);
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
  for (size_t gi = 0, g0 = 0; g0 < kgroups; ++gi, g0 += group_kgroups) {
    const size_t g1 = g0 + group_kgroups < kgroups ? g0 + group_kgroups : kgroups;
    scl.prefetch_next(gi + 1);
    if constexpr (PANEL_SCALES)
      prefetch_panel_scales(static_cast<const uint16_t*>(scales), gi, n_groups);
    PQ_ROW_DECL(0) PQ_ROW_DECL(1)
    size_t k = g0;
    for (; k + 2 <= g1; k += 2) {
      const char* pf = reinterpret_cast<const char*>(b + k * kGroupBytes + kPrefetchBytes);
      for (size_t l = 0; l < 2 * kGroupBytes; l += 64) _mm_prefetch(pf + l, _MM_HINT_T0);
      PQ_GEMV_STEP(0, k) PQ_GEMV_STEP(1, k + 1)
    }
    if (k < g1) PQ_GEMV_STEP(0, k)
#define PQ_FOLD1(q)                                                                            \
  {                                                                                            \
    __m512i s = _mm512_add_epi32(c0##q, c1##q);                                                \
    if constexpr (SCALED && q == 1) s = _mm512_srai_epi32(s, 2); /* exact: multiples of 4 */   \
    if constexpr (SCALED && q == 2) s = _mm512_srai_epi32(s, 4);                               \
    s = _mm512_sub_epi32(s, _mm512_set1_epi32(static_cast<int>(corr[gi])));                    \
    __m512 p = _mm512_mul_ps(scl.get(gi, q), _mm512_cvtepi32_ps(s));                           \
    asm("" : "+v"(p)); /* no FMA contraction */                                                \
    f##q = _mm512_add_ps(f##q, p);                                                             \
  }
    PQ_FOLD1(0) PQ_FOLD1(1) PQ_FOLD1(2) PQ_FOLD1(3)
#undef PQ_FOLD1
  }
  _mm512_storeu_ps(out, f0);
  _mm512_storeu_ps(out + 16, f1);
  _mm512_storeu_ps(out + 32, f2);
  _mm512_storeu_ps(out + 48, f3);
}


#undef PQ_GEMV_STEP
#undef PQ_ROW_DECL
#undef PQ_DOT
#undef PQ_ROW_FMA
#undef PQ_ROW_SAVE

template <int BITS, bool SIGNED>
void tile_mr(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
             int32_t* sums) {
  switch (mr) {
    case 6: return tile<BITS, 6, SIGNED>(a, lda, b, kgroups, sums);
    case 5: return tile<BITS, 5, SIGNED>(a, lda, b, kgroups, sums);
    case 4: return tile<BITS, 4, SIGNED>(a, lda, b, kgroups, sums);
    case 3: return tile<BITS, 3, SIGNED>(a, lda, b, kgroups, sums);
    case 2: return tile<BITS, 2, SIGNED>(a, lda, b, kgroups, sums);
    default:
      if (BITS == 2 && kgroups <= kLowbitScaledMaxK / 4)
        return gemv<BITS, SIGNED, true>(a, b, kgroups, sums);
      return gemv<BITS, SIGNED>(a, b, kgroups, sums);
  }
}

}  // namespace

void lowbit_epilogue_avx512(const int32_t* sums, size_t mr, const uint32_t* corr, const float* sc,
                            float* out) {
  const __m512 s0 = _mm512_loadu_ps(sc), s1 = _mm512_loadu_ps(sc + 16),
               s2 = _mm512_loadu_ps(sc + 32), s3 = _mm512_loadu_ps(sc + 48);
  for (size_t r = 0; r < mr; ++r) {
    const __m512i cr = _mm512_set1_epi32(static_cast<int>(corr[r]));
    const int32_t* sr = sums + r * 64;
    float* o = out + r * 64;
#define PQ_EPI(j, sj)                                                                     \
  {                                                                                       \
    __m512 prod = _mm512_mul_ps(                                                          \
        sj, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(sr + j), cr)));        \
    asm("" : "+v"(prod)); /* no FMA contraction */                                        \
    _mm512_storeu_ps(o + j, _mm512_add_ps(_mm512_loadu_ps(o + j), prod));                 \
  }
    PQ_EPI(0, s0) PQ_EPI(16, s1) PQ_EPI(32, s2) PQ_EPI(48, s3)
#undef PQ_EPI
  }
}

void lowbit_gemv_grouped4_avx512(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                 size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                 const float* scales, size_t n_groups, size_t nc,
                                 bool prefetch_next, float* scratch, float* out) {
  const auto run = a_signed ? gemv_grouped_1s<4, true, false, false>
                            : gemv_grouped_1s<4, false, false, false>;
  run(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc, prefetch_next, scratch, out);
}
void lowbit_gemv_grouped2_avx512(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                 size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                 const float* scales, size_t n_groups, size_t nc,
                                 bool prefetch_next, float* scratch, float* out) {
  const bool scaled = group_kgroups <= kLowbitScaledMaxK / 4;  // a group within the scaled sums
  const auto run = scaled ? (a_signed ? gemv_grouped_1s<2, true, true, false>
                                      : gemv_grouped_1s<2, false, true, false>)
                          : (a_signed ? gemv_grouped_1s<2, true, false, false>
                                      : gemv_grouped_1s<2, false, false, false>);
  run(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc, prefetch_next, scratch, out);
}

void lowbit_gemv_grouped4_avx512_2s(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                    size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                    const float* scales, size_t n_groups, size_t nc,
                                    bool prefetch_next, float* scratch, float* out) {
  if (a_signed)
    return gemv_grouped<4, true>(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc,
                                 prefetch_next, scratch, out);
  gemv_grouped<4, false>(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc, prefetch_next,
                         scratch, out);
}
void lowbit_gemv_grouped2_avx512_2s(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                    size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                    const float* scales, size_t n_groups, size_t nc,
                                    bool prefetch_next, float* scratch, float* out) {
  if (group_kgroups > kLowbitScaledMaxK / 4)  // a group too long for the scaled sums
    return a_signed ? gemv_grouped<2, true>(a, b, kgroups, group_kgroups, corr, scales, n_groups,
                                            nc, prefetch_next, scratch, out)
                    : gemv_grouped<2, false>(a, b, kgroups, group_kgroups, corr, scales, n_groups,
                                             nc, prefetch_next, scratch, out);
  if (a_signed)
    return gemv_grouped<2, true, true>(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc,
                                       prefetch_next, scratch, out);
  gemv_grouped<2, false, true>(a, b, kgroups, group_kgroups, corr, scales, n_groups, nc,
                               prefetch_next, scratch, out);
}

void lowbit_gemv_grouped_panel4_avx512_2s(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                          size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                          const uint16_t* sc, size_t n_groups, float* out) {
  if (a_signed)
    return gemv_grouped<4, true, false, true>(a, b, kgroups, group_kgroups, corr, sc, n_groups,
                                              64, false, nullptr, out);
  gemv_grouped<4, false, false, true>(a, b, kgroups, group_kgroups, corr, sc, n_groups, 64,
                                      false, nullptr, out);
}
void lowbit_gemv_grouped_panel2_avx512_2s(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                          size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                          const uint16_t* sc, size_t n_groups, float* out) {
  if (group_kgroups > kLowbitScaledMaxK / 4)  // a group too long for the scaled sums
    return a_signed ? gemv_grouped<2, true, false, true>(a, b, kgroups, group_kgroups, corr, sc,
                                                         n_groups, 64, false, nullptr, out)
                    : gemv_grouped<2, false, false, true>(a, b, kgroups, group_kgroups, corr, sc,
                                                          n_groups, 64, false, nullptr, out);
  if (a_signed)
    return gemv_grouped<2, true, true, true>(a, b, kgroups, group_kgroups, corr, sc, n_groups,
                                             64, false, nullptr, out);
  gemv_grouped<2, false, true, true>(a, b, kgroups, group_kgroups, corr, sc, n_groups, 64, false,
                                     nullptr, out);
}

void lowbit_gemv_grouped_panel4_avx512(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                       size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                       const uint16_t* sc, size_t n_groups, float* out) {
  const auto run = a_signed ? gemv_grouped_1s<4, true, false> : gemv_grouped_1s<4, false, false>;
  run(a, b, kgroups, group_kgroups, corr, sc, n_groups, 64, false, nullptr, out);
}
void lowbit_gemv_grouped_panel2_avx512(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                       size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                       const uint16_t* sc, size_t n_groups, float* out) {
  const bool scaled = group_kgroups <= kLowbitScaledMaxK / 4;  // a group within the scaled sums
  const auto run = scaled ? (a_signed ? gemv_grouped_1s<2, true, true>
                                      : gemv_grouped_1s<2, false, true>)
                          : (a_signed ? gemv_grouped_1s<2, true, false>
                                      : gemv_grouped_1s<2, false, false>);
  run(a, b, kgroups, group_kgroups, corr, sc, n_groups, 64, false, nullptr, out);
}

void lowbit_tile_grouped4_avx512(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                                 size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                                 size_t n_groups, const uint16_t* sc, float* out) {
  tile_grouped_mr<4>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}
void lowbit_tile_grouped2_avx512(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                                 size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                                 size_t n_groups, const uint16_t* sc, float* out) {
  tile_grouped_mr<2>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}

void lowbit_tile4_avx512(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                         size_t kgroups, bool a_signed, int32_t* sums) {
  if (a_signed) return tile_mr<4, true>(a, lda, mr, b, kgroups, sums);
  tile_mr<4, false>(a, lda, mr, b, kgroups, sums);
}
void lowbit_tile2_avx512(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                         size_t kgroups, bool a_signed, int32_t* sums) {
  if (a_signed) return tile_mr<2, true>(a, lda, mr, b, kgroups, sums);
  tile_mr<2, false>(a, lda, mr, b, kgroups, sums);
}

}  // namespace pq
