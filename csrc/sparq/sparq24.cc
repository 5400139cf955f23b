// SPARQ with 2:4-sparse weights: packing, the per-row selector tables, the scalar kernel and the
// driver (layout and semantics: sparq.h). The kernels never trim activations themselves: per row
// and k group the 10 selector cases are trimmed once into two 16-byte tables (E0, E1), shared by
// all N columns, and each column's 4-bit selector picks its two trimmed activations. Signed rows
// (sign-magnitude) split their tables by sign into a positive and a negative part, which a
// kernel's signed twin takes in one pass (as narrow tables, SparqKernels, for blocks of more
// rows than its word_rows), or the unsigned kernel as two table rows.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/gemm_tasks.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "quantize/act_quantize.h"
#include "sparq/sparq.h"

namespace pq {

const uint8_t kS24PairPos[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};

namespace {
// Tables per M block: ~L2 size, but at least kMinBlockRows rows, and at most kMaxBlockBytes.
// Each M block streams the weights once: at a long K, 1 MiB of tables held 9 rows (K = 14336),
// and the zmm row tile took 5.4-5.8 cycles per row and step against 4.2-4.4 with 32 (Zen 4, 50th
// session, 256 x 4096 x 14336; the tables then come from L3, which costs less; the AVX2 tier
// there: 0.80x -> 1.04x dense int8). Not timed on Intel or Zen 3.
constexpr size_t kBlockBytes = size_t{1} << 20;
constexpr size_t kMinBlockRows = 32;
constexpr size_t kMaxBlockBytes = size_t{16} << 20;
constexpr size_t kPartsBytes = size_t{4} << 20;  // signed rows' two-part outputs per M block

// Per sign pattern of a group, the table bytes whose own activation is negative.
struct SignMasks {
  uint8_t mask[16][kS24TableBytes];  // [negative positions as 4 bits][table byte]: 0xff = negative
  SignMasks() {
    for (unsigned neg = 0; neg < 16; ++neg)
      for (size_t e = 0; e < kS24TableBytes; ++e) {
        const int own = sparq24_table_byte(e).own;
        mask[neg][e] = own >= 0 && (neg >> own) & 1u ? 0xff : 0x00;
      }
  }
};
}  // namespace

size_t sparq24_split_tables(uint8_t* tables, const uint8_t* negative, size_t k, uint8_t* neg,
                            uint64_t* high) {
  static const SignMasks masks;
  const size_t groups = div_round_up(k, 4);
  if (high) std::fill(high, high + div_round_up(groups, 64), uint64_t{0});
  size_t count = 0;
  for (size_t g = 0; g < groups; ++g) {
    unsigned bits = 0;
    for (size_t j = 0; negative && j < 4 && 4 * g + j < k; ++j)
      bits |= (negative[4 * g + j] ? 1u : 0u) << j;
    const uint8_t* mask = masks.mask[bits];
    uint8_t* t = tables + g * kS24TableBytes;
    uint8_t* n = neg + g * kS24TableBytes;
    if (!high) {
      for (size_t e = 0; e < kS24TableBytes; ++e) {  // (vectorized by the compiler)
        n[e] = t[e] & mask[e];
        t[e] = t[e] & static_cast<uint8_t>(~mask[e]);
      }
      continue;
    }
    uint8_t any = 0;
    for (size_t e = 0; e < 16; ++e) {  // E0's parts, and the narrow l and h (vectorized)
      const uint8_t v = t[e], m = mask[e];
      n[e] = v & m;
      t[e] = v & static_cast<uint8_t>(~m);
      t[16 + e] = static_cast<uint8_t>(((v & 0x7f) ^ m) - m);
      n[16 + e] = static_cast<uint8_t>(((v >> 7) ^ m) - m);
      any |= v;
    }
    if (any & 0x80) {
      high[g / 64] |= uint64_t{1} << (g % 64);
      ++count;
    }
  }
  return count;
}

void sparq24_parts_to_words(uint8_t* pos, uint8_t* neg, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) {  // (vectorized by the compiler)
    pos[i] = static_cast<uint8_t>(pos[i] - neg[i]);
    neg[i] = neg[i] ? 0xff : 0x00;
  }
}

void sparq24_tables_row(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out) {
  const size_t groups = div_round_up(k, 4);
  for (size_t g = 0; g < groups; ++g) {
    uint8_t x[4] = {0, 0, 0, 0};  // the K tail is zero padded
    for (size_t j = 0; j < 4 && 4 * g + j < k; ++j) x[j] = a[4 * g + j];
    uint8_t* e0 = out + g * kS24TableBytes;
    uint8_t* e1 = e0 + 16;
    std::memset(e0, 0, kS24TableBytes);
    for (int s = 0; s < 6; ++s) {
      const uint8_t u = x[kS24PairPos[s][0]], v = x[kS24PairPos[s][1]];
      const int z = (u == 0 || v == 0) ? 1 : 0;  // lut[1] == lut[0] without pairs
      e0[s] = plan.lut[z][u];
      e0[10 + s] = e1[s] = plan.lut[z][v];  // E0[10..15] repeat E1[0..5] (sparq.h)
    }
    for (int j = 0; j < 4; ++j) e0[6 + j] = plan.lut[1][x[j]];  // single: zero partner
  }
}

void sparq24_compute_scalar(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1) {
  const size_t row_tab = p.table_stride;
  for (size_t panel = p0; panel < p1; ++panel) {
    const size_t col0 = panel * kS24PanelCols;
    const size_t nc = std::min(kS24PanelCols, p.n - col0);
    const uint8_t* b = p.panels + panel * p.k_groups * kS24GroupBytes;
    for (size_t m = m0; m < m1; ++m) {
      const uint8_t* t = p.tables + m * row_tab;
      for (size_t lane = 0; lane < nc; ++lane) {
        const size_t byte = sparq24_sel_byte(lane);
        const unsigned shift = sparq24_sel_shift(lane);
        const size_t o0 = sparq24_value_offset(lane, 0), o1 = sparq24_value_offset(lane, 1);
        int64_t acc = 0;  // the int32 result wraps modulo 2^32 like every path
        for (size_t g = 0; g < p.k_groups; ++g) {
          const uint8_t* bg = b + g * kS24GroupBytes;
          const unsigned s = (bg[byte] >> shift) & 15u;
          const int8_t v0 = static_cast<int8_t>(bg[o0]), v1 = static_cast<int8_t>(bg[o1]);
          const uint8_t* tg = t + g * kS24TableBytes;
          acc += static_cast<int32_t>(tg[s]) * v0 + static_cast<int32_t>(tg[16 + s]) * v1;
        }
        p.c[m * p.ldc + col0 + lane] = static_cast<int32_t>(static_cast<uint32_t>(acc));
      }
    }
  }
}

PackedHeader sparq24_packed_header(size_t n, size_t k, uint16_t flags) {
  const size_t n_pad = round_up(n, kS24PanelCols), k_pad = round_up(k, 4);
  PackedHeader h = make_packed_header(PackedOp::sparq24_gemm, n, k, n_pad, k_pad, 5,
                                      kS24PanelCols, 4);
  h.flags = flags;
  h.aux_offset = 0;
  h.total_bytes = kPackedAlign + round_up(n_pad / kS24PanelCols * (k_pad / 4) * kS24GroupBytes,
                                          kPackedAlign);
  return h;
}

void prune_24_f32(const float* w, size_t rows, size_t k, float* out, int threads) {
  const size_t rows_per_task = std::max<size_t>(1, (size_t{1} << 16) / std::max<size_t>(k, 1));
  const size_t tasks = (rows + rows_per_task - 1) / rows_per_task;
  parallel_for(tasks, threads, [&](size_t t) {
    const size_t r1 = std::min(rows, (t + 1) * rows_per_task);
    for (size_t r = t * rows_per_task; r < r1; ++r) {
      const float* x = w + r * k;
      float* y = out + r * k;
      size_t g0 = 0;
      for (; g0 + 4 <= k; g0 += 4) {  // rank = how many of the others beat it (branch-free)
        const float m0 = std::fabs(x[g0]), m1 = std::fabs(x[g0 + 1]), m2 = std::fabs(x[g0 + 2]),
                    m3 = std::fabs(x[g0 + 3]);
        const int r0 = (m1 > m0) + (m2 > m0) + (m3 > m0);
        const int r1_ = (m0 >= m1) + (m2 > m1) + (m3 > m1);
        const int r2 = (m0 >= m2) + (m1 >= m2) + (m3 > m2);
        const int r3 = (m0 >= m3) + (m1 >= m3) + (m2 >= m3);
        y[g0] = r0 < 2 ? x[g0] : 0.0f;
        y[g0 + 1] = r1_ < 2 ? x[g0 + 1] : 0.0f;
        y[g0 + 2] = r2 < 2 ? x[g0 + 2] : 0.0f;
        y[g0 + 3] = r3 < 2 ? x[g0 + 3] : 0.0f;
      }
      const size_t len = k - g0;  // a partial last group: the same rule among its columns
      for (size_t i = 0; i < len; ++i) {
        int beaten = 0;
        for (size_t j = 0; j < len; ++j) {
          const float mj = std::fabs(x[g0 + j]), mi = std::fabs(x[g0 + i]);
          beaten += j < i ? mj >= mi : (j > i && mj > mi);
        }
        y[g0 + i] = beaten < 2 ? x[g0 + i] : 0.0f;
      }
    }
  });
}

namespace {

// A 4-code group's non-zero mask (bit j: code j is not 0).
inline unsigned nonzero_mask(const int8_t* x) {
  return unsigned{x[0] != 0} | unsigned{x[1] != 0} << 1 | unsigned{x[2] != 0} << 2 |
         unsigned{x[3] != 0} << 3;
}

// Per non-zero mask of at most two bits: the selector (pair t: 0..5, single j: 6 + j, none: 6)
// and the positions of the first and second non-zero (-1: none).
struct S24Select {
  uint8_t sel;
  int8_t pos0, pos1;
};
const std::array<S24Select, 16> kS24Select = [] {
  std::array<S24Select, 16> t{};
  for (unsigned mask = 0; mask < 16; ++mask) {
    int pos[2] = {-1, -1}, cnt = 0;
    for (int j = 0; j < 4; ++j)
      if ((mask >> j & 1) && cnt < 2) pos[cnt++] = j;
    unsigned sel = 6;
    if (cnt == 1) sel = 6 + pos[0];
    if (cnt == 2)
      for (unsigned p = 0; p < 6; ++p)
        if (kS24PairPos[p][0] == pos[0] && kS24PairPos[p][1] == pos[1]) sel = p;
    t[mask] = {static_cast<uint8_t>(sel), static_cast<int8_t>(pos[0]), static_cast<int8_t>(pos[1])};
  }
  return t;
}();

}  // namespace

std::string sparq24_check_sparsity(const int8_t* w, size_t n, size_t k) {
  bool dense_group = false;  // one branch-free pass; the slow search only to name the group
  for (size_t r = 0; r < n; ++r) {
    size_t g0 = 0;
    for (; g0 + 4 <= k; g0 += 4) {
      const int8_t* x = w + r * k + g0;
      dense_group |= (x[0] != 0) + (x[1] != 0) + (x[2] != 0) + (x[3] != 0) > 2;
    }
    if (k - g0 == 3) dense_group |= (w[r * k + g0] != 0) + (w[r * k + g0 + 1] != 0) + (w[r * k + g0 + 2] != 0) > 2;
  }
  if (!dense_group) return "";
  for (size_t r = 0; r < n; ++r)
    for (size_t g = 0; g * 4 < k; ++g) {
      int nz = 0;
      for (size_t j = 4 * g; j < std::min(k, 4 * g + 4); ++j) nz += w[r * k + j] != 0;
      if (nz > 2)
        return "row " + std::to_string(r) + ", k group " + std::to_string(g) + " (columns " +
               std::to_string(4 * g) + ".." + std::to_string(std::min(k, 4 * g + 4) - 1) +
               ") has " + std::to_string(nz) + " non-zeros; 2:4 sparsity allows at most 2 per "
               "aligned group of 4 (prune it, e.g. pyquant.prune_24)";
    }
  return "";
}

// Panel by panel, group by group, lane by lane: each group's 80 bytes are written in turn and
// the 32 rows a panel reads stay in L1 across its groups.
void sparq24_pack_weights(const int8_t* w, size_t n, size_t k, uint16_t flags, uint8_t* out) {
  const PackedHeader h = sparq24_packed_header(n, k, flags);
  std::memset(out, 0, h.total_bytes);
  std::memcpy(out, &h, sizeof(h));
  const size_t groups = h.k_padded / 4;
  uint8_t* bg = out + h.data_offset;
  for (size_t panel = 0; panel < h.n_padded / kS24PanelCols; ++panel) {
    for (size_t g = 0; g < groups; ++g, bg += kS24GroupBytes) {
      for (size_t lane = 0; lane < kS24PanelCols; ++lane) {
        const size_t col = panel * kS24PanelCols + lane;
        int8_t x[4] = {0, 0, 0, 0};
        if (col < n && 4 * g + 4 <= k) {
          std::memcpy(x, w + col * k + 4 * g, 4);
        } else if (col < n) {
          for (size_t j = 0; 4 * g + j < k; ++j) x[j] = w[col * k + 4 * g + j];
        }
        const S24Select e = kS24Select[nonzero_mask(x)];
        bg[sparq24_sel_byte(lane)] |= static_cast<uint8_t>(e.sel << sparq24_sel_shift(lane));
        bg[sparq24_value_offset(lane, 0)] = static_cast<uint8_t>(e.pos0 < 0 ? 0 : x[e.pos0]);
        bg[sparq24_value_offset(lane, 1)] = static_cast<uint8_t>(e.pos1 < 0 ? 0 : x[e.pos1]);
      }
    }
  }
}

namespace {

// The 2:4 driver shared by the raw ops and the fused forward: blocks of rows get their selector
// tables (threads over rows), then the kernel runs over (panel, row range) tasks and
// `finish(m0, m1, n0, n1)` on each finished tile. block_negative(m0, rows) says whether a block's
// input has a negative value (asked where the block may take narrow tables).
// make_tables(row, chunk, pos, neg, high) writes
// the row's tables to pos and returns whether the row has negative values; if it does (possible
// only when `signed_rows`, else neg is null), pos holds the positive part's tables and neg the
// negative part's (sparq24_split_tables), or with `high` (not null) the signed twin's narrow
// tables in pos and neg, whatever the row's signs (SparqKernels::tables24_signed). With
// signed rows a row's two table sets sit side by side, so a block with a negative value runs the
// kernel once on 2 x rows interleaved rows (positive, negative part: one pass over the weights,
// which at decode come from DRAM) into a scratch output, and each row is the difference of its
// two (wrapping int32, as every path); other blocks skip the negative halves. A kernel with a
// signed twin (SparqKernels::compute24_signed) takes a block with a negative value in one pass
// instead, straight into c: as narrow tables, or a call of up to word_rows rows as words (the ymm
// decode tile).
template <class BlockNegative, class MakeTables, class Finish>
void run_blocks(size_t m, size_t k, const uint8_t* panels, size_t n, int32_t* c, bool signed_rows,
                int threads, Isa isa, BlockNegative&& block_negative, MakeTables&& make_tables,
                Finish&& finish) {
  const SparqKernels& kernels = sparq_kernels(isa);
  const size_t groups = div_round_up(k, 4);
  const size_t row_bytes = groups * kS24TableBytes;  // a row's tables; rows 64-byte aligned:
  const size_t row_tab = round_up(row_bytes, size_t{64});
  const size_t n_panels = div_round_up(n, kS24PanelCols);
  const size_t sets = signed_rows ? 2 : 1;
  size_t mc = std::max<size_t>(kMinBlockRows, kBlockBytes / (sets * row_tab));
  mc = std::min({m, mc, std::max<size_t>(1, kMaxBlockBytes / (sets * row_tab))});
  if (signed_rows && !kernels.compute24_signed)  // two-part outputs stay bounded (short k)
    mc = std::min(mc, std::max<size_t>(1, kPartsBytes / (2 * n * sizeof(int32_t))));
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);
  // the zmm row tile loads 64 table bytes of a row per step, which straddled two cache lines at
  // malloc's alignment (Zen 4, 50th session: 5.5 against 4.1 cycles per row and step)
  std::unique_ptr<uint8_t[]> table_buf(new uint8_t[sets * mc * row_tab + 64]);
  uint8_t* const tables = reinterpret_cast<uint8_t*>(
      round_up(reinterpret_cast<uintptr_t>(table_buf.get()), uintptr_t{64}));
  std::unique_ptr<int32_t[]> c_parts;  // allocated by the first block with two parts
  std::vector<uint8_t> row_neg(mc);
  // Narrow tables (blocks with a negative value in a call of more than word_rows rows, or with
  // narrow_one_row, and a signed twin): per row the high-group bits and count. Every row of such
  // a block gets them, with or without negative values.
  const bool narrow_ok = signed_rows && kernels.compute24_signed;
  const size_t high_words = div_round_up(groups, 64);
  std::vector<uint64_t> high(narrow_ok ? mc * high_words : 0);
  std::vector<size_t> high_groups(narrow_ok ? mc : 0);
  Sparq24Problem prob{};
  prob.tables = tables;
  prob.k_groups = groups;
  prob.panels = panels;
  prob.ldc = n;
  prob.n = n;
  prob.neg_offset = row_tab;
  prob.high = high.data();
  prob.high_stride = high_words;
  for (size_t m0 = 0; m0 < m; m0 += mc) {
    const size_t rows = std::min(mc, m - m0);
    const size_t chunks = std::min(rows, n_threads * 4);
    // (a one-row block, or a call of up to word_rows rows: the ymm decode tile's words, unless
    // narrow_one_row; decided by the call's rows: a very long K or a tail makes blocks of a few
    // rows, which the word tile would run slower than narrow tables; no negative value: the
    // unsigned kernel)
    const bool as_words = rows == 1 || m <= kernels.word_rows;
    const bool narrow =
        narrow_ok && (!as_words || kernels.narrow_one_row) && block_negative(m0, rows);
    parallel_for(chunks, threads, [&](size_t t) {
      for (size_t r = rows * t / chunks; r < rows * (t + 1) / chunks; ++r) {
        uint8_t* pos = tables + sets * r * row_tab;
        uint64_t* h = narrow ? &high[r * high_words] : nullptr;
        row_neg[r] = make_tables(m0 + r, t, pos, signed_rows ? pos + row_tab : nullptr, h);
        if (!narrow) continue;
        high_groups[r] = 0;
        for (size_t w = 0; w < high_words; ++w)
          high_groups[r] += static_cast<size_t>(__builtin_popcountll(h[w]));
      }
    });
    const bool negative = std::any_of(row_neg.begin(), row_neg.begin() + rows,
                                      [](uint8_t v) { return v != 0; });
    if (negative && !narrow)  // rows without negative values add nothing in their negative part
      for (size_t r = 0; r < rows; ++r)
        if (!row_neg[r]) std::memset(tables + (2 * r + 1) * row_tab, 0, row_tab);
    // Negative values: the kernel's signed twin takes both parts of a row in one pass where
    // there is one (as narrow tables, or as words for the ymm streaming decode tile); else two
    // parts, subtracted.
    const bool one_pass = narrow || (negative && kernels.compute24_signed && as_words);
    const bool two_parts = negative && !one_pass;
    prob.words = one_pass && !narrow;
    if (prob.words)
      for (size_t r = 0; r < rows; ++r)
        sparq24_parts_to_words(tables + 2 * r * row_tab,
                               tables + (2 * r + 1) * row_tab, row_bytes);
    // Few high groups (at most a third): their second pass costs less than the parts'
    // subtraction (ymm, break-even ~0.4 with AVX2, ~0.3 with AVX-VNNI) or a second pass over all
    // groups (zmm)
    prob.narrow = narrow;
    prob.few_high = narrow && std::accumulate(high_groups.begin(), high_groups.begin() + rows,
                                              size_t{0}) <= rows * groups / 3;
    if (two_parts && !c_parts) c_parts.reset(new int32_t[2 * mc * n]);  // (no signed twin)
    const Sparq24ComputeFn compute = one_pass ? kernels.compute24_signed : kernels.compute24;
    prob.table_stride = two_parts ? row_tab : sets * row_tab;
    prob.c = two_parts ? c_parts.get() : c + m0 * n;
    TaskShape shape;  // the shared task split (core/gemm_tasks.h); a row's parts stay together
    shape.m = two_parts ? 2 * rows : rows;
    shape.mr = two_parts ? 2 : 1;
    shape.n_panels = n_panels;
    shape.out_row_bytes = n * sizeof(int32_t);
    shape.weight_bytes = n_panels * kS24PanelCols * groups * 5 / 2;  // 2 values + positions
    const TaskGrid grid(shape, threads);
    parallel_for(grid.tasks(), threads, [&](size_t t) {
      size_t panel, r0, r1;
      grid.task(t, panel, r0, r1);
      compute(prob, r0, r1, panel, panel + 1);
      const size_t n0 = panel * kS24PanelCols, n1 = std::min(n, n0 + kS24PanelCols);
      if (two_parts) {
        for (size_t r = r0; r < r1; r += 2) {
          const uint32_t* part = reinterpret_cast<const uint32_t*>(c_parts.get() + r * n);
          uint32_t* dst = reinterpret_cast<uint32_t*>(c + (m0 + r / 2) * n);
          for (size_t j = n0; j < n1; ++j) dst[j] = part[j] - part[n + j];
        }
        r0 /= 2;
        r1 /= 2;
      }
      finish(m0 + r0, m0 + r1, n0, n1);
    });
  }
}

// A signed row's tables from its magnitudes: in pos, split by sign into pos and neg where the row
// has a negative value and the block keeps negative parts (neg), or with `high` (a block that
// runs narrow tables) the twin's narrow tables, whatever the row's signs.
// Returns whether the row has a negative value.
bool signed_row_tables(const SparqKernels& kernels, const SparqPlan& plan, const uint8_t* mag,
                       const uint8_t* is_neg, bool row_neg, size_t k, uint8_t* pos, uint8_t* neg,
                       uint64_t* high) {
  if (neg && (row_neg || high) && kernels.tables24_signed) {
    kernels.tables24_signed(plan, mag, is_neg, k, pos, neg, high);
    return row_neg;
  }
  kernels.tables24(plan, mag, k, pos);
  if (!neg || !row_neg) return false;
  sparq24_split_tables(pos, is_neg, k, neg);
  return true;
}

// |a| and a < 0 of a row of sign-magnitude values (|a| <= 255), written so the compiler
// vectorizes it (restrict pointers, no captured state): the plain loop inside raw_run's lambda
// stayed scalar, 7-15 us of a 4096 row (more than the row's tables), by how a build linked.
bool split_sign_magnitude(const int16_t* __restrict a, size_t k, uint8_t* __restrict mag,
                          uint8_t* __restrict negative) {
  uint8_t any = 0;
  for (size_t i = 0; i < k; ++i) {
    const int16_t v = a[i];
    const uint8_t n = v < 0;
    mag[i] = static_cast<uint8_t>(n ? -v : v);
    negative[i] = n;
    any |= n;
  }
  return any != 0;
}

// The raw op on uint8 rows, or on int16 sign-magnitude rows (|a| <= 255: checked by the binding).
template <class T>
void raw_run(const T* a, size_t m, size_t k, const SparqConfig& cfg, const uint8_t* panels,
             size_t n, int32_t* c, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(c, c + m * n, 0);
    return;
  }
  constexpr bool kSigned = std::is_same_v<T, int16_t>;
  const SparqPlan& plan = sparq_plan(cfg);
  const SparqKernels& kernels = sparq_kernels(isa);
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);
  // signed rows, per chunk: the row's magnitudes and its negative flags
  std::unique_ptr<uint8_t[]> scratch(kSigned ? new uint8_t[n_threads * 4 * 2 * k] : nullptr);
  bool signed_rows = false;
  if constexpr (kSigned) signed_rows = any_negative(a, m * k);
  run_blocks(
      m, k, panels, n, c, signed_rows, threads, isa,
      [&](size_t m0, size_t rows) { return any_negative(a + m0 * k, rows * k); },
      [&](size_t row, size_t chunk, uint8_t* pos, uint8_t* neg, uint64_t* high) {
        const T* ar = a + row * k;
        if constexpr (!kSigned) {
          kernels.tables24(plan, ar, k, pos);
          return false;
        } else {
          uint8_t* mag = scratch.get() + chunk * 2 * k;
          uint8_t* is_neg = mag + k;
          const bool row_neg = split_sign_magnitude(ar, k, mag, is_neg);
          return signed_row_tables(kernels, plan, mag, is_neg, row_neg, k, pos, neg, high);
        }
      },
      [](size_t, size_t, size_t, size_t) {});
}

}  // namespace

void sparq24_gemm_run(const uint8_t* a, size_t m, size_t k, const SparqConfig& cfg,
                      const uint8_t* panels, size_t n, int32_t* c, int threads, Isa isa) {
  raw_run(a, m, k, cfg, panels, n, c, threads, isa);
}

void sparq24_gemm_signed_run(const int16_t* a, size_t m, size_t k, const SparqConfig& cfg,
                             const uint8_t* panels, size_t n, int32_t* c, int threads, Isa isa) {
  raw_run(a, m, k, cfg, panels, n, c, threads, isa);
}

bool forward_sparq24(const float* x, size_t m, size_t k, const SparqConfig& cfg,
                     const uint8_t* panels, size_t n, const float* w_scale, const float* bias,
                     ActRange act, bool allow_negative, float* y, int threads, Isa isa) {
  if (m == 0 || n == 0) return false;
  // (an input without negative values keeps the unsigned layout: blocks twice as many rows)
  const bool negative = any_negative(x, m * k);
  if (negative && !allow_negative) return true;
  const SparqPlan& plan = sparq_plan(cfg);
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);
  // per chunk: the row preparation's scratch (k + 64 bytes), the row's magnitudes and its
  // negative flags (k each)
  const size_t chunk_bytes = 3 * k + 64;
  std::unique_ptr<uint8_t[]> q(new uint8_t[n_threads * 4 * chunk_bytes]);
  std::unique_ptr<float[]> sa(new float[m]);
  float amax = 0.0f;
  if (act.is_static) amax = std::max(act.hi < 0 ? -act.hi : act.hi, act.lo < 0 ? -act.lo : act.lo);
  const Epilogue ep{sa.get(), nullptr, false, w_scale, nullptr, bias};
  const SparqKernels& kernels = sparq_kernels(isa);
  int32_t* c = reinterpret_cast<int32_t*>(y);
  run_blocks(
      m, k, panels, n, c, negative, threads, isa,
      [&](size_t m0, size_t rows) { return any_negative(x + m0 * k, rows * k); },
      [&](size_t row, size_t chunk, uint8_t* pos, uint8_t* neg, uint64_t* high) {
        uint8_t* scratch = q.get() + chunk * chunk_bytes;
        uint8_t* mag = scratch + k + 64;
        uint8_t* is_neg = mag + k;
        bool row_neg = false;
        sa[row] = kernels.prep_row(plan, x + row * k, k, act.is_static ? &amax : nullptr,
                                   SparqRowFormat::magnitude, 0, scratch, mag, is_neg, &row_neg);
        return signed_row_tables(kernels, plan, mag, is_neg, row_neg, k, pos, neg, high);
      },
      [&](size_t m0, size_t m1, size_t n0, size_t n1) { epilogue_i32(ep, c, n, m0, m1, n0, n1, isa); });
  return false;
}

}  // namespace pq
