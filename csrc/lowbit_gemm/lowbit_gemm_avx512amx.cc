// AMX path of the grouped low-bit forward (WeightOnlyConfig at M >= 16 on Sapphire Rapids and
// later Xeons). Up to 64 rows (4 row tiles) per call, K in blocks of whole quantization groups:
// a block's codes are unpacked once to signed int8 B tiles (w = u - 2^(bits-1), so each tile
// sum is the offset-corrected dot product and the corr argument is not read), then each C tile
// (16 rows x 16 columns) runs the block's groups with its float rows in registers: per group
// out = out + sc[g][j] * float(sum) (mul, then add; groups in order; 0 + the first product): the
// bits of every other path. S k-groups per tdpbusd, S = the largest divisor of the group's
// k-groups up to 16, so a step never straddles two groups.
// Bound (this Xeon, docs/notes/amx.md): while tdpbusd runs, zmm operations issue at about one
// per cycle, so the fold's 3 per 16 outputs per group (cvt, mul, add) cost more than the tile
// product at g64. The raw sums (lowbit_gemm's int32 op) from 16 rows: u codes against u8 rows
// (tdpbusd) or int8 rows (tdpbsud). Fewer than 16 rows and the decode GEMVs: the AVX-512 VNNI
// kernels.
#include <immintrin.h>

#include <cassert>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/amx_tiles.h"
#include "core/macros.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "lowbit_gemm/panel_scales.h"

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

constexpr size_t kMaxRowTiles = 4;   // 64 rows per call: the codes unpacked once for 4 row tiles
constexpr size_t kBlockKgroups = 64;  // k-groups per K block: 16 KiB of codes (128: same or slower)

// Codes of k-groups [g0, g1) of the panel at b as B tiles: tile (quarter q, step i) at buf +
// (q * n_steps + i) * step * 64, `step` rows (k-groups) of 16 columns x 4 k; rows from g1 up to
// n_steps * step are zero. kSigned: w = u - 2^(bits-1), so a tile sum is the offset-corrected
// dot product itself (tdpbusd: u8 rows x s8 codes) and the grouped fold needs no correction
// term: sum a * (u - o) = sum a * u - corr, the same int32. Else the u codes (the raw sums).
template <int BITS, bool kSigned>
void unpack_block(const uint8_t* b, size_t g0, size_t g1, size_t step, size_t n_steps,
                  int8_t* buf) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(1 << (BITS - 1)));
  // the codes at bit `shift` of each byte of v
  auto codes = [&](__m512i v, unsigned shift) {
    const __m512i u = _mm512_and_si512(shift ? _mm512_srli_epi16(v, shift) : v, mask);
    return kSigned ? _mm512_sub_epi8(u, offset) : u;
  };
  const size_t quarter_bytes = n_steps * step * kTileBytes;
  for (size_t g = g0; g < g0 + n_steps * step; ++g) {
    int8_t* dst = buf + (g - g0) * kTileBytes;
    __m512i q[4];
    if (g >= g1) {
      for (int j = 0; j < 4; ++j) q[j] = _mm512_setzero_si512();
    } else if constexpr (BITS == 4) {  // block j: quarters 2j (low nibbles) and 2j + 1
      for (int j = 0; j < 2; ++j) {
        const __m512i v = _mm512_loadu_si512(b + g * kGroupBytes + 64 * j);
        q[2 * j] = codes(v, 0);
        q[2 * j + 1] = codes(v, 4);
      }
    } else {  // one block: quarter j at bits 2j
      const __m512i v = _mm512_loadu_si512(b + g * kGroupBytes);
      for (int j = 0; j < 4; ++j) q[j] = codes(v, 2 * j);
    }
    for (int j = 0; j < 4; ++j) _mm512_store_si512(dst + j * quarter_bytes, q[j]);
  }
}

// The row tiles of up to 64 rows over `len` bytes of K from a: read in place, or staged (zero
// padded to `padded` bytes, stride `stage_stride`) when short: rows past mr, or a last step
// reaching past the row's k.
struct RowTiles {
  const uint8_t* ptr[kMaxRowTiles];
  size_t stride[kMaxRowTiles], rows[kMaxRowTiles];
  void stage(const uint8_t* a, size_t lda, size_t mr, size_t len, size_t padded, uint8_t* buf,
             size_t stage_stride) {
    for (size_t rt = 0; rt * kTileRows < mr; ++rt) {
      const uint8_t* src = a + rt * kTileRows * lda;
      rows[rt] = mr - rt * kTileRows < kTileRows ? mr - rt * kTileRows : kTileRows;
      if (rows[rt] == kTileRows && padded == len) {
        ptr[rt] = src;
        stride[rt] = lda;
        continue;
      }
      uint8_t* dst = buf + rt * kTileRows * stage_stride;
      std::memset(dst, 0, kTileRows * stage_stride);
      for (size_t r = 0; r < rows[rt]; ++r) std::memcpy(dst + r * stage_stride, src + r * lda, len);
      ptr[rt] = dst;
      stride[rt] = stage_stride;
    }
  }
};

// The float rows of one C tile (16 rows x 16 columns) live in registers across its groups:
// acc[r] = acc[r] + sc * float(sum[r]) per group (mul, then add: the bits of every path).
struct TileAcc {
  __m512 v[kTileRows];
  void init(const float* out, size_t rows, bool from_out) {
#pragma GCC unroll 16
    for (size_t r = 0; r < kTileRows; ++r)
      v[r] = from_out && r < rows ? _mm512_loadu_ps(out + r * 64) : _mm512_setzero_ps();
  }
  void fold(const int32_t* sums, __m512 s) {
#pragma GCC unroll 16
    for (size_t r = 0; r < kTileRows; ++r) {
      __m512 prod = _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_load_si512(sums + r * kTileRows)));
      asm("" : "+v"(prod));  // keep mul and add separate even under -ffp-contract=fast
      v[r] = _mm512_add_ps(v[r], prod);
    }
  }
  void write(float* out, size_t rows) const {
#pragma GCC unroll 16
    for (size_t r = 0; r < kTileRows; ++r)
      if (r < rows) _mm512_storeu_ps(out + r * 64, v[r]);
  }
};

// One C tile's sum over the steps [i0, i1) of a group into C tile `slot` (0 or 1): A tiles
// alternate between tiles 4 and 5, B tiles between 6 and 7, so a load need not wait for the
// previous step's product to release its tile. kSignedRows: int8 rows x u codes (tdpbsud).
#define PQ_AMX_DP(signed_rows, c, a, b) \
  do {                                  \
    if (signed_rows)                    \
      _tile_dpbsud(c, a, b);            \
    else                                \
      _tile_dpbusd(c, a, b);            \
  } while (0)
template <bool kSignedRows = false>
void group_product(const uint8_t* a, size_t a_stride, size_t a_step_bytes, const int8_t* b,
                   size_t b_step_bytes, size_t i0, size_t i1, int slot) {
  if (slot) _tile_zero(1); else _tile_zero(0);
  for (size_t i = i0; i < i1; ++i) {
    const uint8_t* ai = a + i * a_step_bytes;
    const int8_t* bi = b + i * b_step_bytes;
    if (i % 2) {
      _tile_loadd(5, ai, a_stride);
      _tile_loadd(7, bi, kTileBytes);
      if (slot) PQ_AMX_DP(kSignedRows, 1, 5, 7); else PQ_AMX_DP(kSignedRows, 0, 5, 7);
    } else {
      _tile_loadd(4, ai, a_stride);
      _tile_loadd(6, bi, kTileBytes);
      if (slot) PQ_AMX_DP(kSignedRows, 1, 4, 6); else PQ_AMX_DP(kSignedRows, 0, 4, 6);
    }
  }
}
#undef PQ_AMX_DP

inline void store_slot(int slot, int32_t* buf) {
  if (slot)
    _tile_stored(1, buf, kTileBytes);
  else
    _tile_stored(0, buf, kTileBytes);
}

template <class T>
T* align64(T* p) {
  return reinterpret_cast<T*>(round_up(reinterpret_cast<uintptr_t>(p), 64));
}

// Raw sums (LowbitTileFn) at 16+ rows and 8-256 k-groups per call (use_amx_raw): the call's
// k-groups unpacked once as u codes for all row tiles, then per C tile every step: u8 rows x u
// codes (tdpbusd) or int8 rows x u codes (tdpbsud), stored as int32 sums. Steps of the largest
// divisor of the k-groups up to 16, or 16 with a staged tail when that divisor is under 8.
template <int BITS, bool kSignedRows>
void raw_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
             int32_t* sums) {
  assert(mr <= kMaxRowTiles * kTileRows);  // the table's mr
  const size_t divisor = step_groups(kgroups);
  const size_t step = divisor >= 8 ? divisor : kMaxStep;
  const size_t n_steps = div_round_up(kgroups, step);
  const size_t quarter_bytes = n_steps * step * kTileBytes;
  const size_t stage_stride = n_steps * step * 4 + 64;
  thread_local std::vector<int8_t> b_store;
  thread_local std::vector<uint8_t> a_store;
  if (b_store.size() < 4 * quarter_bytes + 64) b_store.resize(4 * quarter_bytes + 64);
  if (a_store.size() < kMaxRowTiles * kTileRows * stage_stride + 64)
    a_store.resize(kMaxRowTiles * kTileRows * stage_stride + 64);
  int8_t* b_buf = align64(b_store.data());
  unpack_block<BITS, false>(b, 0, kgroups, step, n_steps, b_buf);
  RowTiles rows;
  rows.stage(a, lda, mr, kgroups * 4, n_steps * step * 4, align64(a_store.data()), stage_stride);
  alignas(64) int32_t c_buf[kTileRows * kTileRows];
  // tile t's sums out: stored after tile t + 1's products are issued (a store right after its
  // own product waits for it)
  auto store_tile = [&](size_t t) {
    store_slot(static_cast<int>(t % 2), c_buf);
    const size_t rt = t / 4, q = t % 4;
    for (size_t r = 0; r < rows.rows[rt]; ++r)
      std::memcpy(sums + (rt * kTileRows + r) * 64 + q * kTileRows, c_buf + r * kTileRows,
                  kTileRows * sizeof(int32_t));
  };
  amx::configure(step * 4, step);
  const size_t n_tiles = div_round_up(mr, kTileRows) * 4;
  for (size_t t = 0; t < n_tiles; ++t) {
    group_product<kSignedRows>(rows.ptr[t / 4], rows.stride[t / 4], step * 4,
                               b_buf + (t % 4) * quarter_bytes, step * kTileBytes, 0, n_steps,
                               static_cast<int>(t % 2));
    if (t > 0) store_tile(t - 1);
  }
  store_tile(n_tiles - 1);
  _tile_release();
}

// K in blocks of whole quantization groups (about kBlockKgroups k-groups): a block's codes are
// unpacked once for all (up to 4) row tiles, then each C tile (row tile x 16-column quarter)
// runs all the block's groups with its float rows in registers (the fold was 3 loads/stores + 5
// vector operations per 16 outputs per group with rows in memory, now 1 load + 3).
template <int BITS>
void grouped_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                 size_t group_kgroups, const uint16_t* sc, float* out) {
  const size_t step = step_groups(group_kgroups);
  const size_t steps_per_group = group_kgroups / step;
  const size_t block_groups = kBlockKgroups / group_kgroups;  // >= 1: use_amx
  const size_t block_kg = block_groups * group_kgroups;
  const size_t n_row_tiles = div_round_up(mr, kTileRows);
  assert(n_row_tiles <= kMaxRowTiles);  // the table's mr
  const size_t stage_stride = block_kg * 4 + 64;  // off 1 KiB multiples: 16-row loads, 16 sets
  thread_local std::vector<int8_t> b_store;
  thread_local std::vector<uint8_t> a_store;
  if (b_store.size() < 4 * block_kg * kTileBytes + 64)
    b_store.resize(4 * block_kg * kTileBytes + 64);
  if (a_store.size() < kMaxRowTiles * kTileRows * stage_stride + 64)
    a_store.resize(kMaxRowTiles * kTileRows * stage_stride + 64);
  int8_t* b_buf = align64(b_store.data());
  uint8_t* a_stage = align64(a_store.data());
  alignas(64) int32_t c_buf[3][kTileRows * kTileRows];
  amx::configure(step * 4, step);  // A: 16 rows x 4S bytes, B: S rows x 64 bytes
  for (size_t kb0 = 0; kb0 < kgroups; kb0 += block_kg) {
    const size_t kb1 = kgroups - kb0 < block_kg ? kgroups : kb0 + block_kg;
    const size_t n_steps = div_round_up(kb1 - kb0, step);
    const size_t n_grp = div_round_up(kb1 - kb0, group_kgroups);
    const size_t quarter_bytes = n_steps * step * kTileBytes;
    unpack_block<BITS, true>(b, kb0, kb1, step, n_steps, b_buf);
    RowTiles rows;
    rows.stage(a + kb0 * 4, lda, mr, (kb1 - kb0) * 4, n_steps * step * 4, a_stage, stage_stride);
    // One work item per (C tile, group), in order. Item n's product is issued, then item
    // n - 1's C tile stored (storing right after its own product waited for the tdpbusd to
    // finish), then item n - 2 folded from its stored sums.
    TileAcc acc;
    struct Item { size_t tile, grp; };
    Item items[4];  // items n - 3 .. n (a fold looks one item back)
    auto tile_out = [&](size_t t) { return out + (t / 4) * kTileRows * 64 + (t % 4) * kTileRows; };
    auto write_tile = [&](size_t t) { acc.write(tile_out(t), rows.rows[t / 4]); };
    auto fold_item = [&](size_t f) {
      const Item& it = items[f % 4];
      if (it.grp == 0) {  // a new C tile: the previous one's rows out, this one's in
        if (f > 0) write_tile(items[(f - 1) % 4].tile);
        acc.init(tile_out(it.tile), rows.rows[it.tile / 4], kb0 > 0);
      }
      acc.fold(c_buf[f % 3], panel_scales16(sc + (kb0 / group_kgroups + it.grp) * 64, it.tile % 4));
    };
    auto store_item = [&](size_t f) { store_slot(static_cast<int>(f % 2), c_buf[f % 3]); };
    size_t n = 0;
    for (size_t t = 0; t < n_row_tiles * 4; ++t) {
      const size_t rt = t / 4, q = t % 4;
      for (size_t j = 0; j < n_grp; ++j, ++n) {
        const size_t i0 = j * steps_per_group;
        const size_t i1 = i0 + steps_per_group < n_steps ? i0 + steps_per_group : n_steps;
        items[n % 4] = {t, j};
        group_product(rows.ptr[rt], rows.stride[rt], step * 4, b_buf + q * quarter_bytes,
                      step * kTileBytes, i0, i1, static_cast<int>(n % 2));
        if (n >= 1) store_item(n - 1);
        if (n >= 2) fold_item(n - 2);
      }
    }
    store_item(n - 1);
    if (n >= 2) fold_item(n - 2);
    fold_item(n - 1);
    write_tile(items[(n - 1) % 4].tile);
  }
  _tile_release();
}

// 16+ rows, groups whose steps are at least 4 k-groups (a group of 4 x a prime > 16 k would
// run 1-row B tiles) and groups of at most one K block (g256; QuantLinear's are 32-128, the
// native forward takes any multiple of 4: a whole-K group would unpack all of K per block):
// else the zmm kernel.
bool use_amx(size_t mr, size_t group_kgroups) {
  return mr >= kTileRows && step_groups(group_kgroups) >= 4 && group_kgroups <= kBlockKgroups;
}

// Raw tiles on AMX: 16+ rows, and 8 to 256 k-groups (lowbit_gemm_run blocks K at 256; the
// grouped raw op calls once per group, any multiple of 4 k: fewer than 8 k-groups would run
// mostly zero steps, a whole-K group would unpack all of K): else the zmm kernel.
constexpr size_t kRawMaxKgroups = 256;
bool use_amx_raw(size_t mr, size_t kgroups) {
  return mr >= kTileRows && kgroups >= 8 && kgroups <= kRawMaxKgroups;
}

// The entry points by bit width: AMX where use_amx / use_amx_raw allow, else the AVX-512 VNNI
// kernels (raw sums six rows at a time: the table's mr is 64).
template <int BITS>
void raw_tile(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
              bool a_signed, int32_t* sums) {
  if (use_amx_raw(mr, kgroups))
    return (a_signed ? raw_amx<BITS, true> : raw_amx<BITS, false>)(a, lda, mr, b, kgroups, sums);
  const LowbitTileFn zmm = BITS == 4 ? lowbit_tile4_avx512 : lowbit_tile2_avx512;
  for (size_t r = 0; r < mr; r += kAvx512Rows)
    zmm(a + r * lda, lda, mr - r < kAvx512Rows ? mr - r : kAvx512Rows, b, kgroups, a_signed,
        sums + r * 64);
}
template <int BITS>
void grouped_tile(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                  size_t group_kgroups, const uint32_t* corr, size_t n_groups, const uint16_t* sc,
                  float* out) {
  if (!use_amx(mr, group_kgroups)) {
    const LowbitTileGroupedFn zmm =
        BITS == 4 ? lowbit_tile_grouped4_avx512 : lowbit_tile_grouped2_avx512;
    return zmm(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
  }
  grouped_amx<BITS>(a, lda, mr, b, kgroups, group_kgroups, sc, out);
}

}  // namespace

void lowbit_tile4_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                      bool a_signed, int32_t* sums) {
  raw_tile<4>(a, lda, mr, b, kgroups, a_signed, sums);
}
void lowbit_tile2_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                      bool a_signed, int32_t* sums) {
  raw_tile<2>(a, lda, mr, b, kgroups, a_signed, sums);
}
void lowbit_tile_grouped4_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                              size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                              size_t n_groups, const uint16_t* sc, float* out) {
  grouped_tile<4>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}
void lowbit_tile_grouped2_amx(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                              size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                              size_t n_groups, const uint16_t* sc, float* out) {
  grouped_tile<2>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}

}  // namespace pq
