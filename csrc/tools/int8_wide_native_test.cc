// compute_wide (SPARQ's signed 9-bit rows, Int8GemmKernels::wide_format) of the int8 kernel on
// `isa` against an int64 oracle: rows written in the kernel's own format, every tile edge (row
// counts around the 6-row tile and the narrow tiles, 1/17/33/64/130 columns, K below, at and
// above the 4-k group and the 256-group K block, three of the 1024-group K blocks with a tail)
// and the extreme values +-255 x -128. Paths with compute_sign_xor run it on the same rows, whole
// and split by their pair route; the VNNI kernels' add_fixes runs the rows as SPARQ's offset rows.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "int8_gemm/int8_gemm.h"
#include "tools/test_registry.h"

namespace pq {
namespace {

std::mt19937_64 rng(20261202);

// Writes v in [-255, 255] as the kernel's (a, a_low) bytes; returns the row bias it needs
// (sign_xor) or 0.
int32_t write_row(Int8WideFormat fmt, const int16_t* v, size_t k, size_t k_pad, uint8_t* a,
                  uint8_t* a_low) {
  int32_t row_bias = 0;
  for (size_t i = 0; i < k_pad; ++i) {
    const int x = i < k ? v[i] : 0;
    if (fmt == Int8WideFormat::offset9) {
      const int u = i < k ? x + 256 : 0;  // the K padding multiplies zero weights
      a[i] = static_cast<uint8_t>(u >> 2);
      a_low[i] = static_cast<uint8_t>(u & 3);
    } else if (fmt == Int8WideFormat::split_u8) {
      a[i] = static_cast<uint8_t>(x > 0 ? x : 0);
      a_low[i] = static_cast<uint8_t>(x < 0 ? -x : 0);
    } else {
      a[i] = static_cast<uint8_t>(x < 0 ? -x : x);
      a_low[i] = x < 0 ? 0xff : 0x00;
      if (x < 0) row_bias += -x;
    }
  }
  return row_bias;
}

// True if c[i][j] less less_j[j] (wrapping; none if null) equals the int64 oracle
// sum_k v[i][k] w[j][k] truncated to int32, for every i < m, j < n.
bool matches_oracle(const std::vector<int32_t>& c, const std::vector<int16_t>& v,
                    const std::vector<int8_t>& w, size_t m, size_t n, size_t k,
                    const std::vector<uint32_t>& less_j = {}) {
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) {
      int64_t acc = 0;
      for (size_t kk = 0; kk < k; ++kk) acc += int64_t{v[i * k + kk]} * w[j * k + kk];
      const uint32_t got = static_cast<uint32_t>(c[i * n + j]) - (less_j.empty() ? 0 : less_j[j]);
      if (static_cast<int32_t>(acc) != static_cast<int32_t>(got)) return false;
    }
  return true;
}

}  // namespace

void int8_wide_sweep(Isa isa, TestCounter& t) {
  const Int8GemmKernels& kern = int8_gemm_kernels(isa);
  if (!kern.compute_wide) return;  // the path runs two passes of `compute` instead
  for (size_t m : {1, 2, 4, 5, 6, 7, 12, 13, 16, 25, 31, 33})
    for (size_t n : {1, 17, 33, 64, 130})
      for (size_t k : {1, 3, 4, 65, 1030, 8200})
        for (int extreme = 0; extreme < 2; ++extreme) {
          if (k == 1030 && n != 130 && n != 17) continue;  // keep the sweep short
          // three K blocks of the largest size (1024 groups) with a tail, prefetching tiles
          if (k == 8200 && (n != 130 || (m != 7 && m != 13))) continue;
          const size_t k_pad = (k + 3) / 4 * 4, n_pad = (n + 63) / 64 * 64;
          std::vector<int16_t> v(m * k);
          std::vector<int8_t> w(n * k);
          for (auto& x : v) x = extreme ? -255 : static_cast<int16_t>(rng() % 511) - 255;
          if (extreme) v[0] = 255;
          for (auto& x : w) x = extreme ? -128 : static_cast<int8_t>(rng());
          std::vector<uint8_t> packed(int8_packed_bytes(n, k));
          int8_pack_weights(w.data(), n, k, PackedOp::int8_gemm, 0, packed.data());
          PackedHeader h;
          std::memcpy(&h, packed.data(), sizeof h);
          const int32_t* col_sums = reinterpret_cast<const int32_t*>(packed.data() + h.aux_offset);
          std::vector<uint8_t> a(m * k_pad), a_low(m * k_pad);
          std::vector<int32_t> row_bias(m), col_bias(n_pad);
          for (size_t i = 0; i < m; ++i)
            row_bias[i] = write_row(kern.wide_format, v.data() + i * k, k, k_pad,
                                    a.data() + i * k_pad, a_low.data() + i * k_pad);
          for (size_t j = 0; j < n_pad; ++j)  // offset9: -256 * colsum, wrapping
            col_bias[j] = static_cast<int32_t>(0u - 256u * static_cast<uint32_t>(col_sums[j]));
          const bool xor_format = kern.wide_format == Int8WideFormat::sign_xor;
          const bool split_format = kern.wide_format == Int8WideFormat::split_u8;
          std::vector<int32_t> c(m * n, 12345);
          Int8GemmProblem p{};
          p.a = a.data();
          p.a_low = a_low.data();
          p.lda = k_pad;
          p.panels = reinterpret_cast<const int8_t*>(packed.data() + h.data_offset);
          p.k_groups = k_pad / 4;
          p.col_bias = xor_format || split_format ? nullptr : col_bias.data();
          p.row_bias = xor_format ? row_bias.data() : nullptr;
          p.c = c.data();
          p.ldc = n;
          p.n = n;
          // as forward_sparq calls it: one panel per call, rows split at a multiple of mr (so
          // row ranges start past 0 and meet the row bias at an offset)
          const size_t split = m / 2 / kern.mr * kern.mr;
          // compute per panel as above, then row i's fixes (fix_of(i): first, count) added
          auto run_with_fixes = [&](Int8ComputeFn compute, auto fix_of) {
            std::fill(c.begin(), c.end(), 12345);
            for (size_t panel = 0; panel < n_pad / 64; ++panel) {
              if (split > 0) compute(p, 0, split, panel, panel + 1);
              compute(p, split, m, panel, panel + 1);
              const int8_t* panel_b = p.panels + panel * p.k_groups * 256;
              for (size_t i = 0; i < m; ++i) {
                const auto [fix, count] = fix_of(i);
                kern.add_fixes(panel_b, fix, count, c.data() + i * n + panel * 64,
                               std::min<size_t>(64, n - panel * 64));
              }
            }
          };
          for (size_t panel = 0; panel < n_pad / 64; ++panel) {
            if (split > 0) kern.compute_wide(p, 0, split, panel, panel + 1);
            kern.compute_wide(p, split, m, panel, panel + 1);
          }
          t.check(matches_oracle(c, v, w, m, n, k), "int8 compute_wide " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                          std::to_string(k) + (extreme ? " extreme" : ""));
          if (kern.add_fixes && !kern.pair_split) {
            // SPARQ's offset rows on the VNNI kernels: u = min(max(v + 128, 0), 255) through
            // compute, the excesses of either sign as fixes (any bytes, up to two per k group),
            // 128 * colsum taken back out
            std::vector<Int8GroupFix> fixes;
            std::vector<size_t> first(m + 1, 0);
            for (size_t i = 0; i < m; ++i) {
              for (size_t g = 0; g < k_pad / 4; ++g) {
                uint32_t up = 0, down = 0;
                for (size_t e = 0; e < 4; ++e) {
                  const size_t kk = g * 4 + e;
                  const int u = kk < k ? v[i * k + kk] + 128 : 0;
                  a[i * k_pad + kk] = static_cast<uint8_t>(std::min(std::max(u, 0), 255));
                  if (u > 255) up |= static_cast<uint32_t>(u - 255) << (8 * e);
                  if (u < 0) down |= static_cast<uint32_t>(-u) << (8 * e);
                }
                if (up) fixes.push_back({static_cast<uint32_t>(g), up});
                if (down) fixes.push_back({static_cast<uint32_t>(g) | kFixNegative, down});
              }
              first[i + 1] = fixes.size();
            }
            p.col_bias = nullptr;
            p.row_bias = nullptr;
            run_with_fixes(kern.compute, [&](size_t i) {
              return std::make_pair(fixes.data() + first[i], first[i + 1] - first[i]);
            });
            std::vector<uint32_t> offset_j(n);  // the offset's 128 * colsum
            for (size_t j = 0; j < n; ++j) offset_j[j] = 128u * static_cast<uint32_t>(col_sums[j]);
            t.check(matches_oracle(c, v, w, m, n, k, offset_j), "int8 offset rows + add_fixes " + std::to_string(m) + "x" +
                            std::to_string(n) + "x" + std::to_string(k) +
                            (extreme ? " extreme" : ""));
          }
          if (!kern.compute_sign_xor) continue;
          // compute_sign_xor (the pair route's signed rows): |v| rows left whole (the tiles'
          // split route), then split by pair_split with their signs, the fixes added per panel
          for (int split_rows = 0; split_rows < 2; ++split_rows) {
            // split: all but two of every 11 values within +-85, so most rows need a few
            // fixes (of either sign; two in the k groups holding two large values 2 apart)
            // and some more than a row may take
            std::vector<int16_t> vs = v;
            if (split_rows)
              for (size_t i = 0; i < vs.size(); ++i)
                if (i % 11 != 0 && i % 11 != 2) vs[i] = static_cast<int16_t>(vs[i] / 3);
            const size_t cap = k_pad / 4 / 8 + 1;
            std::vector<Int8GroupFix> fixes(m * cap);
            std::vector<size_t> counts(m, 0);
            for (size_t i = 0; i < m; ++i) {
              uint8_t* row = a.data() + i * k_pad;
              const uint8_t* signs = a_low.data() + i * k_pad;
              write_row(Int8WideFormat::sign_xor, vs.data() + i * k, k, k_pad, row,
                        a_low.data() + i * k_pad);
              if (split_rows) {
                const size_t got = kern.pair_split(row, signs, k_pad, fixes.data() + i * cap, cap);
                counts[i] = got == SIZE_MAX ? 0 : got;
              }
              row_bias[i] = 0;  // from the split row: the fixes carry the rest
              for (size_t kk = 0; kk < k_pad; ++kk) row_bias[i] += row[kk] & signs[kk];
            }
            p.col_bias = nullptr;
            p.row_bias = row_bias.data();
            run_with_fixes(kern.compute_sign_xor, [&](size_t i) {
              return std::make_pair(static_cast<const Int8GroupFix*>(fixes.data() + i * cap),
                                    counts[i]);
            });
            t.check(matches_oracle(c, vs, w, m, n, k), "int8 compute_sign_xor " + std::to_string(m) + "x" + std::to_string(n) +
                            "x" + std::to_string(k) + (extreme ? " extreme" : "") +
                            (split_rows ? " split" : " whole"));
          }
        }
}

PQ_REGISTER_NATIVE_TEST(int8_wide, int8_wide_sweep);

}  // namespace pq
