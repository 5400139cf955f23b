// AVX-512 VBMI + VNNI kernel of SPARQ on 2:4-sparse weights (layout: sparq.h). Two k groups
// per step; per 16 columns one vpdpbusd does all four products of both groups, so the 2:4
// product runs at the dense int8 kernel's rate per useful multiply-accumulate:
//   - the row's tables of groups g and g+1 are 64 contiguous bytes T = [E0_g, E1_g, E0_g+1,
//     E1_g+1]; one vpermb with the index bytes (s_g, 16 + s_g, 32 + s_g+1, 48 + s_g+1) per column
//     gives the dword of activations (a0_g, a1_g, a0_g+1, a1_g+1) for 16 columns;
//   - the index bytes come from the 2 x 16 selector bytes (weights only, shared by the tile's
//     rows): one vpermt2b picks each column's byte from the selectors or their copy shifted down
//     by 4 (its nibble), then one vpternlogd keeps the nibble and adds the slot's 16 * slot;
//   - the values (v0_g, v1_g, v0_g+1, v1_g+1) per column: one vpermt2b of the two groups' 64
//     value bytes per 16 columns (weights only);
//   - vpdpbusd(acc, activations u8, values s8): exact, wrapping modulo 2^32 like every path.
// An odd last group of a K block runs with group g+1 masked to zero (no read past the buffers).
// Up to 8 rows per tile share the weight work (one row runs the decode tile below). A call's
// rows in one tile (decode, small batches) stream the panel once, as kDecodeStreams streams or
// (the AMD entry, DecodeStreams::kOneStream) one; more rows pass over K blocks kept in L2. Signed
// rows (sparq24_compute_signed_avx512) as narrow tables (sparq.h, tables24_avx512): the same tile
// over l + 128, less 128 x the block's column sums, then 128 h . W over the row's high pairs (one
// row: the decode tile's narrow modes, or its low pass and then the high pairs).
#include <immintrin.h>

#include <type_traits>

#include "core/macros.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

constexpr size_t kBlockGroups = 2048;  // k groups per K block: 160 KiB of a panel
constexpr size_t kMaxRows = 8;  // 16 accumulators; the weight work is a third of 4 rows' work
// Prefetch distances as the AVX2 kernel (measured there at decode from DRAM).
constexpr size_t kPrefetchBytes = 2560;
constexpr size_t kPrefetchL2Bytes = 4 * kPrefetchBytes;
// Up to kMaxRows rows read a panel as this many streams (sparq24_avx2.cc). 2 streams and the
// whole K (unsigned rows) against 1 and K blocks, 3-8 x 14336 x 4096 from DRAM: 2.65 / 2.85 /
// 3.73 ms at 3 / 4 / 8 rows against 3.17 / 3.13 / 4.07 (Xeon, model 167); signed rows 2-5%.
constexpr size_t kDecodeStreams = 2;
// The AMD entry (DecodeStreams::kOneStream): these row tiles read one stream too (Zen 4, 49th
// session, 4 x 14336 x 4096 from DRAM: unsigned 1.79 -> 1.38 ms, signed 3.09 -> 2.74, 2% of
// magnitudes >= 128 2.37 -> 2.05-2.10); the one-row tile's far L2 prefetch made no difference
// here.
enum class DecodeStreams { kTwoStreams, kOneStream };
constexpr size_t row_tile_streams(DecodeStreams streams) {
  return streams == DecodeStreams::kOneStream ? 1 : kDecodeStreams;
}

// Constant index vectors, from sparq.h's layout functions (bytes built once per process).
struct Indices {
  __m512i sel[2];    // per half: vpermt2b index into [selectors | selectors >> 4]
  __m512i value[2];  // per half: vpermt2b index into [values of g | values of g+1]
  __m512i slot;      // 16 * slot in every byte
};

struct IndexBytes {
  alignas(64) uint8_t sel[2][64];
  alignas(64) uint8_t val[2][64];
  alignas(64) uint8_t slot[64];
  IndexBytes() {
    for (size_t h = 0; h < 2; ++h)
      for (size_t j = 0; j < 64; ++j) {
        const size_t lane = 16 * h + j / 4, s = j % 4, g = s / 2;  // g: 0 = group g, 1 = g+1
        sel[h][j] = static_cast<uint8_t>(16 * g + sparq24_sel_byte(lane) +
                                         (sparq24_sel_shift(lane) ? 64 : 0));
        val[h][j] =
            static_cast<uint8_t>(64 * g + sparq24_value_offset(lane, s % 2) - kS24SelBytes);
        slot[j] = static_cast<uint8_t>(16 * s);
      }
  }
};

Indices make_indices() {
  static const IndexBytes bytes;
  Indices ix;
  for (size_t h = 0; h < 2; ++h) {
    ix.sel[h] = _mm512_load_si512(bytes.sel[h]);
    ix.value[h] = _mm512_load_si512(bytes.val[h]);
  }
  ix.slot = _mm512_load_si512(bytes.slot);
  return ix;
}

// The weight side of one step (groups g, g + 1 of a block; g + 1 < groups or it is zero): per
// 16-column half the vpermb indices and the value dwords.
struct StepWeights {
  __m512i idx[2], val[2];
};
PQ_INLINE StepWeights step_weights(const Indices& ix, const uint8_t* bg, bool pair) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  StepWeights w;
  __m512i sel = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
  __m512i v_next = _mm512_setzero_si512();
  if (pair) {
    sel = _mm512_inserti32x4(
        sel, _mm_loadu_si128(reinterpret_cast<const __m128i*>(bg + kS24GroupBytes)), 1);
    v_next = _mm512_loadu_si512(bg + kS24GroupBytes + kS24SelBytes);
  }
  const __m512i v_this = _mm512_loadu_si512(bg + kS24SelBytes);
  const __m512i sel_hi = _mm512_srli_epi16(sel, 4);
#pragma GCC unroll 2
  for (size_t h = 0; h < 2; ++h) {
    // (byte & 0x0f) | 16 * slot
    w.idx[h] = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(sel, ix.sel[h], sel_hi), nib,
                                         ix.slot, 0xEA);
    w.val[h] = _mm512_permutex2var_epi8(v_this, ix.value[h], v_next);
  }
  return w;
}

// A row's tables of one step: a plain load of both groups', or of g's alone where g + 1 is past
// the block. Masked, even with every bit set, the load cost the row tile ~0.2 cycles per row and
// step on Zen 4 (50th session, docs/notes/sparq.md).
PQ_INLINE __m512i load_step_tables(const uint8_t* tables, bool pair) {
  return pair ? _mm512_loadu_si512(tables) : _mm512_maskz_loadu_epi8(0xffffffffull, tables);
}

// What a tile computes from its rows' tables T: kPlain, T . W (unsigned rows); the narrow
// tables of signed rows (sparq24_tables_row_signed_avx512), whose bytes are l + 128 and h + 1:
// kLow, T . W - 128 * colsum(W) = l . W; kHigh, 128 * (T . W - colsum(W)) = 128 * h . W
// (colsum: each column's sum of value bytes over the block, by one vpdpbusd with ones per step
// in the block's first tile, kept in *colsum_io for the others). All exact modulo 2^32, as
// every path.
enum class TileMode { kPlain, kLow, kHigh };

// R rows x one 32-column panel over `groups` k groups of one K block. kPrefetch: the block's
// first row tile, which streams it in; the later ones find it in L2 (their prefetches were 6 of
// ~45 operations per step).
// S streams: the block's groups in S equal parts (of whole group pairs), read in turn.
template <size_t R, bool kPrefetch, size_t S, TileMode kMode = TileMode::kPlain>
void tile(const Indices& ix, const uint8_t* const* t, const uint8_t* b, size_t groups,
          int32_t* const* c, size_t nc, bool accumulate_c, __m512i* colsum_io = nullptr) {
  constexpr bool kSums = kMode == TileMode::kLow && kPrefetch;  // (the block's first tile)
  const __m512i ones = _mm512_set1_epi8(1);
  // each accumulator zeroed by its own instruction: from one shared zero GCC copies every
  // accumulator through a spare register around each vpdpbusd (as in lowbit_gemm_avx512vnni.cc)
  __m512i acc[R][2], colsum[2];
#pragma GCC unroll 8
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (size_t h = 0; h < 2; ++h) asm volatile("vpxord %0, %0, %0" : "=v"(acc[r][h]));
  if constexpr (kSums)
    for (size_t h = 0; h < 2; ++h) asm volatile("vpxord %0, %0, %0" : "=v"(colsum[h]));
  // one step's rows; pair: groups g and g + 1 (std::true_type), or g alone (the block's odd last)
  auto rows = [&](size_t g, const StepWeights& w, auto pair) __attribute__((always_inline)) {
    const char* pb = reinterpret_cast<const char*>(b + g * kS24GroupBytes);
    if (kPrefetch)
      for (size_t line = 0; line < 2 * kS24GroupBytes; line += 64) {
        _mm_prefetch(pb + kPrefetchBytes / S + line, _MM_HINT_T0);
        _mm_prefetch(pb + kPrefetchL2Bytes / S + line, _MM_HINT_T2);
      }
    if constexpr (kSums)
      for (size_t h = 0; h < 2; ++h) colsum[h] = _mm512_dpbusd_epi32(colsum[h], ones, w.val[h]);
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      const __m512i tab = load_step_tables(t[r] + g * kS24TableBytes, pair);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_permutexvar_epi8(w.idx[0], tab), w.val[0]);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], _mm512_permutexvar_epi8(w.idx[1], tab), w.val[1]);
    }
  };
  // The block's group pairs in order n: S streams of `part` groups read in turn, then the rest.
  const size_t part = groups / (2 * S) * 2, stream_pairs = S * part / 2, pairs = groups / 2;
  auto pair_group = [&](size_t n) -> size_t {
    return n < stream_pairs ? n % S * part + 2 * (n / S) : 2 * n;
  };
  auto weights = [&](size_t n) __attribute__((always_inline)) {
    return step_weights(ix, b + pair_group(n) * kS24GroupBytes, true);
  };
  // Software-pipelined: each step's weight side is computed while the step before runs its rows,
  // in two register sets in turn (no copies). In order, the rows waited on it: 4.3-4.4 -> 3.7-3.8
  // cycles per row and step (Zen 4, 50th session).
  if (pairs > 0) {
    StepWeights wa = weights(0);
    size_t n = 0;
    for (; n + 2 <= pairs; n += 2) {
      const StepWeights wb = weights(n + 1);
      rows(pair_group(n), wa, std::true_type{});
      wa = weights(n + 2 < pairs ? n + 2 : n + 1);
      rows(pair_group(n + 1), wb, std::true_type{});
    }
    if (n < pairs) rows(pair_group(n), wa, std::true_type{});
  }
  if (groups % 2)
    rows(groups - 1, step_weights(ix, b + (groups - 1) * kS24GroupBytes, false), std::false_type{});
  for (size_t h = 0; h < 2; ++h) {
    if constexpr (kSums) colsum_io[h] = colsum[h];
    else if constexpr (kMode != TileMode::kPlain) colsum[h] = colsum_io[h];
  }
  // fully unrolled (constant indices): a runtime-bounded loop here kept acc[][] in memory
#pragma GCC unroll 2
  for (size_t h = 0; h < 2; ++h) {
    if (16 * h >= nc) break;
    const size_t left = nc - 16 * h;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      int32_t* dst = c[r] + 16 * h;
      __m512i v = acc[r][h];
      if constexpr (kMode == TileMode::kLow)
        v = _mm512_sub_epi32(v, _mm512_slli_epi32(colsum[h], 7));
      if constexpr (kMode == TileMode::kHigh)
        v = _mm512_slli_epi32(_mm512_sub_epi32(v, colsum[h]), 7);
      if (accumulate_c) v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m, dst));
      _mm512_mask_storeu_epi32(dst, m, v);
    }
  }
}

// A narrow signed row's high part over `groups` k groups (a K block, or a decode row's whole K),
// only where it has one: c += 128 * h . W over the group pairs holding a high group (bits: the
// row's high groups from the first), from its h + 1 tables th (the pair's other group, h = 0,
// adds v - v).
void high_pairs(const Indices& ix, const uint8_t* th, const uint64_t* bits, const uint8_t* b,
                size_t groups, int32_t* c, size_t nc) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
  __m512i sums[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
  for (size_t word = 0; 64 * word < groups; ++word) {
    // the pairs (g, g + 1), g even, with a high group: bit g
    uint64_t pairs = (bits[word] | bits[word] >> 1) & 0x5555555555555555ull;
    for (; pairs; pairs &= pairs - 1) {
      const size_t g = 64 * word + static_cast<size_t>(__builtin_ctzll(pairs));
      const StepWeights w = step_weights(ix, b + g * kS24GroupBytes, g + 1 < groups);
      const __m512i tab = load_step_tables(th + g * kS24TableBytes, g + 1 < groups);
      for (size_t h = 0; h < 2; ++h) {
        acc[h] = _mm512_dpbusd_epi32(acc[h], _mm512_permutexvar_epi8(w.idx[h], tab), w.val[h]);
        sums[h] = _mm512_dpbusd_epi32(sums[h], ones, w.val[h]);
      }
    }
  }
  for (size_t h = 0; h < 2 && 16 * h < nc; ++h) {
    const size_t left = nc - 16 * h;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    int32_t* dst = c + 16 * h;
    const __m512i v = _mm512_slli_epi32(_mm512_sub_epi32(acc[h], sums[h]), 7);
    _mm512_mask_storeu_epi32(dst, m, _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m, dst)));
  }
}

// One row (decode). Per group the row's activations are looked up straight into the values'
// byte layout (dword j holds v0, v1 of columns c + 8 and c, c = 16 (j / 8) + j % 8: sparq.h),
// so the stored values are the vpdpbusd operand as they are: two masked vpermb of the group's
// 32 table bytes give the activations of columns c and of columns c + 8, two vpdpbusd their
// products. Per group 3 weight-side operations (the 64 lookup indices from the 16 selector
// bytes) and 4 for the row, against ~22 in the AVX2 tile and ~10 here per group with the
// row tile above (its vpermt2b): from DRAM 2.02-2.27 ms against 2.38-2.47 at 1 x 14336 x 4096
// (Xeon, model 167), which puts 2:4 at the dense int8 GEMV's streaming rate.
// Signed rows in narrow tables (kNarrow..., l + 128 and h + 1: tables24_avx512): the bytes a
// lookup masks out take 128 (1 for h) instead of 0, so each accumulator gains 128 (1) x the sum
// of its dword's four value bytes, which one vpdpbusd with ones per group counts (vsum):
// C = (low - 128 vsum) + 128 (high - vsum), exact modulo 2^32 like every path.
enum class DecodeMode { kPlain, kNarrowLow, kNarrowBoth };

struct DecodeIndexBytes {
  // byte p's index into [sel & 15, sel >> 4 & 15, (sel & 15) | 16, (sel >> 4 & 15) | 16], the
  // 16 selector bytes' nibbles per 16-byte lane (lanes 2, 3: E1's lookups)
  alignas(64) uint8_t perm[64];
  alignas(64) uint8_t e1[64];  // 16 in lanes 2, 3
  DecodeIndexBytes() {
    for (size_t p = 0; p < 64; ++p) {
      const size_t j = p / 4, byte = p % 4, c = 16 * (j / 8) + j % 8;
      const size_t col = byte % 2 ? c : c + 8, table = byte / 2;  // 0: E0 (v0), 1: E1 (v1)
      perm[p] = static_cast<uint8_t>(16 * (2 * table + (sparq24_sel_shift(col) ? 1 : 0)) +
                                     sparq24_sel_byte(col));
      e1[p] = static_cast<uint8_t>(p >= 32 ? 16 : 0);
    }
  }
};

// How the decode tile streams a panel, per CPU vendor (two kernel entries):
// - kTwoStreams, as the dense int8 GEMV (two K halves), prefetched into L1 5 KiB and into L2 15
//   KiB ahead (shared by the streams). At 1 x 14336 x 4096 from DRAM (Xeon, model 167, 45th
//   session, L1 prefetch only): none 2.22 ms, 1280 B 2.12, 2560 B 2.07-2.10, 5120 B 2.02, 8192
//   B 2.29; 1 stream 2.25, 4 streams 2.33. The L2 distance: Zen 4, 48th session (QuantLinear's
//   signed decode row 2.32-2.56 -> 1.67-1.88 ms), not yet timed on Intel.
// - kOneStream (AMD): one stream, into L1 5 KiB ahead and into L2 at two distances, 15 and 30
//   KiB (presumably the near one catches what the far one dropped). Zen 4, 49th session, min of
//   4 alternating rounds, unsigned rows: kTwoStreams 1.60-1.74 ms; one stream, one L2 distance
//   1.48-1.58; kOneStream 1.09-1.34 (docs/notes/sparq.md).
constexpr size_t kDecodeTileStreams = 2;  // kTwoStreams
constexpr size_t kDecodePrefetchBytes = 5120;
constexpr size_t kDecodeL2PrefetchBytes = 3 * kDecodePrefetchBytes;
constexpr size_t kDecodeFarPrefetchBytes = 2 * kDecodeL2PrefetchBytes;

template <DecodeMode kMode, DecodeStreams kStreams>
void decode_tile(const uint8_t* t, const uint8_t* th, const uint8_t* b, size_t groups,
                 int32_t* c, size_t nc) {
  constexpr bool kOne = kStreams == DecodeStreams::kOneStream;
  constexpr size_t S = kOne ? 1 : kDecodeTileStreams;
  constexpr bool kNarrow = kMode != DecodeMode::kPlain, kHigh = kMode == DecodeMode::kNarrowBoth;
  static const DecodeIndexBytes bytes;
  const __m512i perm = _mm512_load_si512(bytes.perm), e1 = _mm512_load_si512(bytes.e1);
  const __m512i shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  const __m512i nib = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi8(1);
  const __m512i low_fill = _mm512_set1_epi8(kNarrow ? static_cast<char>(0x80) : 0);
  constexpr __mmask64 kColC = 0xAAAAAAAAAAAAAAAAull, kColC8 = 0x5555555555555555ull;
  __m512i acc_c[S], acc_c8[S], high_c[S], high_c8[S], vsum[S];
  for (size_t s = 0; s < S; ++s) {
    acc_c[s] = acc_c8[s] = high_c[s] = high_c8[s] = vsum[s] = _mm512_setzero_si512();
  }
  auto step = [&](size_t g, size_t s) __attribute__((always_inline)) {
    const uint8_t* bg = b + g * kS24GroupBytes;
    const char* pf = reinterpret_cast<const char*>(bg) + kDecodePrefetchBytes / S;
    const char* pf2 = reinterpret_cast<const char*>(bg) + kDecodeL2PrefetchBytes / S;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    _mm_prefetch(pf2, _MM_HINT_T1);
    _mm_prefetch(pf2 + 64, _MM_HINT_T1);
    if constexpr (kOne) {
      const char* pf3 = reinterpret_cast<const char*>(bg) + kDecodeFarPrefetchBytes;
      _mm_prefetch(pf3, _MM_HINT_T1);
      _mm_prefetch(pf3 + 64, _MM_HINT_T1);
    }
    const __m512i sel =
        _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
    // (nibble & 15) | 16 * table
    const __m512i nibbles =
        _mm512_ternarylogic_epi32(_mm512_srlv_epi64(sel, shifts), nib, e1, 0xEA);
    const __m512i idx = _mm512_permutexvar_epi8(perm, nibbles);
    const __m512i v = _mm512_loadu_si512(bg + kS24SelBytes);
    // one table's products: columns c from the odd bytes, c + 8 from the even ones (the
    // others take `fill`)
    auto products = [&](const uint8_t* table, __m512i fill, __m512i& sum_c, __m512i& sum_c8)
        __attribute__((always_inline)) {
      const __m512i tab = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + g * kS24TableBytes)));
      sum_c = _mm512_dpbusd_epi32(sum_c, _mm512_mask_permutexvar_epi8(fill, kColC, idx, tab), v);
      sum_c8 =
          _mm512_dpbusd_epi32(sum_c8, _mm512_mask_permutexvar_epi8(fill, kColC8, idx, tab), v);
    };
    products(t, low_fill, acc_c[s], acc_c8[s]);
    if constexpr (kNarrow) vsum[s] = _mm512_dpbusd_epi32(vsum[s], ones, v);
    if constexpr (kHigh) products(th, ones, high_c[s], high_c8[s]);
  };
  const size_t part = groups / S;
  for (size_t i = 0; i < part; ++i)
#pragma GCC unroll 2
    for (size_t s = 0; s < S; ++s) step(s * part + i, s);
  for (size_t g = S * part; g < groups; ++g) step(g, 0);
  for (size_t s = 1; s < S; ++s) {
    acc_c[0] = _mm512_add_epi32(acc_c[0], acc_c[s]);
    acc_c8[0] = _mm512_add_epi32(acc_c8[0], acc_c8[s]);
    if constexpr (kNarrow) vsum[0] = _mm512_add_epi32(vsum[0], vsum[s]);
    if constexpr (kHigh) {
      high_c[0] = _mm512_add_epi32(high_c[0], high_c[s]);
      high_c8[0] = _mm512_add_epi32(high_c8[0], high_c8[s]);
    }
  }
  if constexpr (kNarrow) {
    const __m512i low_fix = _mm512_slli_epi32(vsum[0], 7);
    acc_c[0] = _mm512_sub_epi32(acc_c[0], low_fix);
    acc_c8[0] = _mm512_sub_epi32(acc_c8[0], low_fix);
  }
  if constexpr (kHigh) {
    const __m512i high_fix_c = _mm512_slli_epi32(_mm512_sub_epi32(high_c[0], vsum[0]), 7);
    const __m512i high_fix_c8 = _mm512_slli_epi32(_mm512_sub_epi32(high_c8[0], vsum[0]), 7);
    acc_c[0] = _mm512_add_epi32(acc_c[0], high_fix_c);
    acc_c8[0] = _mm512_add_epi32(acc_c8[0], high_fix_c8);
  }
  // columns 0-15: the first halves of acc_c and acc_c8; 16-31: their second halves
  const __m512i cols[2] = {_mm512_shuffle_i64x2(acc_c[0], acc_c8[0], 0x44),
                           _mm512_shuffle_i64x2(acc_c[0], acc_c8[0], 0xEE)};
  for (size_t h = 0; h < 2 && 16 * h < nc; ++h) {
    const size_t left = nc - 16 * h;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    _mm512_mask_storeu_epi32(c + 16 * h, m, cols[h]);
  }
}

// One row x panels [p0, p1) by the decode tile; narrow: a signed row's narrow tables, its high
// part, if it has one, in the same pass, or with kOneStream and at most a third of this row's
// groups high (p.few_high's bound, per block of rows) by high_pairs after each panel's low pass,
// over the panel just streamed (L2). Zen 4, 49th session, 1 x 14336 x 4096 from DRAM, 2% of
// magnitudes >= 128 (7.8% of the groups): 1.53-1.55 ms in one pass, 1.26-1.38 with high_pairs
// (at 68% of the groups 1.83-1.86 against 1.53-1.58). With kTwoStreams one pass (46th session,
// Xeon, model 167: 2.22 against 2.28 ms).
template <DecodeStreams kStreams>
void decode_row(const Sparq24Problem& p, size_t m, size_t p0, size_t p1, bool narrow) {
  const uint8_t* t = p.tables + m * p.table_stride;
  const uint8_t* th = t + p.neg_offset;
  const uint64_t* bits = narrow ? p.high + m * p.high_stride : nullptr;
  size_t high_groups = 0;
  for (size_t w = 0; narrow && w < p.high_stride; ++w)
    high_groups += static_cast<size_t>(__builtin_popcountll(bits[w]));
  const bool high_after =
      kStreams == DecodeStreams::kOneStream && high_groups > 0 && 3 * high_groups <= p.k_groups;
  Indices ix;
  if (high_after) ix = make_indices();
  for (size_t panel = p0; panel < p1; ++panel) {
    const size_t col0 = panel * kS24PanelCols;
    const size_t nc = p.n - col0 < kS24PanelCols ? p.n - col0 : kS24PanelCols;
    const uint8_t* b = p.panels + panel * p.k_groups * kS24GroupBytes;
    int32_t* c = p.c + m * p.ldc + col0;
    if (!narrow) {
      decode_tile<DecodeMode::kPlain, kStreams>(t, nullptr, b, p.k_groups, c, nc);
    } else if (high_after) {
      decode_tile<DecodeMode::kNarrowLow, kStreams>(t, nullptr, b, p.k_groups, c, nc);
      high_pairs(ix, th, bits, b, p.k_groups, c, nc);
    } else if (high_groups > 0) {
      decode_tile<DecodeMode::kNarrowBoth, kStreams>(t, th, b, p.k_groups, c, nc);
    } else {
      decode_tile<DecodeMode::kNarrowLow, kStreams>(t, nullptr, b, p.k_groups, c, nc);
    }
  }
}

template <size_t R, DecodeStreams kStreams>
void rows_tile(const Indices& ix, const Sparq24Problem& p, size_t m, size_t kb, size_t groups,
               const uint8_t* b, size_t col0, size_t nc, bool first, bool decode,
               __m512i* narrow) {
  constexpr size_t kS = row_tile_streams(kStreams);
  const size_t row_tab = p.table_stride;
  const uint8_t* t[R];
  int32_t* c[R];
  for (size_t r = 0; r < R; ++r) {
    t[r] = p.tables + (m + r) * row_tab + kb * kS24TableBytes;
    c[r] = p.c + (m + r) * p.ldc + col0;
  }
  if (narrow) {  // signed rows (narrow: the block's column sums): low parts, then high parts
    if (decode)
      tile<R, true, kS, TileMode::kLow>(ix, t, b, groups, c, nc, kb > 0, narrow);
    else if (first)
      tile<R, true, 1, TileMode::kLow>(ix, t, b, groups, c, nc, kb > 0, narrow);
    else
      tile<R, false, 1, TileMode::kLow>(ix, t, b, groups, c, nc, kb > 0, narrow);
    const uint8_t* th[R];
    for (size_t r = 0; r < R; ++r) th[r] = t[r] + p.neg_offset;
    if (!p.few_high)
      return tile<R, false, 1, TileMode::kHigh>(ix, th, b, groups, c, nc, true, narrow);
    for (size_t r = 0; r < R; ++r)
      high_pairs(ix, th[r], p.high + (m + r) * p.high_stride + kb / 64, b, groups, c[r], nc);
    return;
  }
  if (decode) return tile<R, true, kS>(ix, t, b, groups, c, nc, kb > 0);
  if (first)
    tile<R, true, 1>(ix, t, b, groups, c, nc, kb > 0);
  else
    tile<R, false, 1>(ix, t, b, groups, c, nc, kb > 0);
}

// Rows [m0, m1) x panels [p0, p1); narrow: signed rows in narrow tables.
template <DecodeStreams kStreams>
void compute(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1, bool narrow) {
  const Indices ix = make_indices();
  __m512i colsum[2];  // narrow: the current panel's and K block's column sums
  __m512i* nb = narrow ? colsum : nullptr;
  for (size_t panel = p0; panel < p1; ++panel) {
    const size_t col0 = panel * kS24PanelCols;
    const size_t nc = p.n - col0 < kS24PanelCols ? p.n - col0 : kS24PanelCols;
    // the rows reuse each K block from L2; decode (one row tile) streams the panel once, over
    // the whole K with unsigned rows (signed rows keep K blocks: their high pass rereads them)
    const bool decode = m1 - m0 <= kMaxRows;
    const size_t block = decode && !narrow ? p.k_groups : kBlockGroups;
    for (size_t kb = 0; kb < p.k_groups; kb += block) {
      const size_t groups = p.k_groups - kb < block ? p.k_groups - kb : block;
      const uint8_t* b = p.panels + (panel * p.k_groups + kb) * kS24GroupBytes;
      size_t m = m0;
      for (; m + kMaxRows <= m1; m += kMaxRows)
        rows_tile<kMaxRows, kStreams>(ix, p, m, kb, groups, b, col0, nc, m == m0, decode, nb);
      switch (m1 - m) {
#define PQ_ROWS_CASE(n) \
  case n: rows_tile<n, kStreams>(ix, p, m, kb, groups, b, col0, nc, m == m0, decode, nb); break;
        PQ_ROWS_CASE(7) PQ_ROWS_CASE(6) PQ_ROWS_CASE(5) PQ_ROWS_CASE(4)
        PQ_ROWS_CASE(3) PQ_ROWS_CASE(2) PQ_ROWS_CASE(1)
#undef PQ_ROWS_CASE
        default: break;
      }
    }
  }
}

template <DecodeStreams kStreams>
void compute_unsigned(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  if (m1 - m0 == 1) return decode_row<kStreams>(p, m0, p0, p1, false);
  compute<kStreams>(p, m0, m1, p0, p1, false);
}

template <DecodeStreams kStreams>
void compute_signed(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  if (p.words) {  // (not chosen: narrow_one_row)
    if (kStreams == DecodeStreams::kOneStream)
      return sparq24_compute_avx2_one_stream(p, m0, m1, p0, p1);
    return sparq24_compute_avx2(p, m0, m1, p0, p1);
  }
  if (m1 - m0 == 1) return decode_row<kStreams>(p, m0, p0, p1, true);
  compute<kStreams>(p, m0, m1, p0, p1, true);
}

}  // namespace

void sparq24_compute_avx512(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                            size_t p1) {
  compute_unsigned<DecodeStreams::kTwoStreams>(p, m0, m1, p0, p1);
}
void sparq24_compute_signed_avx512(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                   size_t p1) {
  compute_signed<DecodeStreams::kTwoStreams>(p, m0, m1, p0, p1);
}
void sparq24_compute_avx512_one_stream(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                       size_t p1) {
  compute_unsigned<DecodeStreams::kOneStream>(p, m0, m1, p0, p1);
}
void sparq24_compute_signed_avx512_one_stream(const Sparq24Problem& p, size_t m0, size_t m1,
                                              size_t p0, size_t p1) {
  compute_signed<DecodeStreams::kOneStream>(p, m0, m1, p0, p1);
}

}  // namespace pq
