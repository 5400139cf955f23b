// The fused grouped forward's scales (WeightOnlyConfig's bfloat16 group scales): per 64-column
// panel a block [n_groups][64] of bfloat16 bit patterns, made once at conversion
// (lowbit_panel_scales). Half the bytes of float32: at decode the W4 g32 GEMV streams 0.5625
// bytes per weight instead of 0.625, and bfloat16 -> float32 is exact (the value's 16 high bits).
//
// Within a group the 64 columns are stored in unpack order, so one vpunpcklwd / vpunpckhwd with
// zero (the bf16 bits into the high half of each 32-bit lane) widens them in column order: in
// 128-bit lane L = (c / 32) * 4 + (c % 16) / 4 of the group's 128 bytes, word (c % 32) / 16 * 4
// + c % 4. A zmm load of lanes 0-3 gives columns 0-15 (low words) and 16-31 (high words), lanes
// 4-7 columns 32-63; a ymm load of lanes 2p, 2p + 1 gives 8 columns from each half.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace pq {

constexpr size_t panel_scale_slot(size_t col) {
  return ((col / 32) * 4 + (col % 16) / 4) * 8 + (col % 32) / 16 * 4 + col % 4;
}

static inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One group's 64 scales (sg: the group's 64 slots) as float32 in column order.
static inline void widen_panel_scales(const uint16_t* sg, float* out) {
  for (size_t c = 0; c < 64; ++c) out[c] = bf16_bits_to_float(sg[panel_scale_slot(c)]);
}

#if defined(__AVX2__)
// The one-stream decode GEMVs read a panel's scale block (128 bytes per group) beside its code
// stream, prefetched kScalePrefetchGroups groups ahead: with both cores pulling from DRAM the
// hardware prefetcher alone let this second stream fall behind (docs/notes/nn_forward.md,
// twenty-eighth session).
constexpr size_t kScalePrefetchGroups = 8;
static inline void prefetch_panel_scales(const uint16_t* sc, size_t gi, size_t n_groups) {
  if (gi + kScalePrefetchGroups >= n_groups) return;
  const char* p = reinterpret_cast<const char*>(sc + (gi + kScalePrefetchGroups) * 64);
  _mm_prefetch(p, _MM_HINT_T0);
  _mm_prefetch(p + 64, _MM_HINT_T0);
}

// Columns 16q + 8h .. + 7 of the group at sg.
static inline __m256 panel_scales8(const uint16_t* sg, size_t q, size_t h) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sg + (q / 2 * 2 + h) * 16));
  const __m256i z = _mm256_setzero_si256();
  return _mm256_castsi256_ps(q % 2 ? _mm256_unpackhi_epi16(z, v) : _mm256_unpacklo_epi16(z, v));
}

// out[j] = prev + sc[j] * float(sum - cr) for 8 columns (mul, then add: the portable epilogue's
// rounding); prev = 0 on a row's first group (as on zeroed rows: -0 becomes +0), else out[j].
static inline void fold_group8(float* out, __m256 sc, __m256i sum, __m256i cr, bool first) {
  __m256 prod = _mm256_mul_ps(sc, _mm256_cvtepi32_ps(_mm256_sub_epi32(sum, cr)));
  asm("" : "+x"(prod));  // keep mul and add separate even under -ffp-contract=fast
  _mm256_storeu_ps(out, _mm256_add_ps(first ? _mm256_setzero_ps() : _mm256_loadu_ps(out), prod));
}
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
// Columns 16q .. 16q + 15 of the group at sg.
static inline __m512 panel_scales16(const uint16_t* sg, size_t q) {
  const __m512i v = _mm512_loadu_si512(sg + q / 2 * 32);
  const __m512i z = _mm512_setzero_si512();
  return _mm512_castsi512_ps(q % 2 ? _mm512_unpackhi_epi16(z, v) : _mm512_unpacklo_epi16(z, v));
}
#endif

}  // namespace pq
