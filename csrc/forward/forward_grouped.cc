// Grouped forwards (forward.h): each group's rows quantized as its weight's own forward does
// (the same row quantizer, the same padded row layout), then every group's task set (the
// family's driver, prepared) in one parallel region.
#include <algorithm>
#include <memory>
#include <vector>

#include "core/gemm_tasks.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/quantized_rows.h"
#include "forward/scratch.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {

namespace {

// Quantized rows of every group, in output order: q [rows][ldq], sa / ro per row.
struct GroupRows {
  uint8_t* q;
  float* sa;
  float* ro;
  std::vector<size_t> out_row0;  // per group
};

template <class Weight>
GroupRows quantize_groups(const float* x, size_t k, size_t ldq, const Weight* weights,
                          const RowGroup* groups, size_t n_groups, int threads, Isa isa) {
  GroupRows g;
  g.out_row0.resize(n_groups + 1, 0);
  for (size_t i = 0; i < n_groups; ++i) g.out_row0[i + 1] = g.out_row0[i] + groups[i].rows;
  const size_t rows = g.out_row0[n_groups];
  g.q = static_cast<uint8_t*>(thread_scratch(rows * ldq, 0));
  g.sa = static_cast<float*>(thread_scratch(2 * rows * sizeof(float), 1));
  g.ro = g.sa + rows;
  // tasks of (group, row range), each with its group's act range: a decode step's groups are a
  // row each, a prefill's few groups many rows (split as the single-layer quantizer splits)
  struct Chunk {
    size_t group, r0, r1;
  };
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n_groups; ++i) {
    const size_t m = groups[i].rows;
    const size_t parts = m >= 16 && threads > 1 ? std::min<size_t>(2 * threads, m / 8) : 1;
    for (size_t c = 0; c < parts; ++c) chunks.push_back({i, m * c / parts, m * (c + 1) / parts});
  }
  parallel_for(chunks.size(), threads, [&](size_t t) {
    const Chunk& c = chunks[t];
    const RowGroup& r = groups[c.group];
    const size_t o = g.out_row0[c.group] + c.r0;
    quantize_asym_u8_rows(x + (r.in_row0 + c.r0) * k, c.r1 - c.r0, k, ldq, weights[r.weight].act,
                          g.q + o * ldq, g.sa + o, g.ro + o, 1, isa);
  });
  return g;
}

// Quantizes every group's rows (ldq bytes apart), makes each non-empty group's task set with
// make(weight, its rows q, rows, their sa, ro, first output row) and runs them all in one
// parallel region.
template <class Weight, class Make>
void run_groups(const float* x, size_t k, size_t ldq, const Weight* weights,
                const RowGroup* groups, size_t n_groups, int threads, Isa isa, Make&& make) {
  const GroupRows rows = quantize_groups(x, k, ldq, weights, groups, n_groups, threads, isa);
  std::vector<std::unique_ptr<TaskSet>> sets;
  std::vector<const TaskSet*> ptrs;
  for (size_t i = 0; i < n_groups; ++i) {
    if (groups[i].rows == 0) continue;
    const size_t o = rows.out_row0[i];
    sets.push_back(make(weights[groups[i].weight], rows.q + o * ldq, groups[i].rows, rows.sa + o,
                        rows.ro + o, o));
    ptrs.push_back(sets.back().get());
  }
  run_task_sets(ptrs, threads);
}

}  // namespace

// (each set keeps its own copy of the Epilogue made here)
void forward_int8_grouped(const float* x, size_t k, const Int8Weight* weights,
                          const RowGroup* groups, size_t n_groups, size_t n, float* y,
                          int threads, Isa isa) {
  if (n == 0) return;
  const size_t k_pad = round_up(k, kInt8GroupK);
  const size_t ldq = int8_rows_stride(k);
  run_groups(x, k, ldq, weights, groups, n_groups, threads, isa,
             [&](const Int8Weight& w, const uint8_t* q, size_t m, const float* sa,
                 const float* ro, size_t o) {
               const Epilogue ep{sa, ro, false, w.w_scale, w.w_off, w.bias};
               return int8_gemm_tasks(q, m, k_pad, ldq, false, w.panels, w.col_sums, n,
                                      reinterpret_cast<int32_t*>(y + o * n), threads, isa, &ep);
             });
}

void forward_lowbit_grouped(const float* x, size_t k, int bits, size_t group_size,
                            const LowbitWeight* weights, const RowGroup* groups, size_t n_groups,
                            size_t n, float* y, int threads, Isa isa) {
  if (n == 0) return;
  const size_t lda = lowbit_rows_stride(k);
  run_groups(x, k, lda, weights, groups, n_groups, threads, isa,
             [&](const LowbitWeight& w, const uint8_t* q, size_t m, const float* sa,
                 const float* ro, size_t o) {
               const Epilogue ep{sa, ro, false, nullptr, w.w_off, w.bias};
               return lowbit_forward_tasks(q, lda, m, k, w.panels, n, bits, group_size,
                                           w.panel_scales, ep, y + o * n, threads, isa);
             });
}

}  // namespace pq
