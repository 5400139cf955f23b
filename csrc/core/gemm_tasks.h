// The (column panel x row range) task split every GEMM driver runs, written once.
//
// A task is one panel of output columns over a range of whole row tiles. Panels come first (a
// panel's weights are read once per task); rows are split too when panels are fewer than four per
// thread. Two cache bounds can split the rows further, and then tasks run chunk by chunk (every
// panel of one row chunk before the next chunk):
//  - `a_chunk_bytes`: tiles so fast that re-reading all of A per panel from L3 would bound them
//    (AMX) keep a chunk's activation rows within this many bytes;
//  - the output: a task writes its panel's columns of every row in its range, so over a call each
//    output row is written in n_panels separate pieces. When the rows' outputs spill L2 (1024
//    rows x 1536 columns is 6 MB of floats) those scattered partial-line writes go out to L3 and
//    come back for the next panel's pieces: all-MiniLM's 384 -> 1536 Linear at 1024 rows ran at
//    about half the rate of four 256-row calls. When re-reading the weights for every chunk is
//    cheap (they fit L2), or pays (they fit a few MiB and the whole output is far past L2: BERT-
//    base's 768 -> 3072 at 1024 rows 1.2-1.5x; at 256 rows x 4096 columns, 4 MB of output, the
//    AMX int8 tile ran 0.68x re-reading 4 MB of weights per chunk), chunks keep their output
//    within `kOutChunkBytes`.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "core/macros.h"
#include "core/thread_pool.h"

namespace pq {

struct TaskShape {
  size_t m = 0;             // rows
  size_t n_panels = 0;      // column panels
  size_t mr = 1;            // rows per micro-tile: row ranges are whole tiles
  size_t a_row_bytes = 0;   // activation bytes per row as the kernel reads them
  size_t a_chunk_bytes = 0; // nonzero: the most activation bytes a chunk's rows may span
  size_t out_row_bytes = 0; // output bytes per row (all columns)
  size_t weight_bytes = 0;  // all panels' weight bytes (codes, scales) read per row chunk
};

// Weights up to this size stay in L2 across row chunks (1-2 MiB per core on the x86 CPUs seen,
// Zen 3's 512 KiB is the smallest: re-reading from its L3 costs K/16 cycles per column per chunk)
inline constexpr size_t kResidentWeightBytes = size_t{1} << 20;
// Weights up to this size (in any L3 seen) are re-read per chunk when the call's whole output
// passes kSpilledOutputBytes (twice a 2 MiB L2).
inline constexpr size_t kRereadWeightBytes = size_t{4} << 20;
inline constexpr size_t kSpilledOutputBytes = size_t{4} << 20;
// Output per row chunk: well inside L2 beside the chunk's weights and rows.
inline constexpr size_t kOutChunkBytes = size_t{512} << 10;
// Never fewer rows per chunk than this (the weights' re-reads amortized over enough rows).
inline constexpr size_t kMinOutChunkRows = 64;

// Whether rows are chunked to keep each chunk's output in L2 (see above).
inline bool split_for_output(size_t m, size_t out_row_bytes, size_t weight_bytes,
                             size_t n_panels) {
  if (!out_row_bytes || n_panels < 2) return false;
  return weight_bytes <= kResidentWeightBytes ||
         (weight_bytes <= kRereadWeightBytes && m * out_row_bytes > kSpilledOutputBytes);
}

class TaskGrid {
 public:
  TaskGrid(const TaskShape& s, int threads) : n_panels_(s.n_panels), mr_(s.mr), m_(s.m) {
    tiles_m_ = div_round_up(s.m, s.mr);
    const size_t want = static_cast<size_t>(threads > 1 ? threads : 1) * 4;
    if (n_panels_ < want) m_chunks_ = div_round_up(want, n_panels_);
    size_t fit_tiles = tiles_m_;  // row tiles a chunk may hold under the cache bounds
    if (s.a_chunk_bytes && s.a_row_bytes) {
      const size_t tiles = s.a_chunk_bytes / (s.a_row_bytes * s.mr);
      fit_tiles = std::min(fit_tiles, std::max<size_t>(1, tiles));
    }
    if (split_for_output(s.m, s.out_row_bytes, s.weight_bytes, n_panels_)) {
      const size_t rows = std::max(kMinOutChunkRows, kOutChunkBytes / s.out_row_bytes);
      fit_tiles = std::min(fit_tiles, std::max<size_t>(1, rows / s.mr));
    }
    const size_t need = div_round_up(tiles_m_, fit_tiles);
    if (need > m_chunks_) {
      m_chunks_ = need;
      chunk_major_ = true;
    }
    if (m_chunks_ > tiles_m_) m_chunks_ = tiles_m_;
    if (m_chunks_ == 0) m_chunks_ = 1;
  }
  size_t tasks() const { return n_panels_ * m_chunks_; }
  size_t m_chunks() const { return m_chunks_; }
  bool chunk_major() const { return chunk_major_; }
  // Task t's panel and rows [m0, m1).
  void task(size_t t, size_t& panel, size_t& m0, size_t& m1) const {
    panel = chunk_major_ ? t % n_panels_ : t / m_chunks_;
    const size_t mc = chunk_major_ ? t / n_panels_ : t % m_chunks_;
    m0 = tiles_m_ * mc / m_chunks_ * mr_;
    m1 = std::min(m_, tiles_m_ * (mc + 1) / m_chunks_ * mr_);
  }

 private:
  size_t n_panels_, mr_, m_, tiles_m_ = 0, m_chunks_ = 1;
  bool chunk_major_ = false;
};

// One GEMM call's prepared work as independent tasks (its rows prepared, its task split made):
// a driver builds one, then runs its tasks. Several calls' sets run in one parallel region
// (run_task_sets: the experts a mixture-of-experts layer routes one step to), so the threads
// wake once and stream the next weight while the last tasks of the previous one finish.
class TaskSet {
 public:
  virtual ~TaskSet() = default;
  virtual size_t tasks() const = 0;
  virtual void run(size_t task) const = 0;
};

inline void run_task_sets(const std::vector<const TaskSet*>& sets, int threads) {
  if (sets.size() == 1) {  // (a single call: no task lookup)
    parallel_for(sets[0]->tasks(), threads, [&](size_t t) { sets[0]->run(t); });
    return;
  }
  std::vector<size_t> first(sets.size() + 1, 0);  // first[i]: set i's first task
  for (size_t i = 0; i < sets.size(); ++i) first[i + 1] = first[i] + sets[i]->tasks();
  parallel_for(first.back(), threads, [&](size_t t) {
    const size_t i = std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
    sets[i]->run(t - first[i]);
  });
}

}  // namespace pq
