// The shared task split (core/gemm_tasks.h): every (panel, row) is in exactly one task, row
// ranges are whole micro-tiles (the last ends at M), no task is empty, chunk-major order runs
// every panel of a chunk before the next chunk, and a split under a cache bound respects it.
#include <algorithm>
#include <string>
#include <vector>

#include "core/gemm_tasks.h"
#include "tools/test_registry.h"

namespace pq {
namespace {

void check_grid(const TaskShape& s, int threads, TestCounter& tc) {
  const TaskGrid grid(s, threads);
  std::vector<int> seen(s.m * s.n_panels, 0);
  bool ok = grid.tasks() == s.n_panels * grid.m_chunks();
  size_t last_chunk_start = 0;
  for (size_t t = 0; t < grid.tasks() && ok; ++t) {
    size_t panel, m0, m1;
    grid.task(t, panel, m0, m1);
    ok = panel < s.n_panels && m0 < m1 && m1 <= s.m && m0 % s.mr == 0 &&
         (m1 == s.m || m1 % s.mr == 0);
    if (grid.chunk_major()) {  // chunks in order, each chunk's panels together
      ok = ok && m0 >= last_chunk_start;
      last_chunk_start = m0;
    }
    for (size_t r = m0; ok && r < m1; ++r) ++seen[r * s.n_panels + panel];
  }
  for (int v : seen) ok = ok && v == 1;
  // the cache bounds (a chunk of whole tiles never goes below one tile, or kMinOutChunkRows)
  size_t max_rows = 0;
  for (size_t t = 0; t < grid.tasks(); ++t) {
    size_t panel, m0, m1;
    grid.task(t, panel, m0, m1);
    max_rows = std::max(max_rows, m1 - m0);
  }
  if (s.a_chunk_bytes && s.a_row_bytes * s.mr <= s.a_chunk_bytes)
    ok = ok && max_rows * s.a_row_bytes <= s.a_chunk_bytes + s.mr * s.a_row_bytes;
  const bool out_split =
      s.out_row_bytes && s.n_panels > 1 &&
      (s.weight_bytes <= kResidentWeightBytes ||
       (s.weight_bytes <= kRereadWeightBytes && s.m * s.out_row_bytes > kSpilledOutputBytes));
  ok = ok && out_split == split_for_output(s.m, s.out_row_bytes, s.weight_bytes, s.n_panels);
  if (out_split) {
    const size_t bound = std::max(kMinOutChunkRows, kOutChunkBytes / s.out_row_bytes);
    ok = ok && max_rows <= std::max(bound, s.mr) + s.mr;
  }
  // no bound applies: rows are split only for the threads (panels first)
  if (!s.a_chunk_bytes && !out_split) ok = ok && !grid.chunk_major();
  tc.check(ok, "gemm_tasks m=" + std::to_string(s.m) + " panels=" + std::to_string(s.n_panels) +
                   " mr=" + std::to_string(s.mr) + " out_row=" + std::to_string(s.out_row_bytes) +
                   " weights=" + std::to_string(s.weight_bytes) + " threads=" +
                   std::to_string(threads));
}

void test_gemm_tasks(Isa, TestCounter& tc) {
  for (size_t m : {1, 2, 5, 6, 7, 31, 32, 63, 64, 65, 150, 257, 1024, 1030})
    for (size_t panels : {1, 2, 3, 5, 24, 65})
      for (size_t mr : {1, 2, 6, 32, 64})
        for (int threads : {1, 2, 3})
          for (size_t out_row : {size_t{0}, size_t{256}, size_t{6144}, size_t{65536}})
            for (size_t weights : {size_t{1} << 16, size_t{3} << 20, size_t{1} << 24})
              for (size_t a_chunk : {size_t{0}, size_t{1} << 14}) {
                TaskShape s;
                s.m = m;
                s.n_panels = panels;
                s.mr = mr;
                s.a_row_bytes = 384;
                s.a_chunk_bytes = a_chunk;
                s.out_row_bytes = out_row;
                s.weight_bytes = weights;
                check_grid(s, threads, tc);
              }
}

}  // namespace

PQ_REGISTER_NATIVE_TEST(gemm_tasks, test_gemm_tasks);

}  // namespace pq
