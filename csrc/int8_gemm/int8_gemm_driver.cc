#include <algorithm>
#include <cstring>
#include <vector>

#include "core/kernel_table.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/scratch.h"
#include "int8_gemm/int8_gemm.h"

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

}  // namespace

void int8_gemm_run(const uint8_t* a, size_t m, size_t k, size_t lda_in, bool a_signed,
                   const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                   int threads, Isa isa, const Epilogue* epilogue) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // empty sums
    std::memset(c, 0, m * n * sizeof(int32_t));
    if (epilogue) epilogue_i32(*epilogue, c, n, 0, m, 0, n, isa);
    return;
  }
  const Int8GemmKernels& kern = int8_gemm_kernels(isa);
  const size_t k_pad = round_up(k, kInt8GroupK);
  const size_t n_pad = round_up(n, kInt8PanelCols);

  // Activations: use A in place when it already is the path's format, else convert.
  const bool needs_flip = kern.a_format == Int8AFormat::u8 ? a_signed
                          : kern.a_format == Int8AFormat::s8 ? !a_signed
                                                             : false;
  const size_t align = kern.a_row_align;
  const bool aligned =
      align == 0 || (reinterpret_cast<uintptr_t>(a) % align == 0 && lda_in % align == 0);
  const bool in_place = kern.a_format != Int8AFormat::s16 && !needs_flip && k == k_pad && aligned;
  Int8GemmProblem prob{};
  if (in_place) {
    prob.a = a;
    prob.lda = lda_in;
  } else {
    // row stride: K padded to the k group, and to the kernel's row alignment (zeros past K)
    const size_t row = align ? round_up(k_pad, align) : k_pad;
    const size_t elem = kern.a_format == Int8AFormat::s16 ? 2 : 1;
    // the calling thread's reusable buffer (slot 2: the fused forwards that call this use 0-1):
    // a fresh multi-MB allocation per call costs its page faults every time (NEON's s8 rows)
    uint8_t* a_buf = static_cast<uint8_t*>(thread_scratch(m * row * elem + 64, 2));
    const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
    parallel_for(chunks, threads, [&](size_t t) {
      prepare_rows(a, lda_in, k, row, a_signed, kern.a_format, a_buf, m * t / chunks,
                   m * (t + 1) / chunks);
    });
    prob.a = a_buf;
    prob.lda = row;
  }

  // Undo the +-128 offset: sum (a ^ 0x80) w = sum a w +- 128 * colsum.
  std::vector<int32_t> bias;
  if (needs_flip) {
    const uint32_t sign = kern.a_format == Int8AFormat::u8 ? static_cast<uint32_t>(-1) : 1u;
    bias.resize(n_pad);
    for (size_t j = 0; j < n_pad; ++j)
      bias[j] = static_cast<int32_t>(sign * 128u * static_cast<uint32_t>(col_sums[j]));
  }
  prob.col_bias = needs_flip ? bias.data() : nullptr;
  prob.panels = panels;
  prob.k_groups = k_pad / kInt8GroupK;
  prob.c = c;
  prob.ldc = n;
  prob.n = n;

  const TaskGrid grid(int8_task_shape(kern, m, n, k_pad, k_pad), threads);
  Int8ComputeFn compute = kern.compute;
  if (use_wide_rows(kern, prob, m, k_pad, m / grid.m_chunks())) {
    // 8-bit rows on a path whose u8 tile takes them by a split route at about half speed: its
    // int16 tile (compute_wide, offset9) from a = q >> 2 and a_low = q & 3 gives the same sums
    uint8_t* hi = static_cast<uint8_t*>(thread_scratch(2 * m * k_pad + 64, 7));
    uint8_t* lo = hi + m * k_pad;
    const uint8_t* q = static_cast<const uint8_t*>(prob.a);
    const size_t chunks = m >= 64 && threads > 1 ? static_cast<size_t>(threads) : 1;
    parallel_for(chunks, threads, [&](size_t t) {
      for (size_t r = m * t / chunks; r < m * (t + 1) / chunks; ++r) {
        const uint8_t* src = q + r * prob.lda;  // K padding already zero (or k == k_pad)
        for (size_t i = 0; i < k_pad; ++i) {
          hi[r * k_pad + i] = static_cast<uint8_t>(src[i] >> 2);
          lo[r * k_pad + i] = static_cast<uint8_t>(src[i] & 3);
        }
      }
    });
    prob.a = hi;
    prob.a_low = lo;
    prob.lda = k_pad;
    compute = kern.compute_wide;
  }
  parallel_for(grid.tasks(), threads, [&](size_t t) {
    size_t panel, m0, m_end;
    grid.task(t, panel, m0, m_end);
    compute(prob, m0, m_end, panel, panel + 1);
    if (epilogue) {
      const size_t n0 = panel * kInt8PanelCols;
      const size_t n1 = n0 + kInt8PanelCols < n ? n0 + kInt8PanelCols : n;
      epilogue_i32(*epilogue, c, n, m0, m_end, n0, n1, isa);
    }
  });
}

}  // namespace pq
