// Pair-table kernel, AVX2 ("pair"): a 16-entry table indexed by TWO weight codes, so each
// vpshufb yields 32 lanes x 2 products (DeepGEMM: x 1, plus an index OR per lookup).
//
// For activations (a0, a1) at k, k+1 the table T[w0 << 2 | w1] = p[a0][w0] + p[a1][w1] - 2 pmin
// (biased to [0, 2 (pmax - pmin)]). It depends only on the activation pair, so every possible
// table is constant per codebook: 256 entries of 32 bytes, one per activation quad (4 codes =
// 1 byte), lane 0 = the table of k 4g, 4g+1, lane 1 = that of 4g+2, 4g+3 (lut_pair_tables).
// The packed byte of group g already holds the weight index of the first pair in its low nibble
// (w[4g] << 2 | w[4g+1]) and of the second in its high nibble, so a per-call unpack turns a
// K-block of the panel into "index vectors": 16 columns, lane 0 = low nibbles, lane 1 = high.
// The inner step is then, per row and 16 columns: vpshufb (index as a memory operand) + vpaddb.
//
// Tile: 1 row x 64 columns (4 uint8 + 8 uint16 accumulators, all in registers); the rows of a
// call each make one pass over a K-block of 512 k (16 KiB of index vectors, L1-resident). uint8
// lanes sum LutCodebook::pair_lookups lookups (floor(255 / (2 (pmax - pmin)))), then widen into
// uint16 (whole words + odd bytes), which go to int32 after at most 256 widenings. Both 128-bit
// lanes of an accumulator hold the same 16 columns (different k pairs); they are added at the
// int32 flush. The bias comes back as the driver's constant correction K_pad * pmin.
// Exact for every codebook whose product range pmax - pmin is <= 127 (lut_pair_ok).
#include <immintrin.h>

#include <cstring>

#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

constexpr size_t kBlockGroups = 128;  // groups (4 k) per unpacked K-block: 16 KiB, stays in L1
constexpr size_t kRowChunk = 256;     // rows per pass over the K-blocks (64 KiB of int32 sums)

// Panel groups [0, ng) (64 bytes each) -> index vectors scr[g][4 column blocks][32 bytes].
void unpack(const uint8_t* wp, size_t ng, uint8_t* scr) {
  const __m256i m0f = _mm256_set1_epi8(0x0F);
  for (size_t g = 0; g < ng; ++g)
    for (int h = 0; h < 2; ++h) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 64 + 32 * h));
      const __m256i lo = _mm256_and_si256(x, m0f);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f);
      __m256i* d = reinterpret_cast<__m256i*>(scr + (g * 4 + 2 * h) * 32);
      _mm256_store_si256(d, _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_store_si256(d + 1, _mm256_permute2x128_si256(lo, hi, 0x31));
    }
}

// uint16 sums (words = even + 256 * odd, odd bytes) of one accumulator -> 16 int32 columns.
inline void flush16(__m256i w, __m256i o, int32_t* acc) {
  const __m256i e = _mm256_sub_epi16(w, _mm256_slli_epi16(o, 8));
  // word i of a lane = columns 2i (e) and 2i+1 (o): interleave back to column order per lane
  const __m256i lo = _mm256_unpacklo_epi16(e, o);  // columns 0..7 of each lane
  const __m256i hi = _mm256_unpackhi_epi16(e, o);  // columns 8..15
  const __m256i z = _mm256_setzero_si256();
  const __m256i lo32a = _mm256_unpacklo_epi16(lo, z), lo32b = _mm256_unpackhi_epi16(lo, z);
  const __m256i hi32a = _mm256_unpacklo_epi16(hi, z), hi32b = _mm256_unpackhi_epi16(hi, z);
  // lo32a = columns 0..3, lo32b = 4..7, hi32a = 8..11, hi32b = 12..15 (per lane); the two
  // lanes are the same columns (different k pairs): add them
  const __m256i c07 = _mm256_add_epi32(_mm256_permute2x128_si256(lo32a, lo32b, 0x20),
                                       _mm256_permute2x128_si256(lo32a, lo32b, 0x31));
  const __m256i c815 = _mm256_add_epi32(_mm256_permute2x128_si256(hi32a, hi32b, 0x20),
                                        _mm256_permute2x128_si256(hi32a, hi32b, 0x31));
  __m256i* d = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(d, _mm256_add_epi32(_mm256_loadu_si256(d), c07));
  _mm256_storeu_si256(d + 1, _mm256_add_epi32(_mm256_loadu_si256(d + 1), c815));
}

// Groups [0, n) of a 1-row x 64-column tile, n >= 1: per group one table load (the row's
// offset into the table set), then 4 x (vpshufb with the index vector as a memory operand,
// vpaddb). The loop is asm, two groups per iteration: from intrinsics GCC either spills the
// accumulators or adds register moves, and the core's 6-wide dispatch is the limit here
// (about 11 instructions per 4 lookups).
#define PQ_PAIR_GROUP(o)                                        \
  "movzwl " #o "*2(%[ar]), %k[off]\n\t"                        \
  "vmovdqa (%[tab],%[off]), %[t]\n\t"                           \
  "vpshufb " #o "*128(%[x]), %[t], %[s]\n\t"                   \
  "vpaddb %[s], %[v0], %[v0]\n\t"                               \
  "vpshufb " #o "*128+32(%[x]), %[t], %[s]\n\t"                \
  "vpaddb %[s], %[v1], %[v1]\n\t"                               \
  "vpshufb " #o "*128+64(%[x]), %[t], %[s]\n\t"                \
  "vpaddb %[s], %[v2], %[v2]\n\t"                               \
  "vpshufb " #o "*128+96(%[x]), %[t], %[s]\n\t"                \
  "vpaddb %[s], %[v3], %[v3]\n\t"

inline void groups(__m256i& v0, __m256i& v1, __m256i& v2, __m256i& v3, const uint8_t* tables,
                   const uint16_t* ar, const uint8_t* x, size_t n) {
  __m256i t, s;
  size_t off;
  __asm__ volatile(
      "test $1, %[n]\n\t"
      "jz 1f\n\t"
      PQ_PAIR_GROUP(0)
      "add $2, %[ar]\n\t"
      "sub $-128, %[x]\n\t"
      "1:\n\t"
      "shr $1, %[n]\n\t"
      "jz 3f\n\t"
      "2:\n\t"
      PQ_PAIR_GROUP(0)
      PQ_PAIR_GROUP(1)
      "add $4, %[ar]\n\t"
      "add $256, %[x]\n\t"
      "dec %[n]\n\t"
      "jnz 2b\n\t"
      "3:"
      : [v0] "+x"(v0), [v1] "+x"(v1), [v2] "+x"(v2), [v3] "+x"(v3), [t] "=&x"(t), [s] "=&x"(s),
        [off] "=&r"(off), [ar] "+r"(ar), [x] "+r"(x), [n] "+r"(n)
      : [tab] "r"(tables)
      : "memory", "cc");
}
#undef PQ_PAIR_GROUP

// uint8 lanes -> uint16 accumulators: whole words (even + 256 * odd, mod 2^16) and odd bytes.
inline void widen(__m256i& v, __m256i& words, __m256i& odd) {
  words = _mm256_add_epi16(words, v);
  odd = _mm256_add_epi16(odd, _mm256_srli_epi16(v, 8));
  v = _mm256_setzero_si256();
}

// One row x 64 columns over groups [0, ng) of the unpacked block; adds into acc (int32 x 64).
void tile(const uint8_t* scr, size_t ng, const uint16_t* ar, const uint8_t* tables, size_t gpw,
          int32_t* acc) {
  const __m256i z = _mm256_setzero_si256();
  __m256i v0 = z, v1 = z, v2 = z, v3 = z;
  __m256i w0 = z, w1 = z, w2 = z, w3 = z, o0 = z, o1 = z, o2 = z, o3 = z;
  size_t widenings = 0;
  for (size_t g0 = 0; g0 < ng; g0 += gpw) {
    const size_t g1 = g0 + gpw < ng ? g0 + gpw : ng;
    groups(v0, v1, v2, v3, tables, ar + g0, scr + g0 * 128, g1 - g0);
    widen(v0, w0, o0);
    widen(v1, w1, o1);
    widen(v2, w2, o2);
    widen(v3, w3, o3);
    if (++widenings == 256 || g1 == ng) {  // 256 widenings of <= 255 fit uint16
      flush16(w0, o0, acc);
      flush16(w1, o1, acc + 16);
      flush16(w2, o2, acc + 32);
      flush16(w3, o3, acc + 48);
      w0 = w1 = w2 = w3 = o0 = o1 = o2 = o3 = z;
      widenings = 0;
    }
  }
}

// A lone row (GEMV) or two: the unpack would cost as much as the row itself, so the index
// vectors are made in registers from the packed bytes instead: per 32 columns, low nibbles
// (pair 4g, 4g+1) and high nibbles (4g+2, 4g+3) in natural column order, each looked up in its
// own table broadcast to both lanes (vbroadcasti128 of lane 0 / lane 1 of the quad's entry).
// The two pairs' uint8 sums are added as uint16 words at the widening.
void single_row(const uint8_t* wp, size_t groups, const uint16_t* ar, const uint8_t* tables,
                size_t gpw, int32_t* acc) {
  const __m256i z = _mm256_setzero_si256(), m0f = _mm256_set1_epi8(0x0F);
  __m256i w0 = z, w1 = z, o0 = z, o1 = z;  // uint16: columns 0..31, 32..63
  size_t widenings = 0;
  auto flush = [&](__m256i w, __m256i o, int32_t* d) {  // natural order: even/odd columns
    const __m256i e = _mm256_sub_epi16(w, _mm256_slli_epi16(o, 8));
    const __m256i lo = _mm256_unpacklo_epi16(e, o), hi = _mm256_unpackhi_epi16(e, o);
    // lo = columns 0..7 | 16..23, hi = 8..15 | 24..31
    const __m256i c0 = _mm256_permute2x128_si256(lo, hi, 0x20);  // 0..15
    const __m256i c1 = _mm256_permute2x128_si256(lo, hi, 0x31);  // 16..31
    __m256i* dv = reinterpret_cast<__m256i*>(d);
    const __m256i parts[4] = {
        _mm256_cvtepu16_epi32(_mm256_castsi256_si128(c0)), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(c0, 1)),
        _mm256_cvtepu16_epi32(_mm256_castsi256_si128(c1)), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(c1, 1))};
    for (int i = 0; i < 4; ++i) _mm256_storeu_si256(dv + i, _mm256_add_epi32(_mm256_loadu_si256(dv + i), parts[i]));
  };
  for (size_t g0 = 0; g0 < groups; g0 += gpw) {
    const size_t g1 = g0 + gpw < groups ? g0 + gpw : groups;
    __m256i a0 = z, b0 = z, a1 = z, b1 = z;
    for (size_t g = g0; g < g1; ++g) {
      const uint8_t* t = tables + ar[g];
      const __m256i ta = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
      const __m256i tb = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t + 16)));
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 64));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 64 + 32));
      a0 = _mm256_add_epi8(a0, _mm256_shuffle_epi8(ta, _mm256_and_si256(x0, m0f)));
      b0 = _mm256_add_epi8(b0, _mm256_shuffle_epi8(tb, _mm256_and_si256(_mm256_srli_epi16(x0, 4), m0f)));
      a1 = _mm256_add_epi8(a1, _mm256_shuffle_epi8(ta, _mm256_and_si256(x1, m0f)));
      b1 = _mm256_add_epi8(b1, _mm256_shuffle_epi8(tb, _mm256_and_si256(_mm256_srli_epi16(x1, 4), m0f)));
    }
    w0 = _mm256_add_epi16(w0, _mm256_add_epi16(a0, b0));
    o0 = _mm256_add_epi16(o0, _mm256_add_epi16(_mm256_srli_epi16(a0, 8), _mm256_srli_epi16(b0, 8)));
    w1 = _mm256_add_epi16(w1, _mm256_add_epi16(a1, b1));
    o1 = _mm256_add_epi16(o1, _mm256_add_epi16(_mm256_srli_epi16(a1, 8), _mm256_srli_epi16(b1, 8)));
    // each widening adds <= 2 * 255 per uint16 lane: flush after 128
    if (++widenings == 128 || g1 == groups) {
      flush(w0, o0, acc);
      flush(w1, o1, acc + 32);
      w0 = w1 = o0 = o1 = z;
      widenings = 0;
    }
  }
}

}  // namespace

// Activation quads (4 codes c0..c3 at k = 4g..4g+3) -> byte offsets (c0 | c1<<2 | c2<<4 | c3<<6)
// * 32 into the table set, 8 quads per step. Pad codes are 0.
void lut_prepare_pair_avx2(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint16_t* out,
                           size_t m0, size_t m1) {
  const size_t per_row = k_pad / 4, full = k / 32;
  const __m256i m3 = _mm256_set1_epi32(0x03), mc = _mm256_set1_epi32(0x0C);
  const __m256i m30 = _mm256_set1_epi32(0x30), mc0 = _mm256_set1_epi32(0xC0);
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint16_t* d = out + m * per_row;
    for (size_t i = 0; i < full; ++i) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * i));
      __m256i q = _mm256_or_si256(_mm256_and_si256(x, m3), _mm256_and_si256(_mm256_srli_epi32(x, 6), mc));
      q = _mm256_or_si256(q, _mm256_and_si256(_mm256_srli_epi32(x, 12), m30));
      q = _mm256_or_si256(q, _mm256_and_si256(_mm256_srli_epi32(x, 18), mc0));
      q = _mm256_slli_epi32(q, 5);
      // 8 uint32 -> 8 uint16 in order
      const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(q, q), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 8 * i), _mm256_castsi256_si128(p));
    }
    for (size_t g = 8 * full; g < per_row; ++g) {
      uint8_t c[4] = {0, 0, 0, 0};
      for (size_t j = 0; j < 4 && 4 * g + j < k; ++j) c[j] = src[4 * g + j];
      d[g] = static_cast<uint16_t>((c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6) << 5);
    }
  }
}

void lut_pair_avx2(const LutProblem& p, size_t m0, size_t m1, size_t panel) {
  const size_t groups = p.k_pad / 4;
  const uint8_t* wp = p.panels + panel * groups * kLutPanelCols;
  const size_t col0 = panel * kLutPanelCols;
  const size_t cols = p.n - col0 < kLutPanelCols ? p.n - col0 : kLutPanelCols;
  const size_t gpw = static_cast<size_t>(p.cb->pair_lookups);
  // int32 sums of up to kRowChunk rows, and the index vectors of one K-block
  // (plain arrays: a std::vector instantiated in this AVX2 file would be a weak symbol the
  // linker may share with baseline code)
  alignas(64) thread_local int32_t acc[kRowChunk * 64];
  alignas(64) thread_local uint8_t scr[kBlockGroups * 128];
  for (size_t c0 = m0; c0 < m1; c0 += kRowChunk) {
    const size_t c1 = m1 - c0 < kRowChunk ? m1 : c0 + kRowChunk, rows = c1 - c0;
    std::memset(acc, 0, rows * 64 * sizeof(int32_t));
    if (rows <= 2) {  // index vectors in registers (measured: equal at 2 rows, 1.7x at 1)
      for (size_t m = c0; m < c1; ++m)
        single_row(wp, groups, p.a_offs + m * groups, p.tables, gpw, acc + (m - c0) * 64);
    } else {
      for (size_t g0 = 0; g0 < groups; g0 += kBlockGroups) {
        const size_t ng = groups - g0 < kBlockGroups ? groups - g0 : kBlockGroups;
        unpack(wp + g0 * 64, ng, scr);
        for (size_t m = c0; m < c1; ++m)
          tile(scr, ng, p.a_offs + m * groups + g0, p.tables, gpw, acc + (m - c0) * 64);
      }
    }
    for (size_t r = 0; r < rows; ++r) {
      int32_t* out = p.c + (c0 + r) * p.ldc + col0;
      const int32_t* src = acc + r * 64;
      for (size_t c = 0; c < cols; ++c)
        out[c] = static_cast<int32_t>(static_cast<uint32_t>(src[c]) + static_cast<uint32_t>(p.corr));
    }
  }
}

}  // namespace pq
