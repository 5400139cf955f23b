#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/kernel_table.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/scratch.h"
#include "int8_gemm/int8_gemm.h"
#include "int8_gemm/pair_fixes.h"

namespace pq {

const Int8GemmKernels& int8_gemm_kernels(Isa isa) {
  return active_impl<Int8GemmKernels>(KernelFamily::int8_gemm, isa);  // core/kernel_table.cc
}

namespace {

// Converts rows [m0, m1) of A into the path's format, K padded with zeros to k_pad.
// xor_mask flips the sign bit (u8 <-> s8 by an offset of 128).
void prepare_rows(const uint8_t* a, size_t lda_in, size_t k, size_t k_pad, bool a_signed,
                  Int8AFormat fmt, void* out, size_t m0, size_t m1) {
  if (fmt == Int8AFormat::s16) {
    int16_t* dst = static_cast<int16_t*>(out);
    for (size_t m = m0; m < m1; ++m) {
      const uint8_t* src = a + m * lda_in;
      int16_t* d = dst + m * k_pad;
      if (a_signed)
        for (size_t i = 0; i < k; ++i) d[i] = static_cast<int8_t>(src[i]);
      else
        for (size_t i = 0; i < k; ++i) d[i] = src[i];
      for (size_t i = k; i < k_pad; ++i) d[i] = 0;
    }
    return;
  }
  // u8 format needs unsigned input, s8 format signed: flip when they differ.
  const bool flip = (fmt == Int8AFormat::u8) == a_signed;
  const uint8_t x = flip ? 0x80 : 0x00;
  uint8_t* dst = static_cast<uint8_t*>(out);
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda_in;
    uint8_t* d = dst + m * k_pad;
    for (size_t i = 0; i < k; ++i) d[i] = src[i] ^ x;
    // Padding must multiply to zero: weights are zero-padded, so any value works; use 0.
    for (size_t i = k; i < k_pad; ++i) d[i] = 0;
  }
}

// Whether rows_per_task of these u8 rows run faster through the path's int16 tile: the path
// says from how many rows (wide_faster_from_rows, offset9 format), and every row must hold a
// byte above 127 (rows within 7 bits take the u8 tile's fast route, faster still).
bool use_wide_rows(const Int8GemmKernels& kern, const Int8GemmProblem& prob, size_t m, size_t k,
                   size_t rows_per_task) {
  if (!kern.compute_wide || kern.wide_format != Int8WideFormat::offset9 ||
      kern.wide_faster_from_rows == 0 || rows_per_task < kern.wide_faster_from_rows ||
      kern.a_format != Int8AFormat::u8)
    return false;
  const uint8_t* q = static_cast<const uint8_t*>(prob.a);
  for (size_t r = 0; r < m; ++r) {
    const uint8_t* row = q + r * prob.lda;
    uint8_t any = 0;
    for (size_t i = 0; i < k && !(any & 0x80); i += 64) {
      const size_t e = i + 64 < k ? i + 64 : k;
      for (size_t j = i; j < e; ++j) any |= row[j];
    }
    if (!(any & 0x80)) return false;
  }
  return true;
}

// int8_gemm_run's work, prepared: A in the path's format (in place when it already is), the
// sign-flip column bias, the task split. With own_buffers the converted rows live in the object
// (several sets alive at once: run_task_sets); else in the calling thread's reusable scratch.
class Int8GemmTasks final : public TaskSet {
 public:
  Int8GemmTasks(const uint8_t* a, size_t m, size_t k, size_t lda_in, bool a_signed,
                const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c, int threads,
                Isa isa, const Epilogue* epilogue, bool own_buffers)
      : isa_(isa), n_(n), c_(c), epilogue_(epilogue ? *epilogue : Epilogue{}),
        has_epilogue_(epilogue != nullptr),
        grid_(int8_task_shape(int8_gemm_kernels(isa), m ? m : 1, n ? n : 1,
                              round_up(k, kInt8GroupK), round_up(k, kInt8GroupK)),
              threads) {  // (m or n = 0: no tasks; the grid needs a row and a panel)
    if (m == 0 || n == 0) return;
    if (k == 0) {  // empty sums: done here, no tasks
      std::memset(c, 0, m * n * sizeof(int32_t));
      if (epilogue) epilogue_i32(*epilogue, c, n, 0, m, 0, n, isa);
      return;
    }
    const Int8GemmKernels& kern = int8_gemm_kernels(isa);
    const size_t k_pad = round_up(k, kInt8GroupK);
    const size_t n_pad = round_up(n, kInt8PanelCols);
    prob_.panels = panels;
    prob_.k_groups = k_pad / kInt8GroupK;
    prob_.c = c;
    prob_.ldc = n;
    prob_.n = n;
    if (a_signed && kern.compute_sign_xor && kern.pair_split) {
      sign_rows(a, m, k, lda_in, kern, threads, own_buffers);
      tasks_ = grid_.tasks();
      return;
    }

    // Activations: use A in place when it already is the path's format, else convert.
    const bool needs_flip = kern.a_format == Int8AFormat::u8 ? a_signed
                            : kern.a_format == Int8AFormat::s8 ? !a_signed
                                                               : false;
    const size_t align = kern.a_row_align;
    const bool aligned =
        align == 0 || (reinterpret_cast<uintptr_t>(a) % align == 0 && lda_in % align == 0);
    const bool in_place =
        kern.a_format != Int8AFormat::s16 && !needs_flip && k == k_pad && aligned;
    if (in_place) {
      prob_.a = a;
      prob_.lda = lda_in;
    } else {
      // row stride: K padded to the k group, and to the kernel's row alignment (zeros past K)
      const size_t row = align ? round_up(k_pad, align) : k_pad;
      const size_t elem = kern.a_format == Int8AFormat::s16 ? 2 : 1;
      // the calling thread's reusable buffer (slot 2: the fused forwards that call this use
      // 0-1): a fresh multi-MB allocation per call costs its page faults every time (NEON's s8
      // rows)
      uint8_t* a_buf = buffer(m * row * elem + 64, 2, own_buffers);
      const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
      parallel_for(chunks, threads, [&](size_t t) {
        prepare_rows(a, lda_in, k, row, a_signed, kern.a_format, a_buf, m * t / chunks,
                     m * (t + 1) / chunks);
      });
      prob_.a = a_buf;
      prob_.lda = row;
    }

    // Undo the +-128 offset: sum (a ^ 0x80) w = sum a w +- 128 * colsum.
    if (needs_flip) {
      const uint32_t sign = kern.a_format == Int8AFormat::u8 ? static_cast<uint32_t>(-1) : 1u;
      bias_.resize(n_pad);
      for (size_t j = 0; j < n_pad; ++j)
        bias_[j] = static_cast<int32_t>(sign * 128u * static_cast<uint32_t>(col_sums[j]));
    }
    prob_.col_bias = needs_flip ? bias_.data() : nullptr;

    compute_ = kern.compute;
    if (kern.pair_split && kern.a_format == Int8AFormat::u8 && !a_signed) {
      // uint8 rows on the pair route's path: split into pair-safe rows (a copy when A is the
      // caller's) and fixes. (int8 rows, flipped to u8 around 128, have pairs past 255 nearly
      // everywhere; rows without such pairs take the fast route as they are.)
      uint8_t* rows = in_place ? buffer(m * k_pad + 64, 2, own_buffers)
                               : static_cast<uint8_t*>(const_cast<void*>(prob_.a));
      auto fixes = std::make_unique<PairFixes>(
          kern, m, k_pad, buffer(PairFixes::storage_bytes(kern, m, k_pad) + 64, 8, own_buffers));
      auto split_row = [&](size_t r) {
        uint8_t* row = rows + r * prob_.lda;
        if (in_place) {
          row = rows + r * k_pad;
          std::memcpy(row, static_cast<const uint8_t*>(prob_.a) + r * prob_.lda, k_pad);
        }
        return fixes->split(r, row);
      };
      // Three rows decide whether the others are tried: one must need a fix (7-bit rows need
      // none: a scan of A for bytes past 127 cost a 7-bit 3136 x 64 x 576 product 6%) and none
      // may stay whole (uniformly random 8-bit rows all do: trying each cost the raw op 6%).
      std::vector<size_t> probes{0};
      for (size_t r : {m / 2, m - 1})
        if (r != probes.back()) probes.push_back(r);  // (m / 2 <= m - 1; distinct, ascending)
      bool take = true;
      size_t needed = 0;
      for (size_t r : probes) {
        take = take && split_row(r);
        needed += fixes->count(r);
      }
      take = take && needed > 0;
      bool all_split = false;
      if (take) {
        const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
        std::vector<size_t> whole(chunks, 0);
        parallel_for(chunks, threads, [&](size_t t) {
          for (size_t r = m * t / chunks; r < m * (t + 1) / chunks; ++r)
            if (std::find(probes.begin(), probes.end(), r) == probes.end())
              whole[t] += !split_row(r);
        });
        all_split = true;
        size_t left_whole = 0;
        for (size_t w : whole) left_whole += w;
        // past 1/8 of the rows whole, the int16 tile where it is the faster one
        take = left_whole * 8 <= m || !use_wide_rows(kern, prob_, m, k_pad, m / grid_.m_chunks());
      }
      if (take) {
        if (in_place) {
          prob_.a = rows;
          prob_.lda = k_pad;
        }
        fixes_ = std::move(fixes);
      } else if (!in_place) {  // the converted rows as they were, for the tiles below
        if (all_split)
          prepare_rows(a, lda_in, k, prob_.lda, a_signed, kern.a_format, rows, 0, m);
        else
          for (size_t r : probes)
            prepare_rows(a, lda_in, k, prob_.lda, a_signed, kern.a_format, rows, r, r + 1);
      }
    }
    if (!fixes_ && use_wide_rows(kern, prob_, m, k_pad, m / grid_.m_chunks())) {
      // 8-bit rows on a path whose u8 tile takes them by a split route at about half speed: its
      // int16 tile (compute_wide, offset9) from a = q >> 2 and a_low = q & 3 gives the same sums
      uint8_t* hi = buffer(2 * m * k_pad + 64, 7, own_buffers);
      uint8_t* lo = hi + m * k_pad;
      const uint8_t* q = static_cast<const uint8_t*>(prob_.a);
      const size_t lda = prob_.lda;
      const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
      parallel_for(chunks, threads, [&](size_t t) {
        for (size_t r = m * t / chunks; r < m * (t + 1) / chunks; ++r) {
          const uint8_t* src = q + r * lda;  // K padding already zero (or k == k_pad)
          for (size_t i = 0; i < k_pad; ++i) {
            hi[r * k_pad + i] = static_cast<uint8_t>(src[i] >> 2);
            lo[r * k_pad + i] = static_cast<uint8_t>(src[i] & 3);
          }
        }
      });
      prob_.a = hi;
      prob_.a_low = lo;
      prob_.lda = k_pad;
      compute_ = kern.compute_wide;
    }
    tasks_ = grid_.tasks();
  }

  size_t tasks() const override { return tasks_; }

  void run(size_t t) const override {
    size_t panel, m0, m_end;
    grid_.task(t, panel, m0, m_end);
    compute_(prob_, m0, m_end, panel, panel + 1);
    if (fixes_) fixes_->add(m0, m_end, prob_.panels, panel, c_, n_, n_);
    if (has_epilogue_) {
      const size_t n0 = panel * kInt8PanelCols;
      const size_t n1 = n0 + kInt8PanelCols < n_ ? n0 + kInt8PanelCols : n_;
      epilogue_i32(epilogue_, c_, n_, m0, m_end, n0, n1, isa_);
    }
  }

 private:
  // int8 rows on a path with sign tiles (AVX2): |a| and sign bytes through its u8 tile
  // (compute_sign_xor), each row split by the pair route (|a| <= 128: only a pair of two -128s
  // passes 255), the row bias the sum of |a| over a < 0. The +128 offset's rows instead pass
  // 255 in most pairs (the split route or the int16 tile: 1.45-2x the u8 tile's time).
  void sign_rows(const uint8_t* a, size_t m, size_t k, size_t lda_in,
                 const Int8GemmKernels& kern, int threads, bool own_buffers) {
    const size_t k_pad = prob_.k_groups * kInt8GroupK;
    uint8_t* mags = buffer(2 * m * k_pad + 64, 2, own_buffers);
    uint8_t* signs = mags + m * k_pad;
    auto fixes = std::make_unique<PairFixes>(
        kern, m, k_pad, buffer(PairFixes::storage_bytes(kern, m, k_pad) + 64, 8, own_buffers));
    row_bias_.assign(m, 0);
    const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
    std::vector<uint8_t> whole(chunks, 0);
    parallel_for(chunks, threads, [&](size_t t) {
      for (size_t r = m * t / chunks; r < m * (t + 1) / chunks; ++r) {
        const int8_t* src = reinterpret_cast<const int8_t*>(a + r * lda_in);
        uint8_t* mag = mags + r * k_pad;
        uint8_t* sign = signs + r * k_pad;
        for (size_t i = 0; i < k; ++i) {
          const int v = src[i];
          mag[i] = static_cast<uint8_t>(v < 0 ? -v : v);
          sign[i] = v < 0 ? 0xff : 0x00;
        }
        std::fill(mag + k, mag + k_pad, uint8_t{0});  // zero weights there
        std::fill(sign + k, sign + k_pad, uint8_t{0});
        whole[t] |= !fixes->split(r, mag, sign);
        row_bias_[r] = sign_xor_row_bias(mag, sign, k);
      }
    });
    prob_.a = mags;
    prob_.a_low = signs;
    prob_.lda = k_pad;
    prob_.row_bias = row_bias_.data();
    prob_.pair_safe = std::none_of(whole.begin(), whole.end(), [](uint8_t w) { return w != 0; });
    compute_ = kern.compute_sign_xor;
    fixes_ = std::move(fixes);
  }

  // A 64-byte aligned buffer: owned by this object, or the calling thread's scratch slot.
  uint8_t* buffer(size_t bytes, int slot, bool own) {
    if (!own) return static_cast<uint8_t*>(thread_scratch(bytes, slot));
    owned_.emplace_back(new uint8_t[bytes + 64]);
    const uintptr_t p = reinterpret_cast<uintptr_t>(owned_.back().get());
    return reinterpret_cast<uint8_t*>(round_up(p, uintptr_t{64}));
  }

  Isa isa_;
  size_t n_;
  int32_t* c_;
  Epilogue epilogue_;
  bool has_epilogue_;
  TaskGrid grid_;
  Int8GemmProblem prob_{};
  Int8ComputeFn compute_ = nullptr;
  size_t tasks_ = 0;
  std::vector<int32_t> bias_;
  std::vector<int32_t> row_bias_;     // sign_rows'
  std::unique_ptr<PairFixes> fixes_;  // the pair route's, when taken
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

}  // namespace

std::unique_ptr<TaskSet> int8_gemm_tasks(const uint8_t* a, size_t m, size_t k, size_t lda_in,
                                         bool a_signed, const int8_t* panels,
                                         const int32_t* col_sums, size_t n, int32_t* c,
                                         int threads, Isa isa, const Epilogue* epilogue) {
  return std::make_unique<Int8GemmTasks>(a, m, k, lda_in, a_signed, panels, col_sums, n, c,
                                         threads, isa, epilogue, true);
}

void int8_gemm_run(const uint8_t* a, size_t m, size_t k, size_t lda_in, bool a_signed,
                   const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                   int threads, Isa isa, const Epilogue* epilogue) {
  const Int8GemmTasks tasks(a, m, k, lda_in, a_signed, panels, col_sums, n, c, threads, isa,
                            epilogue, false);
  run_task_sets({&tasks}, threads);
}

}  // namespace pq
