// AMX path of the grouped low-bit forward (WeightOnlyConfig at M >= 16 on Sapphire Rapids and
// later Xeons): the codes of a 32-column half are unpacked to int8 (u codes 0..2^bits-1) into a
// staging B tile, and tdpbusd multiplies 2 row tiles x 2 column tiles (16 x 16 int32 each) per
// step of S k-groups, S = the largest divisor of the group's k-groups up to 16 (so a step never
// straddles two quantization groups). At each group's end the C tiles are folded into the
// float rows: out = prev + sc[g][j] * float(sum - corr[r][g]) (mul, then add, groups in order;
// prev = 0 on the first group): the bits of every other path. On this CPU the zmm VNNI
// kernel's multiply-accumulates were 2/3 of its W4 forward; here the fold dominates.
// Fewer than 16 rows, the raw (ungrouped) tiles and the decode GEMVs: the AVX-512 VNNI kernels.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/amx_tiles.h"
#include "core/macros.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {
namespace {

using amx::kTileBytes;
using amx::kTileRows;
constexpr size_t kMaxStep = 16;  // k-groups per step at most (64 k: a full tile row)
constexpr size_t kAvx512Rows = 6;

size_t step_groups(size_t group_kgroups) {
  for (size_t s = kMaxStep; s > 1; --s)
    if (group_kgroups % s == 0) return s;
  return 1;
}

// u codes of quarters q0, q0 + 1 (two B tiles: rows = k-groups, 16 columns x 4 k each) for
// k-groups [g0, g0 + count) of the panel at b; rows past count zero.
template <int BITS>
void unpack_half(const uint8_t* b, size_t g0, size_t count, size_t step, size_t q0,
                 int8_t* buf0, int8_t* buf1) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  for (size_t g = 0; g < count; ++g) {
    const uint8_t* bg = b + (g0 + g) * kGroupBytes;
    __m512i lo, hi;
    if constexpr (BITS == 4) {  // quarters 2i, 2i + 1: nibbles of 64-byte block i
      const __m512i v = _mm512_loadu_si512(bg + (q0 / 2) * 64);
      lo = _mm512_and_si512(v, mask);
      hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    } else {  // quarter q: bits 2q of the one 64-byte block
      const __m512i v = _mm512_loadu_si512(bg);
      lo = _mm512_and_si512(_mm512_srli_epi16(v, static_cast<unsigned>(2 * q0)), mask);
      hi = _mm512_and_si512(_mm512_srli_epi16(v, static_cast<unsigned>(2 * q0 + 2)), mask);
    }
    _mm512_store_si512(buf0 + g * kTileBytes, lo);
    _mm512_store_si512(buf1 + g * kTileBytes, hi);
  }
  for (size_t g = count; g < step; ++g) {
    _mm512_store_si512(buf0 + g * kTileBytes, _mm512_setzero_si512());
    _mm512_store_si512(buf1 + g * kTileBytes, _mm512_setzero_si512());
  }
}

// out[r][16 columns at col] = prev + sc * float(tile row r - corr[r]) for r < rows.
void fold_tile(const int32_t* tile, size_t rows, const uint32_t* corr, size_t corr_stride,
               const float* sc, bool first, float* out) {
  const __m512 s = _mm512_loadu_ps(sc);
  for (size_t r = 0; r < rows; ++r) {
    const __m512i cr = _mm512_set1_epi32(static_cast<int>(corr[r * corr_stride]));
    const __m512i v = _mm512_sub_epi32(_mm512_load_si512(tile + r * kTileRows), cr);
    __m512 prod = _mm512_mul_ps(s, _mm512_cvtepi32_ps(v));
    asm("" : "+v"(prod));  // keep mul and add separate even under -ffp-contract=fast
    float* o = out + r * 64;
    const __m512 prev = first ? _mm512_setzero_ps() : _mm512_loadu_ps(o);
    _mm512_storeu_ps(o, _mm512_add_ps(prev, prod));
  }
}

// The B tiles of one group's steps, [step][tile 0/1][S rows][64 bytes], for k-groups [g0, g1).
template <int BITS>
void unpack_group(const uint8_t* b, size_t g0, size_t g1, size_t step, size_t q0, int8_t* buf) {
  for (size_t s = g0, i = 0; s < g1; s += step, ++i) {
    int8_t* dst = buf + i * 2 * step * kTileBytes;
    unpack_half<BITS>(b, s, g1 - s < step ? g1 - s : step, step, q0, dst, dst + step * kTileBytes);
  }
}

template <int BITS>
void grouped_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                 size_t group_kgroups, const uint32_t* corr, size_t n_groups, const float* sc,
                 float* out) {
  const size_t step = step_groups(group_kgroups);
  // B tiles are unpacked one group ahead: a tile load right after the vector stores that wrote
  // its bytes waits for them to reach L1 (15% of a W4 g32 forward stalled there)
  const size_t group_bytes = round_up(group_kgroups, step) * 2 * kTileBytes;
  thread_local std::vector<int8_t> b_store;
  if (b_store.size() < 2 * group_bytes + 64) b_store.resize(2 * group_bytes + 64);
  int8_t* b_buf = reinterpret_cast<int8_t*>(round_up(reinterpret_cast<uintptr_t>(b_store.data()), 64));
  alignas(64) int32_t c_buf[2][4][kTileRows * kTileRows];  // two groups' sums
  alignas(64) uint8_t a_buf[2][kTileRows * kTileBytes];
  amx::configure(step * 4, step);  // A: 16 rows x 4S bytes, B: S rows x 64 bytes
  for (size_t m0 = 0; m0 < mr; m0 += 2 * kTileRows) {
    const size_t rows = mr - m0 < 2 * kTileRows ? mr - m0 : 2 * kTileRows;
    const bool two = rows > kTileRows;
    const size_t rows0 = two ? kTileRows : rows, rows1 = two ? rows - kTileRows : 0;
    const size_t n_tiles = two ? 4 : 2;
    // staging for row tiles under 16 rows: zeroed once here, the first rows overwritten per step
    if (rows0 < kTileRows || (two && rows1 < kTileRows)) std::memset(a_buf, 0, sizeof a_buf);
    for (size_t h = 0; h < 2; ++h) {
      auto fold_group = [&](size_t gi) {
        const float* sg = sc + gi * 64;
        for (size_t t = 0; t < n_tiles; ++t) {
          const size_t rt = t / 2, col = (2 * h + t % 2) * kTileRows;
          const size_t r0 = m0 + rt * kTileRows;
          fold_tile(c_buf[gi % 2][t], rt ? rows1 : rows0, corr + r0 * n_groups + gi, n_groups,
                    sg + col, gi == 0, out + r0 * 64 + col);
        }
      };
      unpack_group<BITS>(b, 0, group_kgroups < kgroups ? group_kgroups : kgroups, step, 2 * h,
                         b_buf);
      for (size_t gi = 0, g0 = 0; g0 < kgroups; ++gi, g0 += group_kgroups) {
        const size_t g1 = g0 + group_kgroups < kgroups ? g0 + group_kgroups : kgroups;
        if (g1 < kgroups)
          unpack_group<BITS>(b, g1, g1 + group_kgroups < kgroups ? g1 + group_kgroups : kgroups,
                             step, 2 * h, b_buf + ((gi + 1) % 2) * group_bytes);
        const int8_t* bg = b_buf + (gi % 2) * group_bytes;
        for (size_t t = 0; t < 4; ++t) amx::zero_c(t);
        for (size_t s = g0, i = 0; s < g1; s += step, ++i) {
          const size_t count = g1 - s < step ? g1 - s : step;  // short: the K tail's group
          _tile_loadd(6, bg + i * 2 * step * kTileBytes, kTileBytes);
          _tile_loadd(7, bg + (i * 2 + 1) * step * kTileBytes, kTileBytes);
          const bool full = count == step;
          if (full && rows0 == kTileRows) {
            _tile_loadd(4, a + m0 * lda + s * 4, lda);
          } else {
            if (!full) std::memset(a_buf[0], 0, sizeof a_buf[0]);  // zero past the tail
            amx::copy_rows(a + m0 * lda, lda, rows0, s * 4, count * 4, a_buf[0]);
            _tile_loadd(4, a_buf[0], kTileBytes);
          }
          _tile_dpbusd(0, 4, 6);
          _tile_dpbusd(1, 4, 7);
          if (two) {
            if (full && rows1 == kTileRows) {
              _tile_loadd(5, a + (m0 + kTileRows) * lda + s * 4, lda);
            } else {
              if (!full) std::memset(a_buf[1], 0, sizeof a_buf[1]);
              amx::copy_rows(a + (m0 + kTileRows) * lda, lda, rows1, s * 4, count * 4, a_buf[1]);
              _tile_loadd(5, a_buf[1], kTileBytes);
            }
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
          }
        }
        // the previous group's fold, in program order after this group's tile operations, so
        // the vector unit folds while the tiles multiply (folding right after the stores left
        // it waiting on them: 9% of a W4 g32 forward), then this group's sums out
        if (gi > 0) fold_group(gi - 1);
        for (size_t t = 0; t < n_tiles; ++t) amx::store_c(t, c_buf[gi % 2][t]);
      }
      fold_group((kgroups - 1) / group_kgroups);
    }
  }
  _tile_release();
}

// 16+ rows, and groups whose steps are at least 4 k-groups (a group of 4 x a prime > 16 k would
// run 1-row B tiles): else the zmm kernel.
bool use_amx(size_t mr, size_t group_kgroups) {
  return mr >= kTileRows && step_groups(group_kgroups) >= 4;
}

// Six rows at a time through an AVX-512 VNNI kernel (the table's mr is 32 here).
template <typename Fn>
void in_avx512_rows(size_t mr, Fn&& fn) {
  for (size_t r = 0; r < mr; r += kAvx512Rows) fn(r, mr - r < kAvx512Rows ? mr - r : kAvx512Rows);
}

}  // namespace

void lowbit_tile4_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                      bool a_signed, int32_t* sums) {
  in_avx512_rows(mr, [&](size_t r, size_t n) {
    lowbit_tile4_avx512(a + r * lda, lda, n, b, kgroups, a_signed, sums + r * 64);
  });
}
void lowbit_tile2_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                      bool a_signed, int32_t* sums) {
  in_avx512_rows(mr, [&](size_t r, size_t n) {
    lowbit_tile2_avx512(a + r * lda, lda, n, b, kgroups, a_signed, sums + r * 64);
  });
}
void lowbit_tile_grouped4_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                              size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                              size_t n_groups, const float* sc, float* out) {
  (use_amx(mr, group_kgroups) ? grouped_amx<4> : lowbit_tile_grouped4_avx512)(
      a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}
void lowbit_tile_grouped2_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                              size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                              size_t n_groups, const float* sc, float* out) {
  (use_amx(mr, group_kgroups) ? grouped_amx<2> : lowbit_tile_grouped2_avx512)(
      a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}

}  // namespace pq
