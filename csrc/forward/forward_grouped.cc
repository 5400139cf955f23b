// Grouped forwards (forward.h): each group's rows quantized as its weight's own forward does
// (the same row quantizer, the same padded row layout), then every group's task set (the
// family's driver, prepared) in one parallel region.
#include <memory>
#include <vector>

#include "core/gemm_tasks.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/scratch.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {

void quantize_asym_u8_rows(const float* x, size_t m, size_t k, size_t ldq, ActRange act,
                           uint8_t* q, float* sa, float* ro, int threads, Isa isa);

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
  // one task per group (its own act range), the quantizer single-threaded inside: a decode
  // step's groups are single rows
  parallel_for(n_groups, threads, [&](size_t i) {
    const RowGroup& r = groups[i];
    const size_t o = g.out_row0[i];
    quantize_asym_u8_rows(x + r.in_row0 * k, r.rows, k, ldq, weights[r.weight].act, g.q + o * ldq, g.sa + o,
                          g.ro + o, 1, isa);
  });
  return g;
}

void run_all(std::vector<std::unique_ptr<TaskSet>>& sets, int threads) {
  std::vector<const TaskSet*> ptrs;
  for (const auto& s : sets) ptrs.push_back(s.get());
  run_task_sets(ptrs, threads);
}

}  // namespace

void forward_int8_grouped(const float* x, size_t k, const Int8Weight* weights,
                          const RowGroup* groups, size_t n_groups, size_t n, float* y,
                          int threads, Isa isa) {
  if (n == 0) return;
  const size_t k_pad = round_up(k, kInt8GroupK);  // as forward_int8
  const size_t ldq = round_up(k_pad, 64);
  const GroupRows rows = quantize_groups(x, k, ldq, weights, groups, n_groups, threads, isa);
  std::vector<std::unique_ptr<TaskSet>> sets;
  for (size_t i = 0; i < n_groups; ++i) {
    if (groups[i].rows == 0) continue;
    const Int8Weight& w = weights[groups[i].weight];
    const size_t o = rows.out_row0[i];
    const Epilogue ep{rows.sa + o, rows.ro + o, false, w.w_scale, w.w_off, w.bias};
    sets.push_back(int8_gemm_tasks(rows.q + o * ldq, groups[i].rows, k_pad, ldq, false, w.panels,
                                   w.col_sums, n, reinterpret_cast<int32_t*>(y + o * n), threads,
                                   isa, &ep));  // (the set keeps a copy of ep)
  }
  run_all(sets, threads);
}

void forward_lowbit_grouped(const float* x, size_t k, int bits, size_t group_size,
                            const LowbitWeight* weights, const RowGroup* groups, size_t n_groups,
                            size_t n, float* y, int threads, Isa isa) {
  if (n == 0) return;
  const size_t row = round_up(round_up(k, kLowbitGroupK), 64);  // as forward_lowbit
  const size_t lda = row % 1024 == 0 ? row + 64 : row;
  const GroupRows rows = quantize_groups(x, k, lda, weights, groups, n_groups, threads, isa);
  std::vector<std::unique_ptr<TaskSet>> sets;
  for (size_t i = 0; i < n_groups; ++i) {
    if (groups[i].rows == 0) continue;
    const LowbitWeight& w = weights[groups[i].weight];
    const size_t o = rows.out_row0[i];
    const Epilogue ep{rows.sa + o, rows.ro + o, false, nullptr, w.w_off, w.bias};
    sets.push_back(lowbit_forward_tasks(rows.q + o * lda, lda, groups[i].rows, k, w.panels, n,
                                        bits, group_size, w.panel_scales, ep, y + o * n,
                                        threads, isa));  // (the set keeps a copy of ep)
  }
  run_all(sets, threads);
}

}  // namespace pq
