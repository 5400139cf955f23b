// Dispatch table and driver: prepares activations (zero padding to K_pad, row sums for the offset
// correction), threads over (panel, M-range) tasks and applies the portable epilogue, so every
// path shares it and only the tile (raw u-code sums) is ISA-specific.
#if defined(__x86_64__)
#include <emmintrin.h>
#endif
#include <algorithm>
#include <memory>
#include <vector>

#include "core/gemm_tasks.h"
#include "core/kernel_table.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "lowbit_gemm/panel_scales.h"

namespace pq {

const LowbitGemmKernels& lowbit_gemm_kernels(Isa isa) {
  return active_impl<LowbitGemmKernels>(KernelFamily::lowbit_gemm, isa);  // core/kernel_table.cc
}

namespace {

constexpr size_t kMaxMR = 64;  // AMX's four 16-row tiles
static_assert(kLowbitAvx2GroupedRows <= kMaxMR && kLowbitVnni256GroupedRows <= kMaxMR,
              "grouped-tile calls write at most kMaxMR rows of `out`");
// k-groups per K block when several M tiles reuse a panel block: 1024 k = 32 KiB of W4 codes.
constexpr size_t kBlockGroups = 256;

// Sum of len unsigned bytes (modulo 2^32 like the results): psadbw against zero, 16 bytes per
// operation (SSE2, in every x86-64 build); the plain loop was 3% of a W4 forward at K = 384.
inline uint32_t byte_sum(const uint8_t* p, size_t len) {
  uint64_t s = 0;
  size_t i = 0;
#if defined(__x86_64__)
  __m128i acc = _mm_setzero_si128();
  for (; i + 16 <= len; i += 16)
    acc = _mm_add_epi64(acc, _mm_sad_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)),
                                          _mm_setzero_si128()));
  s = static_cast<uint64_t>(_mm_cvtsi128_si64(acc)) +
      static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc)));
#endif
  for (; i < len; ++i) s += p[i];
  return static_cast<uint32_t>(s);
}

struct Prepared {
  const uint8_t* a;
  size_t lda;
  std::unique_ptr<uint8_t[]> buf;
  std::vector<uint32_t> sums;  // [m][n_blocks]: activation sums per K block (group)
};

// Activations padded to k_pad (in place when K is already a multiple of 4) and their sums per
// block of `block_k` columns (wrapping uint32, like the results).
Prepared prepare(const uint8_t* a, size_t m, size_t k, bool a_signed, size_t block_k) {
  Prepared p;
  const size_t k_pad = round_up(k, kLowbitGroupK);
  if (k == k_pad) {
    p.a = a;
    p.lda = k;
  } else {
    p.buf.reset(new uint8_t[m * k_pad]);
    for (size_t r = 0; r < m; ++r) {
      uint8_t* d = p.buf.get() + r * k_pad;
      for (size_t i = 0; i < k; ++i) d[i] = a[r * k + i];
      for (size_t i = k; i < k_pad; ++i) d[i] = 0;
    }
    p.a = p.buf.get();
    p.lda = k_pad;
  }
  const size_t nb = div_round_up(k, block_k);
  p.sums.assign(m * nb, 0);
  for (size_t r = 0; r < m; ++r) {
    const uint8_t* row = a + r * k;
    for (size_t b = 0; b < nb; ++b) {
      const size_t i1 = (b + 1) * block_k < k ? (b + 1) * block_k : k;
      if (!a_signed) {
        p.sums[r * nb + b] = byte_sum(row + b * block_k, i1 - b * block_k);
        continue;
      }
      uint32_t su = 0;
      // chunks of 2^16 keep the int32 partial sum exact (|s| <= 128 * 2^16) and vectorizable
      for (size_t i0 = b * block_k; i0 < i1; i0 += 65536) {
        const size_t e = i1 - i0 < 65536 ? i1 : i0 + 65536;
        int32_t s = 0;
        for (size_t i = i0; i < e; ++i) s += static_cast<int8_t>(row[i]);
        su += static_cast<uint32_t>(s);
      }
      p.sums[r * nb + b] = su;
    }
  }
  return p;
}

// Runs fn(panel, m0, m1) over the shared (panel x row range) task split (core/gemm_tasks.h);
// weight_bytes: all panels' codes and scales, out_row_bytes: one output row.
template <typename Fn>
void run_tasks(size_t m, size_t n, size_t mr, size_t weight_bytes, size_t out_row_bytes,
               int threads, Fn&& fn) {
  TaskShape shape;
  shape.m = m;
  shape.n_panels = div_round_up(n, kLowbitPanelCols);
  shape.mr = mr;
  shape.out_row_bytes = out_row_bytes;
  shape.weight_bytes = weight_bytes;
  const TaskGrid grid(shape, threads);
  parallel_for(grid.tasks(), threads, [&](size_t t) {
    size_t panel, m0, m1;
    grid.task(t, panel, m0, m1);
    fn(panel, m0, m1);
  });
}

}  // namespace

void lowbit_gemm_run(const uint8_t* a, size_t m, size_t k, bool a_signed, const uint8_t* panels,
                     size_t n, int bits, int32_t* c, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const LowbitGemmKernels& kern = lowbit_gemm_kernels(isa);
  const LowbitTileFn tile = bits == 4 ? kern.tile4 : kern.tile2;
  const size_t k_groups = round_up(k, kLowbitGroupK) / kLowbitGroupK;
  const size_t gbytes = lowbit_group_bytes(bits);
  const uint32_t offset = 1u << (bits - 1);
  const Prepared p = prepare(a, m, k, a_signed, k);
  // Rows one tile pass takes (decode): stream the whole panel in one pass, no K blocking. (Under
  // 16 rows AMX's raw tiles are 6-row zmm passes: more rows than that re-read the panel, so
  // block K then; from 16 rows its tiles unpack each K block's codes once per call.)
  const size_t block = m <= std::min<size_t>(kern.mr, 6) ? k_groups : kBlockGroups;

  const size_t code_bytes = div_round_up(n, kLowbitPanelCols) * k_groups * gbytes;
  run_tasks(m, n, kern.mr, code_bytes, n * sizeof(int32_t), threads,
            [&](size_t panel, size_t m0, size_t m1) {
    alignas(64) int32_t sums[kMaxMR * 64];
    const size_t col0 = panel * kLowbitPanelCols;
    const size_t nc = n - col0 < kLowbitPanelCols ? n - col0 : kLowbitPanelCols;
    const uint8_t* bp = panels + panel * k_groups * gbytes;
    for (size_t kb = 0; kb < k_groups; kb += block) {
      const size_t groups = k_groups - kb < block ? k_groups - kb : block;
      for (size_t mt = m0; mt < m1; mt += kern.mr) {
        const size_t mr = m1 - mt < kern.mr ? m1 - mt : kern.mr;
        tile(p.a + mt * p.lda + kb * kLowbitGroupK, p.lda, mr, bp + kb * gbytes, groups, a_signed,
             sums);
        for (size_t r = 0; r < mr; ++r) {
          uint32_t* dst = reinterpret_cast<uint32_t*>(c + (mt + r) * n + col0);
          const int32_t* s = sums + r * 64;
          if (kb == 0) {
            const uint32_t corr = offset * p.sums[mt + r];
            for (size_t j = 0; j < nc; ++j) dst[j] = static_cast<uint32_t>(s[j]) - corr;
          } else {
            for (size_t j = 0; j < nc; ++j) dst[j] += static_cast<uint32_t>(s[j]);
          }
        }
      }
    }
  });
}

void lowbit_gemm_grouped_run(const uint8_t* a, size_t m, size_t k, bool a_signed,
                             const uint8_t* panels, size_t n, int bits, size_t group_size,
                             const float* scales, float* c, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const LowbitGemmKernels& kern = lowbit_gemm_kernels(isa);
  const LowbitTileFn tile = bits == 4 ? kern.tile4 : kern.tile2;
  const size_t k_groups = round_up(k, kLowbitGroupK) / kLowbitGroupK;
  const size_t gbytes = lowbit_group_bytes(bits);
  const uint32_t offset = 1u << (bits - 1);
  const size_t n_groups = div_round_up(k, group_size);
  const size_t block = group_size / kLowbitGroupK;  // one quantization group per tile call
  const Prepared p = prepare(a, m, k, a_signed, group_size);

  const LowbitGemvGroupedFn gemv = bits == 4 ? kern.gemv_grouped4 : kern.gemv_grouped2;
  if (m == 1 && gemv) {  // decode: fused kernel, scales read in place
    std::vector<uint32_t> corr(n_groups);
    for (size_t g = 0; g < n_groups; ++g) corr[g] = offset * p.sums[g];
    const size_t n_panels = div_round_up(n, kLowbitPanelCols);
    const size_t scratch_floats = round_up(n_groups, 16) * kLowbitPanelCols;
    parallel_for(n_panels, threads, [&](size_t panel) {
      alignas(64) float out[64];
      // transposed scales of one panel; reused across the calls this thread runs
      thread_local std::unique_ptr<float[], void (*)(void*)> scratch(nullptr, std::free);
      thread_local size_t scratch_size = 0;
      if (scratch_size < scratch_floats) {
        scratch.reset(static_cast<float*>(std::aligned_alloc(64, scratch_floats * sizeof(float))));
        scratch_size = scratch_floats;
      }
      const size_t col0 = panel * kLowbitPanelCols;
      const size_t nc = n - col0 < kLowbitPanelCols ? n - col0 : kLowbitPanelCols;
      const bool prefetch_next = col0 + 2 * kLowbitPanelCols <= n;
      gemv(p.a, panels + panel * k_groups * gbytes, k_groups, block, a_signed, corr.data(),
           scales + col0 * n_groups, n_groups, nc, prefetch_next, scratch.get(), out);
      for (size_t j = 0; j < nc; ++j) c[col0 + j] = out[j];
    });
    return;
  }

  const size_t weight_bytes =
      div_round_up(n, kLowbitPanelCols) * k_groups * gbytes + n * n_groups * sizeof(float);
  run_tasks(m, n, kern.mr, weight_bytes, n * sizeof(float), threads,
            [&](size_t panel, size_t m0, size_t m1) {
    alignas(64) int32_t sums[kMaxMR * 64];
    alignas(64) float out[kMaxMR * 64];
    uint32_t corr[kMaxMR];
    const size_t col0 = panel * kLowbitPanelCols;
    const size_t nc = n - col0 < kLowbitPanelCols ? n - col0 : kLowbitPanelCols;
    const uint8_t* bp = panels + panel * k_groups * gbytes;
    // This panel's scales, transposed to [group][64 columns] (zero for padding columns).
    std::vector<float> sc(n_groups * kLowbitPanelCols, 0.0f);
    for (size_t j = 0; j < nc; ++j)
      for (size_t g = 0; g < n_groups; ++g)
        sc[g * kLowbitPanelCols + j] = scales[(col0 + j) * n_groups + g];
    for (size_t mt = m0; mt < m1; mt += kern.mr) {
      const size_t mr = m1 - mt < kern.mr ? m1 - mt : kern.mr;
      for (size_t i = 0; i < mr * 64; ++i) out[i] = 0.0f;
      for (size_t g = 0; g < n_groups; ++g) {
        const size_t kb = g * block;
        const size_t groups = k_groups - kb < block ? k_groups - kb : block;
        tile(p.a + mt * p.lda + kb * kLowbitGroupK, p.lda, mr, bp + kb * gbytes, groups, a_signed,
             sums);
        for (size_t r = 0; r < mr; ++r) corr[r] = offset * p.sums[(mt + r) * n_groups + g];
        kern.group_epilogue(sums, mr, corr, sc.data() + g * kLowbitPanelCols, out);
      }
      for (size_t r = 0; r < mr; ++r)
        for (size_t j = 0; j < nc; ++j) c[(mt + r) * n + col0 + j] = out[r * 64 + j];
    }
  });
}

bool lowbit_panel_scales(const float* scales, size_t n, size_t n_groups, uint16_t* out) {
  const size_t n_pad = round_up(n, kLowbitPanelCols);
  for (size_t col = 0; col < n_pad; ++col) {
    const size_t panel = col / kLowbitPanelCols, lane = col % kLowbitPanelCols;
    uint16_t* dst = out + panel * n_groups * kLowbitPanelCols + panel_scale_slot(lane);
    for (size_t g = 0; g < n_groups; ++g) {
      uint32_t bits = 0;
      if (col < n) std::memcpy(&bits, scales + col * n_groups + g, sizeof bits);
      if (bits & 0xffffu) return false;
      dst[g * kLowbitPanelCols] = static_cast<uint16_t>(bits >> 16);
    }
  }
  return true;
}

namespace {

// lowbit_grouped_forward_run's work, prepared: the offset corrections per (row, group) and the
// path (the decode GEMV over panels, or tiles over the shared task split).
class LowbitForwardTasks final : public TaskSet {
 public:
  LowbitForwardTasks(const uint8_t* a, size_t lda, size_t m, size_t k, const uint8_t* panels,
                     size_t n, int bits, size_t group_size, const uint16_t* panel_scales,
                     const Epilogue& ep, float* y, int threads, Isa isa)
      : a_(a), lda_(lda), m_(m), n_(n), panels_(panels), panel_scales_(panel_scales), ep_(ep),
        y_(y), isa_(isa), kern_(lowbit_gemm_kernels(isa)),
        k_groups_(round_up(k, kLowbitGroupK) / kLowbitGroupK), gbytes_(lowbit_group_bytes(bits)),
        n_groups_(div_round_up(k, group_size)), block_(group_size / kLowbitGroupK),
        panel_slots_(n_groups_ * kLowbitPanelCols), n_panels_(div_round_up(n, kLowbitPanelCols)),
        tile_(bits == 4 ? kern_.tile4 : kern_.tile2),
        tile_grouped_(bits == 4 ? kern_.tile_grouped4 : kern_.tile_grouped2),
        step_(tile_grouped_ && kern_.grouped_mr ? kern_.grouped_mr : kern_.mr),
        gemv_(m == 1 ? (bits == 4 ? kern_.gemv_panel4 : kern_.gemv_panel2) : nullptr),
        grid_(shape(m ? m : 1), threads) {  // (m = 0: no tasks; the grid needs a row)
    // offset correction per (row, group): offset * activation sum (wrapping uint32)
    const uint32_t offset = 1u << (bits - 1);
    corr_.resize(m * n_groups_);
    for (size_t r = 0; r < m; ++r)
      for (size_t g = 0; g < n_groups_; ++g) {
        const uint8_t* src = a + r * lda + g * group_size;
        const size_t len = (g + 1) * group_size < k ? group_size : k - g * group_size;
        corr_[r * n_groups_ + g] = offset * byte_sum(src, len);
      }
  }

  size_t tasks() const override {
    if (m_ == 0 || n_ == 0) return 0;
    return gemv_ ? n_panels_ : grid_.tasks();
  }

  void run(size_t t) const override {
    if (gemv_) {  // decode: fused kernel, scales read in place
      alignas(64) float out[64];
      const size_t col0 = t * kLowbitPanelCols;
      const size_t nc = n_ - col0 < kLowbitPanelCols ? n_ - col0 : kLowbitPanelCols;
      gemv_(a_, panels_ + t * k_groups_ * gbytes_, k_groups_, block_, false, corr_.data(),
            panel_scales_ + t * panel_slots_, n_groups_, out);
      epilogue_row_f32(ep_, 0, col0, nc, out, y_ + col0, isa_);
      return;
    }
    size_t panel, m0, m1;
    grid_.task(t, panel, m0, m1);
    alignas(64) int32_t sums[kMaxMR * 64];
    alignas(64) float out[kMaxMR * 64];
    uint32_t cr[kMaxMR];
    const size_t col0 = panel * kLowbitPanelCols;
    const size_t nc = n_ - col0 < kLowbitPanelCols ? n_ - col0 : kLowbitPanelCols;
    const uint8_t* bp = panels_ + panel * k_groups_ * gbytes_;
    const uint16_t* sc = panel_scales_ + panel * panel_slots_;
    std::vector<float> sc_f32;  // the tile + epilogue path's float scales, [group][64 columns]
    if (!tile_grouped_) {
      sc_f32.resize(panel_slots_);
      for (size_t g = 0; g < n_groups_; ++g)
        widen_panel_scales(sc + g * kLowbitPanelCols, sc_f32.data() + g * kLowbitPanelCols);
    }
    for (size_t mt = m0; mt < m1; mt += step_) {
      const size_t mr = m1 - mt < step_ ? m1 - mt : step_;
      if (tile_grouped_ && n_groups_ > 0) {  // group sums and scales applied inside the kernel,
        // which writes out on the first group (no zeroing pass: a memset per tile was 6% of a
        // W4 g64 forward at 1024 x 384 -> 1536 on Zen 4)
        tile_grouped_(a_ + mt * lda_, lda_, mr, bp, k_groups_, block_, corr_.data() + mt * n_groups_,
                      n_groups_, sc, out);
      } else {  // tile + float epilogue per quantization group
        for (size_t i = 0; i < mr * 64; ++i) out[i] = 0.0f;
        for (size_t g = 0; g < n_groups_; ++g) {
          const size_t kb = g * block_;
          const size_t groups = k_groups_ - kb < block_ ? k_groups_ - kb : block_;
          tile_(a_ + mt * lda_ + kb * kLowbitGroupK, lda_, mr, bp + kb * gbytes_, groups, false,
                sums);
          for (size_t r = 0; r < mr; ++r) cr[r] = corr_[(mt + r) * n_groups_ + g];
          kern_.group_epilogue(sums, mr, cr, sc_f32.data() + g * kLowbitPanelCols, out);
        }
      }
      epilogue_rows_f32(ep_, mt, mt + mr, col0, nc, out, 64, y_ + mt * n_ + col0, n_, isa_);
    }
  }

 private:
  TaskShape shape(size_t m) const {
    TaskShape s;
    s.m = m;
    s.n_panels = n_panels_ ? n_panels_ : 1;  // (n = 0: no tasks; the grid needs a panel)
    s.mr = kern_.mr;  // tasks split rows as for the raw tile; a task's rows go step_ at a time
    s.out_row_bytes = n_ * sizeof(float);
    s.weight_bytes = n_panels_ * (k_groups_ * gbytes_ + panel_slots_ * sizeof(uint16_t));
    return s;
  }

  const uint8_t* a_;
  size_t lda_, m_, n_;
  const uint8_t* panels_;
  const uint16_t* panel_scales_;
  Epilogue ep_;
  float* y_;
  Isa isa_;
  const LowbitGemmKernels& kern_;
  size_t k_groups_, gbytes_, n_groups_, block_, panel_slots_, n_panels_;
  LowbitTileFn tile_;
  LowbitTileGroupedFn tile_grouped_;
  size_t step_;  // rows per tile call
  LowbitGemvGroupedPanelFn gemv_;
  TaskGrid grid_;
  std::vector<uint32_t> corr_;
};

}  // namespace

std::unique_ptr<TaskSet> lowbit_forward_tasks(const uint8_t* a, size_t lda, size_t m, size_t k,
                                              const uint8_t* panels, size_t n, int bits,
                                              size_t group_size, const uint16_t* panel_scales,
                                              const Epilogue& ep, float* y, int threads, Isa isa) {
  return std::make_unique<LowbitForwardTasks>(a, lda, m, k, panels, n, bits, group_size,
                                              panel_scales, ep, y, threads, isa);
}

void lowbit_grouped_forward_run(const uint8_t* a, size_t lda, size_t m, size_t k,
                                const uint8_t* panels, size_t n, int bits, size_t group_size,
                                const uint16_t* panel_scales, const Epilogue& ep, float* y,
                                int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const LowbitForwardTasks tasks(a, lda, m, k, panels, n, bits, group_size, panel_scales, ep, y,
                                 threads, isa);
  run_task_sets({&tasks}, threads);
}

}  // namespace pq
