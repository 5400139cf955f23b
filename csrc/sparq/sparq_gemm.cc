// sparq_gemm driver: C = sparq(A) @ W.T on the int8 panel format.
//
// M is processed in blocks: each block's rows are trimmed once (threads over rows) into a buffer
// already in the int8 path's activation format (u8 for AVX-512 VNNI, AVX2 and scalar,
// s8 with the +128 bias for NEON), K zero-padded to a multiple of 4, and then the int8
// micro-kernel runs over every panel for that block, exactly as int8_gemm_run tiles it. The
// buffer holds at most kBlockBytes (or one micro-tile of rows), never a full copy of a large A.
// The rows come from a source: trimming uint8 activations, or decoding the compact format.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/scratch.h"
#include "quantize/act_quantize.h"
#include "int8_gemm/int8_gemm.h"
#include "int8_gemm/pair_fixes.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

constexpr size_t kBlockBytes = size_t{1} << 20;  // trimmed activations per block: ~L2 size
constexpr int kFixSlot = 8;  // thread_scratch slot of the pair route's fixes (forward/scratch.h)

// How forward_sparq writes a block's rows: plain uint8 (no negative input: the path's compute,
// with the pair route's fixes where it has one), offset rows (below), sign_xor rows split by the
// pair route (compute_sign_xor), or the path's wide format (compute_wide).
enum class BlockRows { plain, offset, sign, wide };

// Offset rows: a row is written as u = v + c through the plain u8 tile (no sign xor), c *
// colsum(W) taken back out of its sums (exact, wrapping int32); a u outside [0, 255] keeps the
// bound and leaves the excess as a fix of its own (Int8GroupFix; negative ones below 0).
//   pair route (AVX2): rows whose negative values are all small (a GELU's output: MiniLM's FFN2
//     inputs, c ~ 20-30 of 255), c = the row's largest negative magnitude <= kMaxRowOffset: u's
//     pairs then stay near the rows' (the route's fast tile), the few excesses (the row's largest
//     values, at most c each) are fixes before the pair route's;
//   VNNI (vpdpbusd exact on any u8, no pair limit): c = min(largest negative magnitude,
//     kMaxRowOffsetVnni), so LayerNorm outputs (c ~ 245) can run as v + 128 too, with a fix
//     for the k groups holding a magnitude past 127 (3-8% of MiniLM's), where the kernel's
//     Int8GemmKernels::offset_fix_share_max says fixes that many cost less than its xor.
// x86 only (sparq_offset_row_avx2 writes the rows: every path with the route has AVX2).
constexpr int kMaxRowOffset = 64;
constexpr int kMaxRowOffsetVnni = 128;

// Row x's largest magnitude (the guess of its scale: static_amax, the static range's, if
// nonzero) and its largest negative magnitude.
struct RowExtent {
  float amax, neg;
};
RowExtent row_extent(const float* x, size_t k, float static_amax) {
  RowExtent e{static_amax, 0.0f};
  for (size_t i = 0; i < k; ++i) {
    e.neg = std::max(e.neg, -x[i]);
    if (static_amax == 0.0f) e.amax = std::max(e.amax, std::fabs(x[i]));
  }
  return e;
}

// Whether row x's largest negative magnitude maps to an offset row's c <= kMaxRowOffset.
bool offset_fits(const float* x, size_t k, float static_amax) {
  const RowExtent e = row_extent(x, k, static_amax);
  return e.neg * 255.0f < (kMaxRowOffset - 1) * e.amax;  // (false for NaN)
}

// The share of row x's k groups an offset row with c = min(largest negative, kMaxRowOffsetVnni)
// would give a fix (1 for NaN).
float offset_fix_share(const float* x, size_t k, float static_amax) {
  const auto [amax, neg] = row_extent(x, k, static_amax);
  if (!(amax > 0.0f)) return amax == 0.0f ? 0.0f : 1.0f;
  const float c = std::min(neg, amax * (kMaxRowOffsetVnni / 255.0f));
  const float hi = amax - c, lo = -c;  // (in x's units: v + c inside [0, 255])
  size_t fixed = 0, groups = 0;
  for (size_t g = 0; g < k; g += kInt8GroupK, ++groups) {
    bool out = false;
    for (size_t i = g; i < std::min(k, g + kInt8GroupK); ++i) out = out || x[i] > hi || x[i] < lo;
    fixed += out;
  }
  return static_cast<float>(fixed) / static_cast<float>(groups);
}

// The pair route's fixes of a block of rows, in the calling thread's scratch slot kFixSlot.
PairFixes block_fixes(const Int8GemmKernels& kern, size_t rows_max, size_t k_pad) {
  return PairFixes(kern, rows_max, k_pad,
                   thread_scratch(PairFixes::storage_bytes(kern, rows_max, k_pad), kFixSlot));
}

// Produces activation row `row` (k trimmed uint8 values) into `dst`.
using RowSource = std::function<void(size_t row, uint8_t* dst)>;

// Writes row `row` into `dst` (k_pad elements of the path's format), zero padding.
void row_into(const RowSource& source, size_t row, size_t k, size_t k_pad, Int8AFormat fmt,
              void* dst, uint8_t* scratch) {
  if (fmt == Int8AFormat::u8) {
    uint8_t* d = static_cast<uint8_t*>(dst);
    source(row, d);
    std::fill(d + k, d + k_pad, uint8_t{0});
    return;
  }
  source(row, scratch);
  if (fmt == Int8AFormat::s16) {
    int16_t* d = static_cast<int16_t*>(dst);
    for (size_t i = 0; i < k; ++i) d[i] = scratch[i];
    std::fill(d + k, d + k_pad, int16_t{0});
  } else {  // s8: a - 128, undone by the +128 * colsum bias (padding multiplies zero weights)
    uint8_t* d = static_cast<uint8_t*>(dst);
    for (size_t i = 0; i < k; ++i) d[i] = scratch[i] ^ 0x80;
    std::fill(d + k, d + k_pad, uint8_t{0});
  }
}

void gemm_rows(const RowSource& source, size_t m, size_t k, const int8_t* panels,
               const int32_t* col_sums, size_t n, int32_t* c, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const Int8GemmKernels& kern = int8_gemm_kernels(isa);

  const size_t k_pad = round_up(k, kInt8GroupK);
  const size_t n_pad = round_up(n, kInt8PanelCols);
  const size_t elem = kern.a_format == Int8AFormat::s16 ? 2 : 1;
  const size_t row_bytes = k_pad * elem;
  size_t mc = std::max<size_t>(kern.mr, kBlockBytes / row_bytes / kern.mr * kern.mr);
  mc = std::min(mc, round_up(m, kern.mr));

  std::unique_ptr<uint8_t[]> buf(new uint8_t[mc * row_bytes + 64]);
  const bool scratch_needed = kern.a_format != Int8AFormat::u8;
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);
  std::unique_ptr<uint8_t[]> scratch(scratch_needed ? new uint8_t[n_threads * 4 * k + 64] : nullptr);

  // (the pair route's only: a VNNI path's fixes are offset rows', which this op has none of)
  PairFixes fixes = block_fixes(kern, kern.pair_split ? mc : 0, k_pad);
  std::vector<int32_t> bias;
  if (kern.a_format == Int8AFormat::s8) {
    bias.resize(n_pad);
    for (size_t j = 0; j < n_pad; ++j)
      bias[j] = static_cast<int32_t>(128u * static_cast<uint32_t>(col_sums[j]));
  }

  Int8GemmProblem prob{};
  prob.a = buf.get();
  prob.lda = k_pad;
  prob.panels = panels;
  prob.k_groups = k_pad / kInt8GroupK;
  prob.col_bias = bias.empty() ? nullptr : bias.data();
  prob.ldc = n;
  prob.n = n;

  for (size_t m0 = 0; m0 < m; m0 += mc) {
    const size_t rows = std::min(mc, m - m0);
    // Trim: a few row chunks per thread (one scratch row per chunk for non-u8 formats). The
    // block's first row decides whether the pair route splits its rows (uniformly random rows
    // all stay whole: trying each cost the raw op 2-6%).
    row_into(source, m0, k, k_pad, kern.a_format, buf.get(), scratch.get());
    const bool split_block = fixes.splits() && fixes.split(0, buf.get());
    const size_t chunks = std::min(rows - 1, n_threads * 4);
    if (chunks > 0) {
      parallel_for(chunks, threads, [&](size_t t) {
        uint8_t* scr = scratch_needed ? scratch.get() + t * k : nullptr;
        for (size_t r = 1 + (rows - 1) * t / chunks; r < 1 + (rows - 1) * (t + 1) / chunks; ++r) {
          row_into(source, m0 + r, k, k_pad, kern.a_format, buf.get() + r * row_bytes, scr);
          if (split_block) fixes.split(r, buf.get() + r * row_bytes);
        }
      });
    }
    // Multiply: the shared (panel x row range) task split (core/gemm_tasks.h).
    prob.c = c + m0 * n;
    const TaskGrid grid(int8_task_shape(kern, rows, n, k_pad, row_bytes), threads);
    parallel_for(grid.tasks(), threads, [&](size_t t) {
      size_t panel, r0, r1;
      grid.task(t, panel, r0, r1);
      kern.compute(prob, r0, r1, panel, panel + 1);
      if (split_block) fixes.add(r0, r1, panels, panel, prob.c, n, n);
    });
  }
}

}  // namespace

void sparq_gemm_run(const uint8_t* a, size_t m, size_t k, const SparqConfig& cfg,
                    const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                    int threads, Isa isa) {
  const SparqPlan& plan = sparq_plan(cfg);
  const SparqTrimRowFn trim = sparq_kernels(isa).trim_row;
  gemm_rows([&](size_t row, uint8_t* dst) { trim(plan, a + row * k, k, dst); }, m, k, panels,
            col_sums, n, c, threads, isa);
}

void sparq_gemm_encoded_run(const uint8_t* payload, size_t m, size_t k, const SparqConfig& cfg,
                            const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                            int threads, Isa isa) {
  const size_t row_bytes = sparq_encoded_row_bytes(cfg, k);
  gemm_rows([&](size_t row, uint8_t* dst) { sparq_decode_row(cfg, payload + row * row_bytes, k, dst); },
            m, k, panels, col_sums, n, c, threads, isa);
}

// SparqConfig forward: per block of rows, quantize |x| to uint8, trim once (pairs judged on
// magnitudes), and write the signed trimmed values in the int8 path's activation format. int16
// holds +-255: one GEMM. A path with a 9-bit kernel (compute_wide) takes them in its
// Int8WideFormat: u = v + 256 as top 7 and low 2 bits, the 256 * colsum taken off by the column
// bias (AVX2's int16 tile), or |v| and sign bytes, the row's negative magnitudes added back by a
// row bias (the VNNI kernels, zmm and ymm): one GEMM. AVX2 writes signed blocks as |v| and sign
// bytes too, split by its pair route (compute_sign_xor), and keeps its int16 tile for blocks too
// dense in large pairs (BlockRows). Otherwise uint8/int8 formats cannot hold them: the
// block's positive and negative parts are two passes of the micro-kernel (only when the block
// has a negative input), and their difference is exact (wrapping int32). Then the shared
// epilogue per task.
bool forward_sparq(const float* x, size_t m, size_t k, const SparqConfig& cfg,
                   const int8_t* panels, const int32_t* col_sums, size_t n, const float* w_scale,
                   const float* bias, ActRange act, float* y, int threads, Isa isa) {
  if (m == 0 || n == 0) return false;
  const Int8GemmKernels& best = int8_gemm_kernels(isa);
  // (AMX at decode: SPARQ's signed rows 1.08 vs 0.62 ms on the zmm tile, 4096 -> 4096)
  const Int8GemmKernels& kern =
      best.small_rows && m < best.small_rows_below ? *best.small_rows : best;
  const SparqPlan& plan = sparq_plan(cfg);
  const SparqPrepRowFn prep = sparq_kernels(isa).prep_row;
  const size_t k_pad = round_up(k, kInt8GroupK);
  const size_t n_pad = round_up(n, kInt8PanelCols);
  const bool s16 = kern.a_format == Int8AFormat::s16;
  // s8 format: value - 128 (xor 0x80), undone by the +128 * colsum bias of each pass
  const uint8_t flip = kern.a_format == Int8AFormat::s8 ? 0x80 : 0x00;
  const bool wide_kernel = !s16 && kern.compute_wide != nullptr;
  const bool sign_xor = wide_kernel && kern.wide_format == Int8WideFormat::sign_xor;
  const bool offset9 = wide_kernel && kern.wide_format == Int8WideFormat::offset9;
  const size_t elem = s16 ? 2 : 1;
  // row stride: the kernel's row alignment if it asks for one (AMX tile rows straddling cache
  // lines run at half speed); the bytes past k_pad are never read
  const size_t row_bytes =
      kern.a_row_align ? round_up(k_pad * elem, kern.a_row_align) : k_pad * elem;
  size_t mc = std::max<size_t>(kern.mr, kBlockBytes / row_bytes / kern.mr * kern.mr);
  mc = std::min(mc, round_up(m, kern.mr));
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);

  uint8_t* pos = static_cast<uint8_t*>(thread_scratch(mc * row_bytes, 0));
  uint8_t* neg = s16 ? nullptr : static_cast<uint8_t*>(thread_scratch(mc * row_bytes, 1));
  int32_t* c_neg = s16 || wide_kernel ? nullptr
                                        : static_cast<int32_t*>(thread_scratch(mc * n * 4, 2));
  float* sa = static_cast<float*>(thread_scratch(m * sizeof(float), 3));
  // The pair route (AVX2): plain blocks, and signed ones where the path has compute_sign_xor
  PairFixes fixes = block_fixes(kern, mc, k_pad);
  const bool pair_route = fixes.splits() && wide_kernel;
  // signed blocks as sign_xor rows through the u8 tile with the pair route (AVX2), or as
  // offset rows where every negative value is small; on the VNNI kernels (sign_xor wide format,
  // fixes without the pair route) as offset rows where their fixes are few
  const bool sign_route = pair_route && kern.compute_sign_xor != nullptr;
#if defined(PQ_HAVE_X86)
  constexpr bool kOffsetRows = true;  // (sparq_offset_row_avx2 writes them)
#else
  constexpr bool kOffsetRows = false;
#endif
  const bool vnni_offset = kOffsetRows && sign_xor && !pair_route && fixes.active() &&
                           kern.offset_fix_share_max > 0.0f;
  const bool offset_route = (kOffsetRows && sign_route) || vnni_offset;
  std::vector<uint8_t> trimmed(n_threads * 4 * (k + 64));
  std::vector<int32_t> row_off(offset_route ? mc : 0);  // offset rows' c
  std::vector<Int8GroupFix> pre;  // offset rows' own fixes, a row's room per chunk (when taken)

  float amax = 0.0f;
  if (act.is_static) amax = std::max(act.hi < 0 ? -act.hi : act.hi, act.lo < 0 ? -act.lo : act.lo);
  std::vector<int32_t> bias_s8, bias_wide, row_bias(sign_xor || sign_route ? mc : 0);
  if (offset9) {  // -256 * colsum (wrapping, like the sums)
    bias_wide.resize(n_pad);
    for (size_t j = 0; j < n_pad; ++j)
      bias_wide[j] = static_cast<int32_t>(0u - 256u * static_cast<uint32_t>(col_sums[j]));
  }
  if (kern.a_format == Int8AFormat::s8) {
    bias_s8.resize(n_pad);
    for (size_t j = 0; j < n_pad; ++j)
      bias_s8[j] = static_cast<int32_t>(128u * static_cast<uint32_t>(col_sums[j]));
  }
  Int8GemmProblem prob{};
  prob.lda = row_bytes / elem;
  prob.panels = panels;
  prob.k_groups = k_pad / kInt8GroupK;
  prob.col_bias = bias_s8.empty() ? nullptr : bias_s8.data();
  prob.ldc = n;
  prob.n = n;
  Int8GemmProblem prob_neg = prob;
  const Epilogue ep{sa, nullptr, false, w_scale, nullptr, bias};
  int32_t* c = reinterpret_cast<int32_t*>(y);
  bool saw_negative = false;

  for (size_t m0 = 0; m0 < m; m0 += mc) {
    const size_t rows = std::min(mc, m - m0);
    const size_t chunks = std::min(rows, n_threads * 4);
    std::vector<uint8_t> chunk_neg(chunks, 0);
    const TaskGrid grid(int8_task_shape(kern, rows, n, k_pad, row_bytes), threads);
    // The rows' format is chosen per block before they are written: a block without negative
    // inputs keeps plain uint8 rows (and the int8 kernel's fast route where it fits), unless
    // the kernel's wide route is the faster one for the rows each task gets anyway (AVX2, Zen
    // 4's AVX2 tier: from 8 rows on 0.7-0.9x the time on post-ReLU rows, weights in cache or
    // from DRAM; at 4-6 rows 0.75x in cache but 1.1x from DRAM, so they stay split). With the
    // pair route only negative inputs make a block signed (post-ReLU rows: 0.6-0.7x the wide
    // tile's time, AVX2-only tier of an Intel Xeon, 3x3 convs of 64-256 channels): sign_xor
    // rows split by the pair route where the kernel has compute_sign_xor, else the wide format.
    // Three of the block's rows guess (a pass over all its floats cost a third of the pair
    // route's gain); a negative value in another row has the block written again.
    const bool wide_faster = kern.wide_faster_from_rows != 0 &&
                             div_round_up(rows, kern.mr) / grid.m_chunks() * kern.mr >=
                                 kern.wide_faster_from_rows;
    const BlockRows if_negative = sign_route ? BlockRows::sign : BlockRows::wide;
    BlockRows mode = wide_kernel && !pair_route && wide_faster ? BlockRows::wide : BlockRows::plain;
    if (pair_route) {  // its first, middle and last rows (a left-padded batch's first are 0)
      bool negative = false, small = offset_route;
      for (size_t r : {size_t{0}, rows / 2, rows - 1}) {
        if (!any_negative(x + (m0 + r) * k, k)) continue;
        negative = true;
        small = small && offset_fits(x + (m0 + r) * k, k, act.is_static ? amax : 0.0f);
      }
      if (negative) mode = small ? BlockRows::offset : if_negative;
    } else if (wide_kernel && mode == BlockRows::plain) {
      parallel_for(chunks, threads, [&](size_t t) {
        const size_t r0 = m0 + rows * t / chunks, r1 = m0 + rows * (t + 1) / chunks;
        chunk_neg[t] = any_negative(x + r0 * k, (r1 - r0) * k);
      });
      for (uint8_t v : chunk_neg)
        if (v) mode = BlockRows::wide;
      if (mode == BlockRows::wide && vnni_offset) {
        // the mean share of fixed k groups over up to 16 rows scattered through the block (a
        // padded batch of sentences repeats every sequence length: rows at an even stride,
        // or its first, middle and last, found MiniLM's q/k/v inputs at 1% where the mean is
        // 5.6%)
        const size_t probes = std::min<size_t>(rows, 16);
        float share = 0.0f;
        for (size_t i = 0; i < probes; ++i) {
          const size_t r = rows <= 16 ? i : (i * size_t{2654435761u} + 7) % rows;
          share += offset_fix_share(x + (m0 + r) * k, k, act.is_static ? amax : 0.0f);
        }
        if (share <= kern.offset_fix_share_max * static_cast<float>(probes))
          mode = BlockRows::offset;
      }
    }
    std::vector<size_t> chunk_whole(chunks, 0);  // rows left whole by the pair route
    std::vector<uint8_t> chunk_not_offset(chunks, 0);  // an offset block's row that is not one
    if (mode == BlockRows::offset && pre.empty())  // (later passes never turn a block offset)
      pre.resize(n_threads * 4 * fixes.row_cap());
    auto prep_block = [&](size_t t) {
      uint8_t* tq = trimmed.data() + t * (k + 64);
      bool has_neg = false, not_offset = false;
      size_t whole = 0;
      // (split_u8 kernels take the split rows in their wide pass too)
      const SparqRowFormat fmt = s16                                       ? SparqRowFormat::s16
                                 : mode == BlockRows::sign ||
                                           mode == BlockRows::offset       ? SparqRowFormat::sign
                                 : mode == BlockRows::wide && sign_xor     ? SparqRowFormat::sign
                                 : mode == BlockRows::wide && offset9      ? SparqRowFormat::wide
                                                                           : SparqRowFormat::split;
      for (size_t r = rows * t / chunks; r < rows * (t + 1) / chunks; ++r) {
        const float* xr = x + (m0 + r) * k;
        uint8_t* dp = pos + r * row_bytes;
        uint8_t* dn = s16 ? nullptr : neg + r * row_bytes;
        bool row_neg = false;
        sa[m0 + r] = prep(plan, xr, k, act.is_static ? &amax : nullptr, fmt, flip, tq, dp, dn,
                          &row_neg);
        has_neg = has_neg || row_neg;
        if (s16) {
          std::fill(reinterpret_cast<int16_t*>(dp) + k, reinterpret_cast<int16_t*>(dp) + k_pad,
                    int16_t{0});
        } else {
          std::fill(dp + k, dp + k_pad, uint8_t{0});  // zero weights there
          std::fill(dn + k, dn + k_pad, uint8_t{0});
        }
        if (pair_route && mode == BlockRows::plain) whole += !fixes.split(r, dp);
        if (mode == BlockRows::sign) whole += !fixes.split(r, dp, dn);
        if (mode == BlockRows::offset && !not_offset) {
          Int8GroupFix* own = pre.data() + t * fixes.row_cap();
          size_t n_own = 0;
#if defined(PQ_HAVE_X86)
          row_off[r] = sparq_offset_row_avx2(dp, dn, k,
                                             vnni_offset ? kMaxRowOffsetVnni : kMaxRowOffset,
                                             vnni_offset, own, fixes.row_cap(), &n_own);
#endif
          not_offset = row_off[r] < 0;
          if (!not_offset) whole += !fixes.split_after(r, dp, own, n_own);
        }
        if (fmt == SparqRowFormat::sign && mode != BlockRows::offset)
          row_bias[r] = sign_xor_row_bias(dp, dn, k);
      }
      chunk_neg[t] = has_neg;
      chunk_whole[t] = whole;
      chunk_not_offset[t] = not_offset;
    };
    parallel_for(chunks, threads, prep_block);
    // Pair-route blocks written again: plain ones with a negative value (needed), or with rows
    // too dense in large pairs for the pair route past 1/8 of the block where the wide tile is
    // the faster one
    while ((pair_route || vnni_offset) && mode != BlockRows::wide) {
      size_t whole = 0;
      bool neg_seen = false, not_offset = false;
      for (size_t t = 0; t < chunks; ++t) {
        whole += chunk_whole[t];
        neg_seen = neg_seen || chunk_neg[t];
        not_offset = not_offset || chunk_not_offset[t];
      }
      const BlockRows next = mode == BlockRows::plain && neg_seen       ? if_negative
                             : mode == BlockRows::offset && not_offset  ? if_negative
                             : wide_faster && whole * 8 > rows         ? BlockRows::wide
                                                                       : mode;
      if (next == mode) break;
      mode = next;
      parallel_for(chunks, threads, prep_block);
    }
    const bool fix_block = (pair_route && mode != BlockRows::wide) || mode == BlockRows::offset;
    size_t whole = 0;
    for (size_t w : chunk_whole) whole += w;
    // every row split: the tiles skip their check
    prob.pair_safe = pair_route && fix_block && whole == 0;
    bool block_neg = false;
    for (uint8_t v : chunk_neg) block_neg = block_neg || v;
    saw_negative = saw_negative || block_neg;
    const bool two_pass = !s16 && !wide_kernel && block_neg;
    const bool wide_block = mode == BlockRows::wide;
    const Int8ComputeFn compute = wide_block                ? kern.compute_wide
                                  : mode == BlockRows::sign ? kern.compute_sign_xor
                                                            : kern.compute;
    prob.a = pos;
    prob.a_low = neg;
    prob.col_bias = wide_block && offset9 ? bias_wide.data()
                    : bias_s8.empty()        ? nullptr
                                             : bias_s8.data();
    prob.row_bias = mode == BlockRows::sign || (wide_block && sign_xor) ? row_bias.data() : nullptr;
    prob.c = c + m0 * n;
    prob_neg.a = neg;
    prob_neg.c = c_neg;
    parallel_for(grid.tasks(), threads, [&](size_t t) {
      size_t panel, r0, r1;
      grid.task(t, panel, r0, r1);
      const size_t n0 = panel * kInt8PanelCols, n1 = std::min(n, n0 + kInt8PanelCols);
      compute(prob, r0, r1, panel, panel + 1);
      if (fix_block) fixes.add(r0, r1, panels, panel, prob.c, n, n);
      if (mode == BlockRows::offset) {  // less c * colsum (wrapping, like the sums)
        for (size_t r = r0; r < r1; ++r) {
          const uint32_t off = static_cast<uint32_t>(row_off[r]);
          uint32_t* dst = reinterpret_cast<uint32_t*>(prob.c + r * n);
          for (size_t j = n0; j < n1; ++j) dst[j] -= off * static_cast<uint32_t>(col_sums[j]);
        }
      }
      if (two_pass) {
        kern.compute(prob_neg, r0, r1, panel, panel + 1);
        for (size_t r = r0; r < r1; ++r) {
          uint32_t* dst = reinterpret_cast<uint32_t*>(prob.c + r * n);
          const uint32_t* src = reinterpret_cast<const uint32_t*>(c_neg + r * n);
          for (size_t j = n0; j < n1; ++j) dst[j] -= src[j];
        }
      }
      if (w_scale) epilogue_i32(ep, c, n, m0 + r0, m0 + r1, n0, n1, isa);
    });
  }
  return saw_negative;
}

void sparq_gemm_signed_run(const int16_t* a, size_t m, size_t k, const SparqConfig& cfg,
                           const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                           int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  // |a| * (1 / 1) + 0.5 truncates back to |a| (exact in float): the forward's own rows
  const ActRange identity{true, -255.0f, 255.0f};
  const size_t rows_per_chunk = std::max<size_t>(1, (size_t{4} << 20) / k);  // 16 MiB of floats
  std::vector<float> x(std::min(m, rows_per_chunk) * k);
  for (size_t r0 = 0; r0 < m; r0 += rows_per_chunk) {
    const size_t rows = std::min(rows_per_chunk, m - r0);
    const size_t chunks = rows >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
    parallel_for(chunks, threads, [&](size_t t) {
      for (size_t i = rows * t / chunks * k; i < rows * (t + 1) / chunks * k; ++i)
        x[i] = static_cast<float>(a[r0 * k + i]);
    });
    forward_sparq(x.data(), rows, k, cfg, panels, col_sums, n, nullptr, nullptr, identity,
                  reinterpret_cast<float*>(c + r0 * n), threads, isa);
  }
}

}  // namespace pq
