// AVX2 kernel of SPARQ on 2:4-sparse weights (layout: sparq.h). One row x one 32-column panel
// per tile, reading each panel group's 80 bytes contiguously (the int8 1x64 tile's lesson:
// contiguous weight streams, docs/notes/avx2.md). Per k group:
//   - the 16 selector bytes, broadcast to both lanes, lane 1 shifted right by 4 (vpsrlvd): 32
//     index bytes, low nibbles in lane 0 and high nibbles in lane 1;
//   - vpshufb of the row's E0 and E1 tables (broadcast) gives a0, a1 per column (uint8 <= 255);
//   - byte-interleaving a0/a1 and zero-extending to int16 gives one dword (a0 | a1 << 16) per
//     column; the selector order in the format makes these come out in natural column order;
//   - the values come as 16-bit words holding two columns' bytes (layout in sparq.h): masking
//     with 0xff00 and shifting left by 8 give 256 * v as int16 for 8 columns each (no byte
//     shuffle), and vpmaddwd gives 256 * (a0 * v0 + a1 * v1) exactly in int32; every 64 k groups
//     the partial (< 2^31, a multiple of 256) is shifted back by 8 into the total (exact; the
//     total wraps modulo 2^32 like every path).
// 4 accumulators of 8 columns per row. One or two table rows (decode; signed rows as their int16
// words, the high bytes interleaved in place of the zeros, up to SparqKernels::word_rows rows
// per call) stream the panel once, as several streams (sparq24_compute_avx2) or as one (its
// _one_stream twin, the AMD entry). More rows run sparq24_rows.inc's kernel over expanded weight
// blocks.
#include <immintrin.h>

#include "core/avx2_store.h"
#include "core/macros.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

// Prefetch: to L1 32 groups ahead, and to L2 128 groups ahead (both lines a group can touch),
// shared by the streams (each stream 1/S of it). Measured at decode (1 x 14336 x 4096, weights
// from DRAM, Zen 3, one stream): L1 prefetch alone ran at ~16 GB/s (2.3 ms), the two-distance
// pair at ~23 GB/s (1.57 ms), the DRAM read rate.
constexpr size_t kPrefetchBytes = 2560;
constexpr size_t kPrefetchL2Bytes = 4 * kPrefetchBytes;
// One stream (the AMD entries) also into L2 at a far distance, as the zmm decode tile: Zen 4's
// AVX2 tier, 1 x 14336 x 4096 from DRAM, an unsigned row 1.57-1.71x -> 1.74-1.78x dense int8;
// two rows and signed rows (words) unchanged (50th session).
constexpr size_t kFarPrefetchBytes = 3 * kPrefetchL2Bytes;
constexpr size_t kChunkGroups = 64;        // groups per int32 partial of 256 x the products
// Decode reads the panel as 4 streams (two table rows: 2), its K parts in turn: from DRAM
// 1.15-1.17x faster than one stream on a Xeon (SPR-class; two rows 1.04x), the hardware
// prefetchers keeping more lines in flight; software prefetch alone did not (docs/notes/sparq.md).
// On AMD one stream, for one row and for two (sparq24_compute_avx2_one_stream, the AMD
// entries): Zen 4's AVX2 tier, 49th session, m x 14336 x 4096 from DRAM: one row 1.47-1.56 ->
// 1.22-1.31 ms, signed 1.84-1.89 -> 1.26-1.29 (QuantLinear at tinyllama's shapes 1.3-1.9x
// faster); signed rows as words, 2 rows 2.65-2.68 -> 2.17-2.24, 4 rows 5.08-5.17 -> 4.26-4.35.
constexpr size_t kDecodeStreams = 4;
constexpr size_t kTwoRowStreams = 2;

PQ_INLINE __m256i bcast16(const uint8_t* p) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// R rows (1 or 2) x the panel. With two rows the selector expansion and the value words are
// shared (about a third of a row's work), each row keeps its own 4 accumulators. The panel is
// read as S streams, its S parts in K, in turn. kWords (signed rows, sparq.h): a row's tables
// hold the low bytes of its int16 activations, th[r] their high bytes, looked up alike and
// interleaved in place of the zero extension's zeros (two signed rows per tile: 1.1-1.25x faster
// than one at a time at 2-4 rows, Zen 4's AVX2 tier).
template <size_t R, size_t S, bool kWords = false>
void tile(const uint8_t* const* t, const uint8_t* const* th, const uint8_t* b, size_t groups,
          int32_t* const* c, size_t nc) {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i lane_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i hi_bytes = _mm256_set1_epi16(static_cast<short>(0xff00));
  const __m256i zero = _mm256_setzero_si256();
  __m256i tot[R][4];
  for (size_t r = 0; r < R; ++r)
    for (size_t q = 0; q < 4; ++q) tot[r][q] = zero;
  __m256i acc[R][4];  // 256 x the products of the current chunk
  auto step = [&](size_t g) __attribute__((always_inline)) {
      const uint8_t* bg = b + g * kS24GroupBytes;
      const char* pb = reinterpret_cast<const char*>(bg);
      _mm_prefetch(pb + kPrefetchBytes / S, _MM_HINT_T0);
      _mm_prefetch(pb + kPrefetchL2Bytes / S, _MM_HINT_T2);
      _mm_prefetch(pb + kPrefetchL2Bytes / S + 64, _MM_HINT_T2);
      if constexpr (S == 1) {
        _mm_prefetch(pb + kFarPrefetchBytes, _MM_HINT_T1);
        _mm_prefetch(pb + kFarPrefetchBytes + 64, _MM_HINT_T1);
      }
      const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(bcast16(bg), lane_shift), nib);
      const __m256i r0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + kS24SelBytes));
      const __m256i r1 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + kS24SelBytes + 32));
      const __m256i v0 = _mm256_and_si256(r0, hi_bytes), v1 = _mm256_slli_epi16(r0, 8);
      const __m256i v2 = _mm256_and_si256(r1, hi_bytes), v3 = _mm256_slli_epi16(r1, 8);
#pragma GCC unroll 2
      for (size_t r = 0; r < R; ++r) {
        const uint8_t* tg = t[r] + g * kS24TableBytes;
        const __m256i a0 = _mm256_shuffle_epi8(bcast16(tg), idx);
        const __m256i a1 = _mm256_shuffle_epi8(bcast16(tg + 16), idx);
        const __m256i plo = _mm256_unpacklo_epi8(a0, a1), phi = _mm256_unpackhi_epi8(a0, a1);
        __m256i hlo = zero, hhi = zero;  // the words' high bytes
        if constexpr (kWords) {
          const uint8_t* hg = th[r] + g * kS24TableBytes;
          const __m256i h0 = _mm256_shuffle_epi8(bcast16(hg), idx);
          const __m256i h1 = _mm256_shuffle_epi8(bcast16(hg + 16), idx);
          hlo = _mm256_unpacklo_epi8(h0, h1);
          hhi = _mm256_unpackhi_epi8(h0, h1);
        }
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_unpacklo_epi8(plo, hlo), v0));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_unpackhi_epi8(plo, hlo), v1));
        acc[r][2] = _mm256_add_epi32(acc[r][2], _mm256_madd_epi16(_mm256_unpacklo_epi8(phi, hhi), v2));
        acc[r][3] = _mm256_add_epi32(acc[r][3], _mm256_madd_epi16(_mm256_unpackhi_epi8(phi, hhi), v3));
        // one row: each group's sums straight into the accumulators (without the pin GCC summed
        // the 4 decode streams' products in a tree first and spilled: 1.02-1.05x, 24th session);
        // two rows need more registers than AVX2 has either way, and spill less unpinned
        if constexpr (R == 1)
          asm("" : "+x"(acc[r][0]), "+x"(acc[r][1]), "+x"(acc[r][2]), "+x"(acc[r][3]));
      }
  };
  auto begin_chunk = [&] {
    for (size_t r = 0; r < R; ++r)
      for (size_t q = 0; q < 4; ++q) acc[r][q] = zero;
  };
  // exact: each partial is a multiple of 256 below 2^31 (64 groups x 2 x 255 x 128 x 256)
  auto end_chunk = [&] {
    for (size_t r = 0; r < R; ++r)
      for (size_t q = 0; q < 4; ++q)
        tot[r][q] = _mm256_add_epi32(tot[r][q], _mm256_srai_epi32(acc[r][q], 8));
  };
  // S streams: group i of each of the S parts in turn (at most kChunkGroups per chunk), then
  // the groups left after S equal parts
  static_assert(kChunkGroups % S == 0, "a chunk holds whole rounds of the S streams");
  const size_t part = groups / S;
  for (size_t i0 = 0; i0 < part; i0 += kChunkGroups / S) {
    const size_t i1 = part - i0 < kChunkGroups / S ? part : i0 + kChunkGroups / S;
    begin_chunk();
    for (size_t i = i0; i < i1; ++i)
#pragma GCC unroll 4
      for (size_t j = 0; j < S; ++j) step(j * part + i);
    end_chunk();
  }
  begin_chunk();
  for (size_t g = S * part; g < groups; ++g) step(g);
  end_chunk();
  for (size_t q = 0; q < 4 && q * 8 < nc; ++q)
    for (size_t r = 0; r < R; ++r)
      store8_plus(c[r] + q * 8, nullptr, tot[r][q], nc - q * 8);
}

template <bool kOneStream>
void compute(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  constexpr size_t kOneRowS = kOneStream ? 1 : kDecodeStreams;
  constexpr size_t kTwoRowS = kOneStream ? 1 : kTwoRowStreams;
  const size_t row_tab = p.table_stride;
  for (size_t panel = p0; panel < p1; ++panel) {
    const size_t col0 = panel * kS24PanelCols;
    const size_t nc = p.n - col0 < kS24PanelCols ? p.n - col0 : kS24PanelCols;
    const uint8_t* b = p.panels + panel * p.k_groups * kS24GroupBytes;
    size_t m = m0;
    if (p.words) {  // signed rows, two at a time
      for (; m + 2 <= m1; m += 2) {
        const uint8_t* t[2] = {p.tables + m * row_tab, p.tables + (m + 1) * row_tab};
        const uint8_t* th[2] = {t[0] + p.neg_offset, t[1] + p.neg_offset};
        int32_t* c[2] = {p.c + m * p.ldc + col0, p.c + (m + 1) * p.ldc + col0};
        tile<2, kTwoRowS, true>(t, th, b, p.k_groups, c, nc);
      }
      for (; m < m1; ++m) {
        const uint8_t* t[1] = {p.tables + m * row_tab};
        const uint8_t* th[1] = {t[0] + p.neg_offset};
        int32_t* c[1] = {p.c + m * p.ldc + col0};
        tile<1, kOneRowS, true>(t, th, b, p.k_groups, c, nc);
      }
      continue;
    }
    for (; m + 2 <= m1; m += 2) {
      const uint8_t* t[2] = {p.tables + m * row_tab, p.tables + (m + 1) * row_tab};
      int32_t* c[2] = {p.c + m * p.ldc + col0, p.c + (m + 1) * p.ldc + col0};
      tile<2, kTwoRowS>(t, nullptr, b, p.k_groups, c, nc);
    }
    if (m < m1) {
      const uint8_t* t[1] = {p.tables + m * row_tab};
      int32_t* c[1] = {p.c + m * p.ldc + col0};
      tile<1, kOneRowS>(t, nullptr, b, p.k_groups, c, nc);
    }
  }
}

}  // namespace

void sparq24_compute_avx2(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  compute<false>(p, m0, m1, p0, p1);
}
void sparq24_compute_avx2_one_stream(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                     size_t p1) {
  compute<true>(p, m0, m1, p0, p1);
}

}  // namespace pq
