// AVX2 path: unpack codes (AND, vpsrlw + AND) and multiply with vpmaddubsw, which is exact here:
// one operand is a code in [0, 15], so a pair sum is at most 2*255*15 = 7650 (no int16
// saturation), then vpmaddwd by ones widens to int32. Register tile: 2 rows x 32 columns, run
// twice per call (the two 32-byte halves of each 64-byte code block hold columns
// {16q + 8h + i : q < 4, i < 8} for half h, in both the W4 and the W2 layout).
// GEMV (one row) streams all 64 columns in one pass and sums the int16 pair sums of several
// k-groups before widening (each is at most 2*255*(2^bits - 1), so 4 groups fit int16 for W4
// and 16 for W2), halving the multiplies per weight.
#include <immintrin.h>

#include <cstring>

#include "core/macros.h"

#include "lowbit_gemm/lowbit_gemm.h"
#include "lowbit_gemm/panel_scales.h"

namespace pq {
namespace {

// Codes of one k-group, half h (32 bytes of each 64-byte block), quarter q: u codes (0..2^bits-1)
// of 8 columns x 4 k. Unpacked one quarter at a time, just before use, and each accumulator
// update pinned by an empty asm: with all four quarters unpacked first, GCC 12 spilled two of
// the accumulators (a store-to-load chain every k-group) and copied the others each iteration;
// fixing that made the grouped M > 1 tile 1.14-1.25x faster (docs/notes/avx2.md).
template <int BITS>
PQ_INLINE __m256i code_quarter(const uint8_t* bg, size_t h, size_t q, __m256i mask) {
  if constexpr (BITS == 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + (q / 2) * 64 + h * 32));
    return _mm256_and_si256(q % 2 ? _mm256_srli_epi16(v, 4) : v, mask);
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + h * 32));
    return _mm256_and_si256(q ? _mm256_srli_epi16(v, static_cast<int>(2 * q)) : v, mask);
  }
}

template <bool SIGNED>
inline __m256i dot4(__m256i acc, __m256i av, __m256i w, __m256i ones) {
  const __m256i p = SIGNED ? _mm256_maddubs_epi16(w, av) : _mm256_maddubs_epi16(av, w);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
}

// One k-group's code lines prefetched to L1 and, with kL2, to L2 (lowbit_gemm.h's distances).
template <bool kL2, int BITS>
PQ_INLINE void prefetch_group(const uint8_t* bg) {
  for (size_t line = 0; line < 32 * BITS; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(bg) + kLowbitYmmPrefetchBytes + line, _MM_HINT_T0);
    if constexpr (kL2)
      _mm_prefetch(reinterpret_cast<const char*>(bg) + kLowbitYmmPrefetchL2Bytes + line,
                   _MM_HINT_T1);
  }
}

// int16 pair sums of one row x 64 columns over k-groups [c0, c1), both 32-byte halves of each
// code block at once (the panel streams once), prefetching the weight stream 3 KiB ahead (Zen 5,
// AVX2-only tier, from DRAM: 2.5-4 KiB all ran W2 3-8% and W4 2-9% faster than 2 KiB; 3 KiB
// kept, docs/notes/lowbit_gemm.md). The caller picks c1 - c0 so the lanes cannot overflow.
// kL2: also to L2 12 KiB ahead (the grouped GEMV's one stream: on an SPR-class Xeon's AVX2-only
// tier, 4096 -> 14336 from DRAM at 2 threads, W4 g32 1.15-1.27x faster, 41st session; the
// ungrouped GEMV's two streams do without).
// init: the lanes' starting value (the grouped GEMV's biased chunks: kChunkBias below).
template <int BITS, bool SIGNED, bool kL2 = false>
PQ_INLINE void chunk_sums(const uint8_t* a, const uint8_t* b, size_t c0, size_t c1, __m256i mask,
                          __m256i* s16, __m256i init = _mm256_setzero_si256()) {
  constexpr size_t kGroupBytes = 32 * BITS;
  for (int i = 0; i < 8; ++i) s16[i] = init;
  for (size_t g = c0; g < c1; ++g) {
    const uint8_t* bg = b + g * kGroupBytes;
    prefetch_group<kL2, BITS>(bg);
    const __m256i av = _mm256_set1_epi32(load_i32(a + g * 4));
    for (size_t h = 0; h < 2; ++h)
      for (size_t q = 0; q < 4; ++q) {
        const __m256i w = code_quarter<BITS>(bg, h, q, mask);
        const __m256i p = SIGNED ? _mm256_maddubs_epi16(w, av) : _mm256_maddubs_epi16(av, w);
        s16[h * 4 + q] = _mm256_add_epi16(s16[h * 4 + q], p);
        asm("" : "+x"(s16[h * 4 + q]));  // see grouped_rows: no spilled accumulators
      }
  }
}

// Sums of MR rows x the 32-column halves [h0, h0 + H) of a 64-column panel over `kgroups`.
// GEMV (MR = 1) takes both halves in one pass (8 accumulators), so the weights stream from
// memory once; MR = 2 runs one half per pass to stay within 16 registers.
template <int BITS, size_t MR, size_t H, bool SIGNED>
void tile_halves(const uint8_t* a, size_t lda, const uint8_t* b, size_t kgroups, size_t h0,
                 int32_t* sums) {
  constexpr size_t kGroupBytes = 32 * BITS;
  constexpr size_t kPrefetchBytes = 2048;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][H][4];
  for (size_t r = 0; r < MR; ++r)
    for (size_t h = 0; h < H; ++h)
      for (size_t q = 0; q < 4; ++q) acc[r][h][q] = _mm256_setzero_si256();
  for (size_t g = 0; g < kgroups; ++g) {
    if (H == 2)
      for (size_t line = 0; line < kGroupBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(b + g * kGroupBytes) + kPrefetchBytes + line,
                     _MM_HINT_T0);
    for (size_t h = 0; h < H; ++h) {
      __m256i w[4];
      for (size_t q = 0; q < 4; ++q) w[q] = code_quarter<BITS>(b + g * kGroupBytes, h0 + h, q, mask);
      for (size_t r = 0; r < MR; ++r) {
        const __m256i av = _mm256_set1_epi32(load_i32(a + r * lda + g * 4));
        for (size_t q = 0; q < 4; ++q) acc[r][h][q] = dot4<SIGNED>(acc[r][h][q], av, w[q], ones);
      }
    }
  }
  for (size_t r = 0; r < MR; ++r)
    for (size_t h = 0; h < H; ++h)
      for (size_t q = 0; q < 4; ++q)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + r * 64 + q * 16 + (h0 + h) * 8),
                            acc[r][h][q]);
}

// One row x 64 columns: int16 accumulation over blocks of kInt16Groups k-groups, widened into
// the int32 sums (kept in L1) after each block.
template <int BITS, bool SIGNED>
void gemv_row(const uint8_t* a, const uint8_t* b, size_t kgroups, int32_t* sums) {
  constexpr size_t kInt16Groups = BITS == 4 ? 4 : 16;  // 2*255*(2^bits-1)*groups <= 32767
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i total[8];
  for (size_t i = 0; i < 8; ++i) total[i] = _mm256_setzero_si256();
  auto add_chunk = [&](size_t g0, size_t g1) {
    __m256i acc[8];  // [h * 4 + q]
    chunk_sums<BITS, SIGNED>(a, b, g0, g1, mask, acc);
    for (size_t i = 0; i < 8; ++i) total[i] = _mm256_add_epi32(total[i], _mm256_madd_epi16(acc[i], ones));
  };
  // two streams, the K halves, a chunk (0.5-1 KiB) of each in turn: from DRAM faster than one
  // stream (docs/notes/lowbit_gemm.md, 23rd session)
  const size_t half = kgroups / 2;
  for (size_t g0 = 0; g0 < half; g0 += kInt16Groups) {
    const size_t g1 = g0 + kInt16Groups < half ? g0 + kInt16Groups : half;
    add_chunk(g0, g1);
    add_chunk(half + g0, half + g1);
  }
  if (kgroups % 2) add_chunk(kgroups - 1, kgroups);
  for (size_t h = 0; h < 2; ++h)
    for (size_t q = 0; q < 4; ++q)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + q * 16 + h * 8), total[h * 4 + q]);
}

template <int BITS, size_t MR, bool SIGNED>
void tile(const uint8_t* a, size_t lda, const uint8_t* b, size_t kgroups, int32_t* sums) {
  if constexpr (MR == 1) {
    gemv_row<BITS, SIGNED>(a, b, kgroups, sums);
  } else {
    tile_halves<BITS, MR, 1, SIGNED>(a, lda, b, kgroups, 0, sums);
    tile_halves<BITS, MR, 1, SIGNED>(a, lda, b, kgroups, 1, sums);
  }
}

template <int BITS, bool SIGNED>
void tile_mr(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
             int32_t* sums) {
  if (mr >= 2) return tile<BITS, 2, SIGNED>(a, lda, b, kgroups, sums);
  tile<BITS, 1, SIGNED>(a, lda, b, kgroups, sums);
}

}  // namespace

void lowbit_epilogue_avx2(const int32_t* sums, size_t mr, const uint32_t* corr, const float* sc,
                          float* out) {
  for (size_t r = 0; r < mr; ++r) {
    const __m256i cr = _mm256_set1_epi32(static_cast<int>(corr[r]));
    for (size_t j = 0; j < 64; j += 8) {
      const __m256i v = _mm256_sub_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + r * 64 + j)), cr);
      __m256 prod = _mm256_mul_ps(_mm256_loadu_ps(sc + j), _mm256_cvtepi32_ps(v));
      asm("" : "+x"(prod));  // keep mul and add separate even under -ffp-contract=fast
      _mm256_storeu_ps(out + r * 64 + j, _mm256_add_ps(_mm256_loadu_ps(out + r * 64 + j), prod));
    }
  }
}

void lowbit_tile4_avx2(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                       bool a_signed, int32_t* sums) {
  if (a_signed) return tile_mr<4, true>(a, lda, mr, b, kgroups, sums);
  tile_mr<4, false>(a, lda, mr, b, kgroups, sums);
}
void lowbit_tile2_avx2(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                       bool a_signed, int32_t* sums) {
  if (a_signed) return tile_mr<2, true>(a, lda, mr, b, kgroups, sums);
  tile_mr<2, false>(a, lda, mr, b, kgroups, sums);
}

}  // namespace pq

// ---------------------------------------------------------------- grouped decode GEMV
// One activation row x one 64-column panel, scales already in the panel layout [G][64]: the
// integer sums of a quantization group stay in 8 ymm accumulators (both 32-byte halves of each
// code block at once, so the panel streams once), and at the group's end they are folded into
// float accumulators: out += scale * float(sum - corr[g]) (mul, then add: the portable
// epilogue's rounding, so the result is bit-identical to tile + lowbit_epilogue per group).
namespace pq {
namespace {


// Unsigned activations: every vpmaddubsw pair sum is in [0, 2*255*(2^BITS - 1)], so kChunk
// k-groups of them add up exactly in 16-bit lanes (W4: 8 x 7650 = 61200, W2: 32 x 1530 = 48960),
// widened once per chunk instead of one vpmaddwd + add per k-group. The tiles (M > 1) widen
// them as uint16 (low + high halves of each 32-bit lane: and, shift, add, off the multiply
// pipes their vpmaddubsw fill). The GEMV starts each lane at -32768 (kChunkBias), so it ends in
// [-32768, 28432], a signed int16, and one vpmaddwd by ones widens a column's two lanes to its
// sum - 65536; the group's correction takes the 65536 per chunk back (biased_corr). On Zen 3
// (L2-resident panel) that made W4 g32's decode GEMV 6% and W2 g32's 11% faster; in the 2-row
// tile the same change was 5-8% slower. A group that fits one chunk (W4 g <= 32, W2 g <= 128)
// goes from the lanes straight to the fold. The GEMV's float accumulators live in `out` (L1):
// 8 ymm for the sums, 4 for the codes, the rest for constants, so nothing spills in the
// streaming loop.
PQ_INLINE __m256i widen_u16_pairs(__m256i s16) {
  return _mm256_add_epi32(_mm256_and_si256(s16, _mm256_set1_epi32(0xffff)),
                          _mm256_srli_epi32(s16, 16));
}

constexpr int16_t kChunkBias = -32768;
PQ_INLINE __m256i chunk_bias() {
  __m256i v = _mm256_set1_epi16(kChunkBias);
  asm("" : "+x"(v));  // loaded at each use, not held in a register across the GEMV's loop
  return v;
}
PQ_INLINE __m256i widen_chunk(__m256i s16) { return _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); }

// The group's offset correction (wrapping uint32) plus the 2 * kChunkBias of each of its chunks.
PQ_INLINE __m256i biased_corr(uint32_t corr, size_t group_kgroups, size_t chunk) {
  const uint32_t chunks = static_cast<uint32_t>(div_round_up(group_kgroups, chunk));
  return _mm256_set1_epi32(static_cast<int>(corr - 65536u * chunks));
}

// A chunk's lanes widened into a group's int32 partial sums at dst (first: the group's first
// chunk writes them); kBiased: the GEMV's lanes (from kChunkBias), else the tiles' (from 0).
template <bool kBiased>
PQ_INLINE void add_chunk_sums(__m256i s16, int32_t* dst, bool first) {
  __m256i v = kBiased ? widen_chunk(s16) : widen_u16_pairs(s16);
  __m256i* d = reinterpret_cast<__m256i*>(dst);
  if (!first) v = _mm256_add_epi32(v, _mm256_load_si256(d));
  _mm256_store_si256(d, v);
}

// kL2: the code stream prefetched into L2 too (chunk_sums), as an SPR-class Xeon's AVX2-only tier
// wants; without it (the AMD entry, avx2_2x64_l1_prefetch): on Zen 4's AVX2 tier, 4096 -> 14336
// from DRAM, QuantLinear W4 g32 / g64 over the raw ungrouped GEMV 1.20-1.32x -> 1.05-1.12x at 1
// thread; at 2, DRAM-bound, ~1.2x either way (50th session, docs/notes/lowbit_gemm.md).
template <int BITS, bool SIGNED, bool kL2>
void gemv_grouped_panel(const uint8_t* a, const uint8_t* b, size_t kgroups, size_t group_kgroups,
                        const uint32_t* corr, const uint16_t* sc, float* out) {
  constexpr size_t kGroupBytes = 32 * BITS;
  constexpr size_t kChunk = BITS == 4 ? 8 : 32;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t n_groups = div_round_up(kgroups, group_kgroups);
  for (size_t gi = 0, g0 = 0; g0 < kgroups; ++gi, g0 += group_kgroups) {
    const size_t g1 = g0 + group_kgroups < kgroups ? g0 + group_kgroups : kgroups;
    const uint16_t* sg = sc + gi * 64;
    prefetch_panel_scales(sc, gi, n_groups);
    __m256i acc[8];  // [h * 4 + q]: columns 16q + 8h .. +7
    if constexpr (SIGNED) {
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_si256();
      for (size_t g = g0; g < g1; ++g) {
        const uint8_t* bg = b + g * kGroupBytes;
        const __m256i av = _mm256_set1_epi32(load_i32(a + g * 4));
        for (size_t h = 0; h < 2; ++h)
          for (size_t q = 0; q < 4; ++q) {
            acc[h * 4 + q] = dot4<true>(acc[h * 4 + q], av, code_quarter<BITS>(bg, h, q, mask), ones);
            asm("" : "+x"(acc[h * 4 + q]));  // see grouped_rows: no spilled accumulators
          }
      }
    } else if (g1 - g0 <= kChunk) {  // one chunk: widen straight into the fold
      chunk_sums<BITS, false, kL2>(a, b, g0, g1, mask, acc, chunk_bias());
      const __m256i cr = biased_corr(corr[gi], g1 - g0, kChunk);
      for (size_t h = 0; h < 2; ++h)
        for (size_t q = 0; q < 4; ++q)
          fold_group8(out + q * 16 + h * 8, panel_scales8(sg, q, h), widen_chunk(acc[h * 4 + q]),
                      cr, gi == 0);
      continue;
    } else {
      alignas(32) int32_t part[8][8];  // the group's int32 sums so far (L1)
      for (size_t c0 = g0; c0 < g1; c0 += kChunk) {
        const size_t c1 = c0 + kChunk < g1 ? c0 + kChunk : g1;
        chunk_sums<BITS, false, kL2>(a, b, c0, c1, mask, acc, chunk_bias());
        for (int i = 0; i < 8; ++i) add_chunk_sums<true>(acc[i], part[i], c0 == g0);
      }
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_load_si256(reinterpret_cast<__m256i*>(part[i]));
    }
    const __m256i cr = SIGNED ? _mm256_set1_epi32(static_cast<int>(corr[gi]))
                              : biased_corr(corr[gi], g1 - g0, kChunk);
    for (size_t h = 0; h < 2; ++h)
      for (size_t q = 0; q < 4; ++q)
        fold_group8(out + q * 16 + h * 8, panel_scales8(sg, q, h), acc[h * 4 + q], cr, gi == 0);
  }
}

// Grouped tile for M > 1 (unsigned activations): MR rows x one 32-column half at a time, each
// k-group's weights unpacked once for all MR rows, pair sums kept in uint16 lanes for a chunk
// of k-groups (as the GEMV above), widened into int32 partial sums once per chunk, and the
// group scale applied once per group: out[r][j] += sc[g][j] * float(sum - corr[r][g]) (mul,
// then add, in group order: the bits of tile + lowbit_epilogue per group; the first group
// writes out as 0 + its product).
template <int BITS, size_t MR>
void grouped_rows(const uint8_t* a, size_t lda, const uint8_t* b, size_t kgroups,
                  size_t group_kgroups, const uint32_t* corr, size_t n_groups, const uint16_t* sc,
                  float* out) {
  constexpr size_t kGroupBytes = 32 * BITS;
  constexpr size_t kChunk = BITS == 4 ? 8 : 32;  // uint16: 8 x 7650 (W4), 32 x 1530 (W2)
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  alignas(32) int32_t part[MR][4][8];  // int32 sums of the current group (L1)
  // Group outside, half inside: the first half pulls the group's code lines in (from memory
  // at small M) and the second finds them in L1, so the panel streams once beside the compute.
  // (Half outside, the first pass waited on the stream and the second computed after it: W4 g32
  // 4096 -> 14336 at M = 2 2.14 -> 1.53 ms on the Zen 4's AVX2 tier.) Each output column still
  // takes its groups in order: the same bits.
  for (size_t gi = 0, g0 = 0; g0 < kgroups; ++gi, g0 += group_kgroups) {
    const size_t g1 = g0 + group_kgroups < kgroups ? g0 + group_kgroups : kgroups;
    for (size_t h = 0; h < 2; ++h) {
      for (size_t c0 = g0; c0 < g1; c0 += kChunk) {
        const size_t c1 = c0 + kChunk < g1 ? c0 + kChunk : g1;
        __m256i s16[MR][4];
        #pragma GCC unroll 4
        for (size_t r = 0; r < MR; ++r)
          #pragma GCC unroll 4
          for (size_t q = 0; q < 4; ++q) s16[r][q] = _mm256_setzero_si256();
        for (size_t g = c0; g < c1; ++g) {
          __m256i av[MR];
          #pragma GCC unroll 4
          for (size_t r = 0; r < MR; ++r) av[r] = _mm256_set1_epi32(load_i32(a + r * lda + g * 4));
          // one code operand live at a time (unpacked just before its use): with all four
          // unpacked first, GCC spilled two int16 accumulators and copied the rest each group
          #pragma GCC unroll 4
          for (size_t q = 0; q < 4; ++q) {
            const __m256i w = code_quarter<BITS>(b + g * kGroupBytes, h, q, mask);
            #pragma GCC unroll 4
            for (size_t r = 0; r < MR; ++r) {
              s16[r][q] = _mm256_add_epi16(s16[r][q], _mm256_maddubs_epi16(av[r], w));
              asm("" : "+x"(s16[r][q]));  // add now: keeps the product's register short-lived
            }
          }
        }
        #pragma GCC unroll 4
        for (size_t r = 0; r < MR; ++r)
          #pragma GCC unroll 4
          for (size_t q = 0; q < 4; ++q) add_chunk_sums<false>(s16[r][q], part[r][q], c0 == g0);
      }
      __m256 sq[4];  // the group's scales for this half, widened once for all rows
      #pragma GCC unroll 4
      for (size_t q = 0; q < 4; ++q) sq[q] = panel_scales8(sc + gi * 64, q, h);
      #pragma GCC unroll 4
      for (size_t r = 0; r < MR; ++r) {
        const __m256i cr = _mm256_set1_epi32(static_cast<int>(corr[r * n_groups + gi]));
        #pragma GCC unroll 4
        for (size_t q = 0; q < 4; ++q)
          fold_group8(out + r * 64 + q * 16 + h * 8, sq[q],
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(part[r][q])), cr, gi == 0);
      }
    }
  }
}

// Grouped tile for 3 or more rows (up to kLowbitAvx2GroupedRows per call): a chunk of k-groups'
// codes is unpacked once into L1 (u codes, both halves) for all the call's rows, which then run 3
// at a time: 12 uint16 accumulators (3 rows x 4 quarters of one half), the codes read from the
// buffer and the activations broadcast from memory at each use, so nothing spills. Per k-group
// and half, 3 rows take 24 vector operations beside their loads (12 vpmaddubsw, 12 vpaddw),
// where grouped_rows' 2 rows take 16 plus the unpack's 6-8. What is left beside the products:
// widening the uint16 sums every chunk (W4: 8 k-groups; 6 operations per accumulator) and the
// per-call unpack, which 24 rows per call amortize (12 rows: 5-10% slower at 1024 rows).
template <size_t R>
PQ_INLINE void chunk_rows(const uint8_t* a, size_t lda, const uint8_t (*codes)[2][4][32],
                          size_t count, size_t h, bool first, int32_t (*part)[2][4][8]) {
  __m256i s16[R][4];
#pragma GCC unroll 4
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (size_t q = 0; q < 4; ++q) s16[r][q] = _mm256_setzero_si256();
  for (size_t i = 0; i < count; ++i) {
#pragma GCC unroll 4
    for (size_t q = 0; q < 4; ++q) {
      const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes[i][h][q]));
#pragma GCC unroll 4
      for (size_t r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(load_i32(a + r * lda + i * 4));
        s16[r][q] = _mm256_add_epi16(s16[r][q], _mm256_maddubs_epi16(av, w));
        asm("" : "+x"(s16[r][q]));  // as grouped_rows: no spilled accumulators
      }
    }
  }
#pragma GCC unroll 4
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (size_t q = 0; q < 4; ++q) add_chunk_sums<false>(s16[r][q], part[r][h][q], first);
}

template <int BITS>
void grouped_many_rows(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                       size_t group_kgroups, const uint32_t* corr, size_t n_groups,
                       const uint16_t* sc, float* out) {
  constexpr size_t kGroupBytes = 32 * BITS;
  constexpr size_t kChunk = BITS == 4 ? 8 : 32;  // uint16: 8 x 7650 (W4), 32 x 1530 (W2)
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  alignas(32) uint8_t codes[kChunk][2][4][32];             // [k-group][half][quarter]: 2 / 8 KiB
  alignas(32) int32_t part[kLowbitAvx2GroupedRows][2][4][8];  // the group's sums so far
  for (size_t gi = 0, g0 = 0; g0 < kgroups; ++gi, g0 += group_kgroups) {
    const size_t g1 = g0 + group_kgroups < kgroups ? g0 + group_kgroups : kgroups;
    for (size_t c0 = g0; c0 < g1; c0 += kChunk) {
      const size_t c1 = c0 + kChunk < g1 ? c0 + kChunk : g1;
      for (size_t g = c0; g < c1; ++g) {
        prefetch_group<true, BITS>(b + g * kGroupBytes);
        for (size_t h = 0; h < 2; ++h)
          for (size_t q = 0; q < 4; ++q)
            _mm256_store_si256(reinterpret_cast<__m256i*>(codes[g - c0][h][q]),
                               code_quarter<BITS>(b + g * kGroupBytes, h, q, mask));
      }
      const uint8_t* ac = a + c0 * 4;
      for (size_t h = 0; h < 2; ++h) {
        size_t r = 0;
        for (; r + 3 <= mr; r += 3)
          chunk_rows<3>(ac + r * lda, lda, codes, c1 - c0, h, c0 == g0, part + r);
        if (mr - r == 2) chunk_rows<2>(ac + r * lda, lda, codes, c1 - c0, h, c0 == g0, part + r);
        if (mr - r == 1) chunk_rows<1>(ac + r * lda, lda, codes, c1 - c0, h, c0 == g0, part + r);
      }
    }
    for (size_t h = 0; h < 2; ++h) {
      __m256 sq[4];  // the group's scales for this half, widened once for all rows
      for (size_t q = 0; q < 4; ++q) sq[q] = panel_scales8(sc + gi * 64, q, h);
      for (size_t r = 0; r < mr; ++r) {
        const __m256i cr = _mm256_set1_epi32(static_cast<int>(corr[r * n_groups + gi]));
        for (size_t q = 0; q < 4; ++q)
          fold_group8(out + r * 64 + q * 16 + h * 8, sq[q],
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(part[r][h][q])), cr,
                      gi == 0);
      }
    }
  }
}

template <int BITS>
void tile_grouped(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                  size_t group_kgroups, const uint32_t* corr, size_t n_groups, const uint16_t* sc,
                  float* out) {
  if (mr >= 3) {
    for (size_t r = 0; r < mr; r += kLowbitAvx2GroupedRows)
      grouped_many_rows<BITS>(a + r * lda, lda,
                              mr - r < kLowbitAvx2GroupedRows ? mr - r : kLowbitAvx2GroupedRows,
                              b, kgroups, group_kgroups, corr + r * n_groups, n_groups, sc,
                              out + r * 64);
    return;
  }
  for (size_t r = 0; r < mr; r += 2) {
    if (mr - r >= 2)
      grouped_rows<BITS, 2>(a + r * lda, lda, b, kgroups, group_kgroups, corr + r * n_groups,
                            n_groups, sc, out + r * 64);
    else
      grouped_rows<BITS, 1>(a + r * lda, lda, b, kgroups, group_kgroups, corr + r * n_groups,
                            n_groups, sc, out + r * 64);
  }
}

}  // namespace

void lowbit_tile_grouped4_avx2(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                               size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                               size_t n_groups, const uint16_t* sc, float* out) {
  tile_grouped<4>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}
void lowbit_tile_grouped2_avx2(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                               size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                               size_t n_groups, const uint16_t* sc, float* out) {
  tile_grouped<2>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}

#define PQ_GEMV_GROUPED_PANEL(name, BITS, kL2)                                                \
  void name(const uint8_t* a, const uint8_t* b, size_t kgroups, size_t group_kgroups,          \
            bool a_signed, const uint32_t* corr, const uint16_t* sc, size_t, float* out) {     \
    if (a_signed)                                                                              \
      return gemv_grouped_panel<BITS, true, kL2>(a, b, kgroups, group_kgroups, corr, sc, out); \
    gemv_grouped_panel<BITS, false, kL2>(a, b, kgroups, group_kgroups, corr, sc, out);         \
  }
PQ_GEMV_GROUPED_PANEL(lowbit_gemv_grouped_panel4_avx2, 4, true)
PQ_GEMV_GROUPED_PANEL(lowbit_gemv_grouped_panel2_avx2, 2, true)
PQ_GEMV_GROUPED_PANEL(lowbit_gemv_grouped_panel4_avx2_l1_prefetch, 4, false)
PQ_GEMV_GROUPED_PANEL(lowbit_gemv_grouped_panel2_avx2_l1_prefetch, 2, false)
#undef PQ_GEMV_GROUPED_PANEL

}  // namespace pq
