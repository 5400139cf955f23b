// AVX2 path (no VNNI): u8 x s8 with vpmaddubsw -> vpmaddwd -> vpaddd, exact on every input.
//
// vpmaddubsw sums two u8 x s8 products into a saturating int16. That pair sum cannot pass 32767
// while the pair's activations sum to at most 255 (255 * 128 = 32640), so:
//   fast route:  rows whose pairs (k, k + 1), k even (in this K block) all sum to <= 255 (any
//                7-bit row; 8-bit rows after int8_pair_split_avx2): one vpmaddubsw per 32
//                products, then vpmaddwd with ones widens the pair sums to int32;
//   split route: any other row block: a = 2 * (a >> 1) + (a & 1), both halves <= 127, two
//                vpmaddubsw, widened with vpmaddwd by 2 and by 1. Same bits, twice the work.
// The route is picked per micro-tile and K block from the rows' pair sums (1/100 of the work),
// so callers that feed 7-bit activations, or split 8-bit rows, get the fast route for free.
// 9-bit rows (compute_wide: SPARQ's signed inputs, +-255 offset by 256) run a split route of
// their own, u = 4 (u >> 2) + (u & 3), one row at a time, and from kWideTileMinRows rows on the
// int16 vpmaddwd tile of int8_gemm_wide_avx2.cc. Signed rows as |v| and sign bytes
// (compute_sign_xor, Int8WideFormat::sign_xor) run the tiles below with each row's sign bytes
// xor-ed into the weights (|v| (w ^ 0xff) = -|v| w - |v|, the row bias adds the |v| back): one
// vpxor per product vector, on the pipes the multiplies leave free, and the same two routes on
// |v| (pair-safe rows: int8_pair_split_avx2 with the signs).
//
// Activations are u8 [M][lda], used in place. Weights come straight from the shared panels
// ([K/4][64 columns][4 k]): one ymm is 8 columns x 4 k, exactly what vpmaddubsw pairs with a
// broadcast dword of 4 activations, and vpmaddwd(ones) leaves one int32 per column (no
// horizontal reduction). Two loop shapes:
//   M = 1 and M > 16: 1 row x the whole 64-column panel, 8 independent accumulators, each k
//     group's 256 bytes read contiguously; for M > 1 the panel is cut into K blocks of 256 KiB
//     that stay in L2 while every row passes over them;
//   M = 2..16 (stream_rows_panel): every row computes while the panel streams in from memory,
//     4 KiB chunks x 16-column strips x 4-row register tiles (docs/notes/avx2.md, 8th session).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/avx2_store.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

constexpr size_t kVecCols = 8;          // columns per ymm of weights
constexpr size_t kV = kInt8PanelCols / kVecCols;  // ymm per panel row: 8 accumulators
constexpr size_t kBlockGroups = 1024;   // k groups (of 4) per K block: 256 KiB of a panel
constexpr size_t kPrefetchBytes = 2048; // accumulate_wide: how far ahead of the stream to prefetch
constexpr size_t kWideTileMinRows = 4;   // 9-bit rows: from here on the int16 tile

PQ_INLINE __m256i widen(__m256i pairs16, __m256i mult) { return _mm256_madd_epi16(pairs16, mult); }

// Pair sums (k, k + 1), k even, of 32 bytes as int16 (at most 510: no saturation).
PQ_INLINE __m256i pair_sums(__m256i bytes) {
  return _mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1));
}

// True if the 16-bit pair sums in `sums` are all <= 255 (the fast route's condition).
PQ_INLINE bool pairs_fit(__m256i sums) {
  return _mm256_testz_si256(sums, _mm256_set1_epi16(static_cast<int16_t>(0xff00)));
}

// True if every activation of rows [0, rows) x bytes [0, len) is <= 127.
bool rows_small(const uint8_t* a, size_t lda, size_t rows, size_t len) {
  __m256i any = _mm256_setzero_si256();
  size_t tail_or = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* row = a + r * lda;
    size_t i = 0;
    for (; i + 32 <= len; i += 32)
      any = _mm256_or_si256(any, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i)));
    for (; i < len; ++i) tail_or |= row[i];
  }
  return _mm256_movemask_epi8(any) == 0 && (tail_or & 0x80) == 0;
}

// True if every pair of rows [0, rows) x bytes [0, len) (len even) sums to at most 255: then the
// fast route is exact (Int8GroupFix in int8_gemm.h). 7-bit rows, the common case, pass by the
// cheaper test first (as in copy_chunk_row).
bool rows_pair_safe(const uint8_t* a, size_t lda, size_t rows, size_t len) {
  if (rows_small(a, lda, rows, len)) return true;
  __m256i most = _mm256_setzero_si256();
  unsigned tail = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* row = a + r * lda;
    size_t i = 0;
    for (; i + 32 <= len; i += 32)
      most = _mm256_max_epu16(
          most, pair_sums(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i))));
    for (; i + 1 < len; i += 2) tail |= static_cast<unsigned>(row[i] + row[i + 1]);
  }
  return pairs_fit(most) && tail <= 255;
}

// acc[r][v] += a[r, 4g..4g+3] . w[g][8v..8v+7][0..3] over `groups` k groups.
// `b` points at the tile's first column inside a panel (group stride kInt8PanelGroupBytes).
// kSigned: s (stride lda like a) holds each activation's sign byte, xor-ed into its weights.
template <size_t MR, size_t V, bool kSplit, bool kSigned, bool kTwoStreams>
PQ_INLINE void accumulate(const uint8_t* a, const uint8_t* s, size_t lda, const int8_t* b,
                          size_t groups, __m256i (&acc)[MR][V]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i twos = _mm256_set1_epi16(2);
  const __m256i low7 = _mm256_set1_epi8(0x7f);
  const __m256i bit0 = _mm256_set1_epi8(0x01);
  // No software prefetch: the hardware prefetcher follows the weight streams; prefetching every
  // line 2 KiB ahead made the decode GEMV 7-20% slower on Zen 4's AVX2 tier (1 x 5632 x 2048
  // from DRAM 438-463 -> 387-397 us) and M = 32-256 2% slower.
  auto step = [&](size_t g) __attribute__((always_inline)) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    __m256i w[V];
#pragma GCC unroll 8
    for (size_t v = 0; v < V; ++v)
      w[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + v * 32));
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi32(load_i32(a + r * lda + g * 4));
      const __m256i sv = kSigned ? _mm256_set1_epi32(load_i32(s + r * lda + g * 4))
                                 : _mm256_setzero_si256();
      if (!kSplit) {
#pragma GCC unroll 8
        for (size_t v = 0; v < V; ++v) {
          const __m256i wv = kSigned ? _mm256_xor_si256(w[v], sv) : w[v];
          acc[r][v] = _mm256_add_epi32(acc[r][v], widen(_mm256_maddubs_epi16(av, wv), ones));
        }
      } else {
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(av, 1), low7);
        const __m256i lo = _mm256_and_si256(av, bit0);
#pragma GCC unroll 8
        for (size_t v = 0; v < V; ++v) {
          const __m256i wv = kSigned ? _mm256_xor_si256(w[v], sv) : w[v];
          acc[r][v] = _mm256_add_epi32(acc[r][v], widen(_mm256_maddubs_epi16(hi, wv), twos));
          acc[r][v] = _mm256_add_epi32(acc[r][v], widen(_mm256_maddubs_epi16(lo, wv), ones));
        }
      }
    }
  };
  if (kTwoStreams) {
    // One row: the block read as two streams (its K halves) into the same sums; from DRAM
    // faster than one stream (docs/notes/int8_gemm.md, 23rd session).
    const size_t half = groups / 2;
    for (size_t g = 0; g < half; ++g) {
      step(g);
      step(half + g);
    }
    if (groups % 2) step(groups - 1);
  } else {
    for (size_t g = 0; g < groups; ++g) step(g);
  }
}

// One micro-tile: rows [0, MR) x columns [0, nc) (nc <= 8V) of the output for one K block.
// The first K block starts from the column bias (or zero) and, for signed rows, the row bias
// (row_bias[r]); later blocks add to C. two_streams: a block streamed from memory (M = 1), read
// as two streams; else the block is in L2 and one stream keeps every accumulator in a register
// (the two interleaved steps spilled three to four of them).
// pair_safe: the caller knows the rows' pairs fit (Int8GemmProblem::pair_safe).
template <size_t MR, size_t V, bool kSigned = false>
void tile(const uint8_t* a, const uint8_t* s, size_t lda, const int8_t* b, size_t groups,
          int32_t* c, size_t ldc, size_t nc, const int32_t* bias, const int32_t* row_bias,
          bool accumulate_c, bool two_streams, bool pair_safe) {
  __m256i acc[MR][V];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (size_t v = 0; v < V; ++v)
      acc[r][v] = kSigned && !accumulate_c ? _mm256_set1_epi32(row_bias[r])
                                           : _mm256_setzero_si256();

  const bool fast = pair_safe || rows_pair_safe(a, lda, MR, groups * kInt8GroupK);
  if (fast && two_streams)
    accumulate<MR, V, false, kSigned, true>(a, s, lda, b, groups, acc);
  else if (fast)
    accumulate<MR, V, false, kSigned, false>(a, s, lda, b, groups, acc);
  else if (two_streams)
    accumulate<MR, V, true, kSigned, true>(a, s, lda, b, groups, acc);
  else
    accumulate<MR, V, true, kSigned, false>(a, s, lda, b, groups, acc);

  alignas(32) int32_t sums[MR * V * kVecCols];
  for (size_t r = 0; r < MR; ++r)
    for (size_t v = 0; v < V; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums + (r * V + v) * kVecCols), acc[r][v]);
  store_tile_rows(sums, V * kVecCols, MR, c, ldc, nc, bias, accumulate_c);
}

// Small M (2 .. kStreamRowsMax rows), where the weights come from memory. Row at a time (the
// 1x64 tile), the first row's pass over a K block waits on the stream and the other rows compute
// after it: time = stream + (M - 1) rows. Here every row computes while the panel streams in:
// the panel is walked in chunks of kChunkGroups k groups (4 KiB, held in L1), and each chunk is
// finished for all rows before the next: four 16-column strips x register tiles of up to 4 rows
// (8 accumulators + 2 weight vectors: the 1x64 tile's multiply count per product). Between
// chunks the accumulators wait in a [rows][64] int32 buffer (16 loads + stores per 16 k groups).
// Each chunk's activations are first copied to a buffer with a row stride that is not a multiple
// of 4 KiB: read in place (K = 4096 makes the stride 4 KiB) the rows' lines share one L1 set and
// from 8 rows on evict each other. The copy also checks the pair sums: which rows take the split
// route.
// Prefetch: every call prefetches the next chunk into L1 and, below kFarBelowRows rows (too
// little compute per chunk to cover DRAM latency), also into L2 kFarChunks chunks beyond it. The
// hardware prefetcher alone falls behind the chunk's four strided strip walks: on an Intel Xeon
// (Golden Cove, 47th session) 2-6 rows ran 1.1-1.5x slower than 8; on Zen 4 (48th session) with
// the weights in 2 MiB pages (QuantLinear's buffers) 2-6 rows took 1.5-1.9x their time from 4 KiB
// pages (the 8th session's policy, no prefetch below 8 rows, was measured on 4 KiB pages only).
// kFarBelowRows per vendor's entry: Intel's as measured there (4: far from 4 rows on not timed),
// Zen 4's every row count (at 4-8 rows 1.1-2.1x faster than the next chunk alone, 2 MiB pages).
constexpr size_t kStreamRowsMax = 16;
constexpr size_t kFarBelowRowsIntel = 4;
constexpr size_t kFarBelowRowsZen = kStreamRowsMax + 1;
constexpr size_t kChunkGroups = 16;
constexpr size_t kChunkBytes = kChunkGroups * kInt8GroupK;  // activation bytes per row per chunk
constexpr size_t kChunkPanelBytes = kChunkGroups * kInt8PanelGroupBytes;  // weights per chunk
constexpr size_t kCopyStride = kChunkBytes + 64;            // + one line: the rows' sets differ
constexpr size_t kStripCols = 16;
constexpr size_t kFarChunks = 8;  // 36 KiB ahead of the chunk computed (4: 2% slower at 2 rows)

// acc[r][0..15] += a[r, 4g..4g+3] . w[g][16 strip columns][4 k], rows r < MR (stride
// kCopyStride), over `groups` k groups; acc rows are kInt8PanelCols apart.
// Out of line: inlined into the chunk loop, GCC kept every variant's constants live there and
// spilled an accumulator of the 4-row tile to the stack.
// kSigned: s holds the rows' sign bytes (same stride), xor-ed into the weights.
template <size_t MR, bool kSplit, bool kSigned>
[[gnu::noinline]] void strip_tile(const uint8_t* a, const uint8_t* s, const int8_t* b,
                                  size_t groups, int32_t* acc_rows) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i twos = _mm256_set1_epi16(2);
  const __m256i low7 = _mm256_set1_epi8(0x7f);
  const __m256i bit0 = _mm256_set1_epi8(0x01);
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (size_t v = 0; v < 2; ++v)
      acc[r][v] = _mm256_load_si256(
          reinterpret_cast<const __m256i*>(acc_rows + r * kInt8PanelCols + v * kVecCols));
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + 32));
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi32(load_i32(a + r * kCopyStride + g * kInt8GroupK));
      __m256i x0 = w0, x1 = w1;
      if (kSigned) {
        const __m256i sv = _mm256_set1_epi32(load_i32(s + r * kCopyStride + g * kInt8GroupK));
        x0 = _mm256_xor_si256(w0, sv);
        x1 = _mm256_xor_si256(w1, sv);
      }
      if (!kSplit) {
        acc[r][0] = _mm256_add_epi32(acc[r][0], widen(_mm256_maddubs_epi16(av, x0), ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1], widen(_mm256_maddubs_epi16(av, x1), ones));
      } else {
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(av, 1), low7);
        const __m256i lo = _mm256_and_si256(av, bit0);
        acc[r][0] = _mm256_add_epi32(acc[r][0], widen(_mm256_maddubs_epi16(hi, x0), twos));
        acc[r][0] = _mm256_add_epi32(acc[r][0], widen(_mm256_maddubs_epi16(lo, x0), ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1], widen(_mm256_maddubs_epi16(hi, x1), twos));
        acc[r][1] = _mm256_add_epi32(acc[r][1], widen(_mm256_maddubs_epi16(lo, x1), ones));
      }
    }
  }
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (size_t v = 0; v < 2; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc_rows + r * kInt8PanelCols + v * kVecCols),
                         acc[r][v]);
}

// Copies `len` (<= kChunkBytes) bytes of a row (its sign bytes), zero-filled to kChunkBytes.
PQ_INLINE void copy_chunk_bytes(const uint8_t* src, size_t len, uint8_t* dst) {
  if (len == kChunkBytes) {
    std::memcpy(dst, src, kChunkBytes);
  } else {
    std::memcpy(dst, src, len);
    std::memset(dst + len, 0, kChunkBytes - len);
  }
}

// Copies `len` (<= kChunkBytes) bytes of a row, zero-filled to kChunkBytes; true if its pairs
// each sum to at most 255 (the fast route is exact).
PQ_INLINE bool copy_chunk_row(const uint8_t* src, size_t len, uint8_t* dst) {
  __m256i v[2];
  if (len == kChunkBytes) {
    v[0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    v[1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
  } else {
    alignas(32) uint8_t part[kChunkBytes] = {};
    std::memcpy(part, src, len);
    v[0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part));
    v[1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part + 32));
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(dst), v[0]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 32), v[1]);
  // (7-bit rows, the common case, by the cheaper test: the pair sums cost the strip schedule 2%)
  if (_mm256_movemask_epi8(_mm256_or_si256(v[0], v[1])) == 0) return true;
  return pairs_fit(_mm256_max_epu16(pair_sums(v[0]), pair_sums(v[1])));
}

// Rows [m0, m1) (2 .. kStreamRowsMax of them) x one panel over the whole K. kSigned: the rows'
// sign bytes (p.a_low) are copied beside them and the sums start from p.row_bias.
template <size_t kFarBelowRows, bool kSigned>
void stream_rows_panel(const Int8GemmProblem& p, const uint8_t* a, size_t m0, size_t m1,
                       size_t panel) {
  static_assert(kChunkBytes == 64, "copy_chunk_row moves two ymm per row");
  const size_t rows = m1 - m0;
  alignas(32) int32_t acc[kStreamRowsMax * kInt8PanelCols];
  for (size_t r = 0; r < rows; ++r)
    std::fill(acc + r * kInt8PanelCols, acc + (r + 1) * kInt8PanelCols,
              kSigned ? p.row_bias[m0 + r] : 0);
  alignas(32) uint8_t rows_copy[kStreamRowsMax * kCopyStride];
  alignas(32) uint8_t signs_copy[kSigned ? kStreamRowsMax * kCopyStride : 1];
  const int8_t* panel_b = p.panels + panel * p.k_groups * kInt8PanelGroupBytes;
  const size_t col0 = panel * kInt8PanelCols;
  const size_t nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
  // a narrow panel (a 16- or 32-channel layer) runs only the strips it has: all four cost a
  // 64 -> 32 3x3 conv at 224x224 1.8x fp32's time
  const size_t strips = div_round_up(nc, kStripCols);
  // k groups from this panel's start to the weights' end (the next panels' chunks follow this
  // panel's): the prefetches stay inside the weights
  const size_t weights_left = p.k_groups * (div_round_up(p.n, kInt8PanelCols) - panel);
  for (size_t kc = 0; kc < p.k_groups; kc += kChunkGroups) {
    const size_t groups = std::min(kChunkGroups, p.k_groups - kc);
    const int8_t* b = panel_b + kc * kInt8PanelGroupBytes;
    bool small[kStreamRowsMax];  // the row's pairs fit the fast route
    for (size_t r = 0; r < rows; ++r) {
      const size_t at = (m0 + r) * p.lda + kc * kInt8GroupK;
      small[r] = copy_chunk_row(a + at, groups * kInt8GroupK, rows_copy + r * kCopyStride);
      if (kSigned)
        copy_chunk_bytes(p.a_low + at, groups * kInt8GroupK, signs_copy + r * kCopyStride);
    }
    const size_t to_end = weights_left - kc;
    const bool prefetch = to_end >= 2 * kChunkGroups;
    const bool far = rows < kFarBelowRows && to_end >= (kFarChunks + 2) * kChunkGroups;
    for (size_t s = 0; s < strips * kStripCols; s += kStripCols) {
      if (prefetch) {  // this strip's share of the next chunk's lines
        const size_t share = kChunkPanelBytes / strips;
        const char* next =
            reinterpret_cast<const char*>(b) + kChunkPanelBytes + s / kStripCols * share;
        for (size_t line = 0; line < share; line += 64) {
          if (far) _mm_prefetch(next + kFarChunks * kChunkPanelBytes + line, _MM_HINT_T1);
          _mm_prefetch(next + line, _MM_HINT_T0);
        }
      }
      const int8_t* bs = b + s * kInt8GroupK;
      for (size_t r0 = 0; r0 < rows;) {
        const uint8_t* ar = rows_copy + r0 * kCopyStride;
        const uint8_t* sr = kSigned ? signs_copy + r0 * kCopyStride : nullptr;
        int32_t* acc_r = acc + r0 * kInt8PanelCols + s;
        const size_t left = rows - r0;
        if (left >= 4 && small[r0] && small[r0 + 1] && small[r0 + 2] && small[r0 + 3]) {
          strip_tile<4, false, kSigned>(ar, sr, bs, groups, acc_r);
          r0 += 4;
        } else if (left >= 2) {  // split-route rows go two at a time (registers)
          if (small[r0] && small[r0 + 1])
            strip_tile<2, false, kSigned>(ar, sr, bs, groups, acc_r);
          else
            strip_tile<2, true, kSigned>(ar, sr, bs, groups, acc_r);
          r0 += 2;
        } else {
          if (small[r0])
            strip_tile<1, false, kSigned>(ar, sr, bs, groups, acc_r);
          else
            strip_tile<1, true, kSigned>(ar, sr, bs, groups, acc_r);
          r0 += 1;
        }
      }
    }
  }
  store_tile_rows(acc, kInt8PanelCols, rows, p.c + m0 * p.ldc + col0, p.ldc, nc,
                  p.col_bias ? p.col_bias + col0 : nullptr, false);
}

// The 9-bit rows of compute_wide: u = 4 * hi + lo with hi = a[k] <= 127 and lo = a_low[k] <= 3,
// one row x the panel. Both are vpmaddubsw's unsigned operand (pair sums within 127 * 128 * 2),
// widened by 4 and by 1: the split route's cost, for values the split route cannot hold.
// Kept apart from `accumulate` so the unsigned loops compile exactly as before.
PQ_INLINE void accumulate_wide(const uint8_t* hi, const uint8_t* lo, const int8_t* b,
                               size_t groups, __m256i (&acc)[kV]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i fours = _mm256_set1_epi16(4);
  for (size_t g = 0; g < groups; ++g) {
    const int8_t* bg = b + g * kInt8PanelGroupBytes;
    for (size_t line = 0; line < kInt8PanelGroupBytes; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(bg) + kPrefetchBytes + line, _MM_HINT_T0);
    const __m256i ah = _mm256_set1_epi32(load_i32(hi + g * 4));
    const __m256i al = _mm256_set1_epi32(load_i32(lo + g * 4));
#pragma GCC unroll 8
    for (size_t v = 0; v < kV; ++v) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + v * 32));
      acc[v] = _mm256_add_epi32(acc[v], widen(_mm256_maddubs_epi16(ah, w), fours));
      acc[v] = _mm256_add_epi32(acc[v], widen(_mm256_maddubs_epi16(al, w), ones));
    }
  }
}

// tile<1, kV> for a 9-bit row: the same C update (bias or accumulate), 64 columns masked to nc.
void tile_wide(const uint8_t* hi, const uint8_t* lo, const int8_t* b, size_t groups, int32_t* c,
               size_t nc, const int32_t* bias, bool accumulate_c) {
  __m256i acc[kV];
  for (size_t v = 0; v < kV; ++v) acc[v] = _mm256_setzero_si256();
  accumulate_wide(hi, lo, b, groups, acc);
  alignas(32) int32_t sums[kV * kVecCols];
  for (size_t v = 0; v < kV; ++v)
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + v * kVecCols), acc[v]);
  store_tile_rows(sums, kV * kVecCols, 1, c, 0, nc, bias, accumulate_c);
}

// The shared loop order: panels, then K blocks (M = 1 streams the panel once, K unblocked; more
// rows reuse each K block from L2), then rows. row_tile(m, at, b, groups, c, nc, bias,
// accumulate) runs row m: `at` is its offset into the activations at this K block.
template <class RowTile>
void for_each_row_block(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1,
                        RowTile&& row_tile) {
  for (size_t panel = p0; panel < p1; ++panel) {
    const size_t col0 = panel * kInt8PanelCols;
    const size_t nc = p.n - col0 < kInt8PanelCols ? p.n - col0 : kInt8PanelCols;
    const int32_t* bias = p.col_bias ? p.col_bias + col0 : nullptr;
    const size_t block = m1 - m0 == 1 ? p.k_groups : kBlockGroups;
    for (size_t kb = 0; kb < p.k_groups; kb += block) {
      const size_t groups = p.k_groups - kb < block ? p.k_groups - kb : block;
      const int8_t* b = p.panels + (panel * p.k_groups + kb) * kInt8PanelGroupBytes;
      for (size_t m = m0; m < m1; ++m)
        row_tile(m, m * p.lda + kb * kInt8GroupK, b, groups, p.c + m * p.ldc + col0, nc, bias,
                 kb > 0);
    }
  }
}

// int8_compute_avx2 (kSigned: int8_compute_sign_avx2).
template <bool kSigned>
void compute_rows(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const uint8_t* s = kSigned ? p.a_low : nullptr;
  if (m1 - m0 >= 2 && m1 - m0 <= kStreamRowsMax) {
    for (size_t panel = p0; panel < p1; ++panel)
      stream_rows_panel<kFarBelowRowsZen, kSigned>(p, a, m0, m1, panel);
    return;
  }
  // a narrow panel (the last of a narrow layer, e.g. a 16-channel conv) computes only the
  // 8-column vectors in use: the 1x64 tile would multiply 4x the columns at N = 16
  for_each_row_block(
      p, m0, m1, p0, p1,
      [&](size_t m, size_t at, const int8_t* b, size_t groups, int32_t* c, size_t nc,
          const int32_t* bias, bool accumulate_c) {
        const uint8_t* sa = kSigned ? s + at : nullptr;
        const int32_t* rb = kSigned ? p.row_bias + m : nullptr;
        const bool two = m1 - m0 == 1;  // (for_each_row_block: the whole K, from memory)
        if (nc <= 16)
          tile<1, 2, kSigned>(a + at, sa, p.lda, b, groups, c, p.ldc, nc, bias, rb, accumulate_c,
                              two, p.pair_safe);
        else if (nc <= 32)
          tile<1, 4, kSigned>(a + at, sa, p.lda, b, groups, c, p.ldc, nc, bias, rb, accumulate_c,
                              two, p.pair_safe);
        else
          tile<1, kV, kSigned>(a + at, sa, p.lda, b, groups, c, p.ldc, nc, bias, rb,
                               accumulate_c, two, p.pair_safe);
      });
}

// int8_compute_avx2_strips (kSigned: int8_compute_sign_avx2_strips).
template <bool kSigned>
void compute_strips(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  if (m1 - m0 < 2) return compute_rows<kSigned>(p, m0, m1, p0, p1);
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const size_t rows = m1 - m0, blocks = div_round_up(rows, kStreamRowsMax);  // even, >= 2 rows
  for (size_t panel = p0; panel < p1; ++panel)
    for (size_t i = 0; i < blocks; ++i)
      stream_rows_panel<kFarBelowRowsIntel, kSigned>(p, a, m0 + rows * i / blocks,
                                                     m0 + rows * (i + 1) / blocks, panel);
}

}  // namespace

void int8_compute_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  compute_rows<false>(p, m0, m1, p0, p1);
}

void int8_compute_sign_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  compute_rows<true>(p, m0, m1, p0, p1);
}

// The same kernel with M > 16 in blocks of 16 rows through the strip schedule (stream_rows_panel:
// 4-row register tiles over L1 chunks, each weight vector loaded once per 4 rows). On an Intel
// Xeon (Golden Cove cores) the 1x64 row tile, which reloads 256 bytes of weights from L2 per k
// group per row, ran 0.68-0.93x fbgemm at 64-256 x 4096 x 4096 and this 0.98-1.05x; on Zen 3 the
// row tile was measured the faster one (docs/notes/avx2.md), so each is preferred on its vendor.
void int8_compute_avx2_strips(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                              size_t p1) {
  compute_strips<false>(p, m0, m1, p0, p1);
}

void int8_compute_sign_avx2_strips(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                   size_t p1) {
  compute_strips<true>(p, m0, m1, p0, p1);
}

// 9-bit rows (p.a = u >> 2, p.a_low = u & 3) in one pass: from kWideTileMinRows rows on the
// vpmaddwd int16 tile (int8_gemm_wide_avx2.cc, half the multiplies), fewer rows (decode, bound
// by the weight stream) the one-row vpmaddubsw tile above.
void int8_compute_wide_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                            size_t p1) {
  if (m1 - m0 >= kWideTileMinRows) {
    for (size_t panel = p0; panel < p1; ++panel) int8_wide_rows_tiled_avx2(p, m0, m1, panel);
    return;
  }
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  for_each_row_block(p, m0, m1, p0, p1,
                     [&](size_t, size_t at, const int8_t* b, size_t groups, int32_t* c, size_t nc,
                         const int32_t* bias, bool accumulate_c) {
                       tile_wide(a + at, p.a_low + at, b, groups, c, nc, bias, accumulate_c);
                     });
}

size_t int8_pair_split_avx2(uint8_t* row, const uint8_t* signs, size_t k_pad,
                            Int8GroupFix* fixes, size_t cap) {
  size_t count = 0;
  auto undo = [&]() {  // the row's bytes were fast + fix, each <= 255: no carry between bytes
    for (size_t f = 0; f < count; ++f) {
      uint8_t* at = row + (fixes[f].group & ~kFixNegative) * kInt8GroupK;
      uint32_t d;
      std::memcpy(&d, at, 4);
      d += fixes[f].bytes;
      std::memcpy(at, &d, 4);
    }
    return SIZE_MAX;
  };
  // Writes the fixes of k group g with excess bytes `fix` (at bytes 0 and 2) to out: one, or
  // with signs one per sign present. Returns how many.
  auto group_fixes = [&](uint32_t g, uint32_t fix, Int8GroupFix* out) -> size_t {
    if (!signs) {
      out[0] = {g, fix};
      return 1;
    }
    const uint32_t neg = (signs[g * kInt8GroupK] ? 0x000000ffu : 0u) |
                         (signs[g * kInt8GroupK + 2] ? 0x00ff0000u : 0u);
    size_t got = 0;
    if (fix & ~neg) out[got++] = {g, fix & ~neg};
    if (fix & neg) out[got++] = {g | kFixNegative, fix & neg};
    return got;
  };
  const __m256i c255 = _mm256_set1_epi16(255);
  size_t i = 0;
  for (; i + 32 <= k_pad; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
    // excess of each pair over 255, in the pair's low (even) byte: dword j = group i/4 + j's fix
    const __m256i over = _mm256_subs_epu16(pair_sums(v), c255);
    if (_mm256_testz_si256(over, over)) continue;
    unsigned mask = ~static_cast<unsigned>(_mm256_movemask_ps(
                        _mm256_castsi256_ps(_mm256_cmpeq_epi32(over, _mm256_setzero_si256())))) &
                    0xffu;
    alignas(32) uint32_t d[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(d), over);
    Int8GroupFix found[16];
    size_t got = 0;
    for (; mask; mask &= mask - 1) {
      const unsigned j = static_cast<unsigned>(__builtin_ctz(mask));
      got += group_fixes(static_cast<uint32_t>(i / kInt8GroupK + j), d[j], found + got);
    }
    if (count + got > cap) return undo();
    std::copy(found, found + got, fixes + count);
    count += got;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + i), _mm256_sub_epi16(v, over));
  }
  for (; i < k_pad; i += kInt8GroupK) {  // k_pad is a multiple of 4
    uint32_t fix = 0;
    for (size_t e = 0; e < kInt8GroupK; e += 2) {
      const unsigned sum = static_cast<unsigned>(row[i + e] + row[i + e + 1]);
      if (sum > 255) fix |= (sum - 255u) << (8 * e);
    }
    if (!fix) continue;
    Int8GroupFix found[2];
    const size_t got = group_fixes(static_cast<uint32_t>(i / kInt8GroupK), fix, found);
    if (count + got > cap) return undo();
    std::copy(found, found + got, fixes + count);
    count += got;
    for (size_t e = 0; e < kInt8GroupK; e += 2) row[i + e] -= static_cast<uint8_t>(fix >> (8 * e));
  }
  return count;
}

void int8_add_fixes_avx2(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                         int32_t* c, size_t nc) {
  if (count == 0) return;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kV];
  for (size_t v = 0; v < kV; ++v) acc[v] = _mm256_setzero_si256();
  for (size_t f = 0; f < count; ++f) {  // (pair sums a * w with one a zero: within int16)
    const __m256i av = _mm256_set1_epi32(static_cast<int>(fixes[f].bytes));
    // negative fixes: widened by -1
    const __m256i mult = fixes[f].group & kFixNegative ? _mm256_set1_epi16(-1) : ones;
    const int8_t* bg = panel_b + (fixes[f].group & ~kFixNegative) * kInt8PanelGroupBytes;
#pragma GCC unroll 8
    for (size_t v = 0; v < kV; ++v)
      acc[v] = _mm256_add_epi32(
          acc[v], widen(_mm256_maddubs_epi16(
                            av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + v * 32))),
                        mult));
  }
  for (size_t v = 0; v * kVecCols < nc; ++v)
    store8_plus(c + v * kVecCols, c + v * kVecCols, acc[v], nc - v * kVecCols);
}

}  // namespace pq
