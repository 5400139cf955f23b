// Native checks for lowbit_gemm: every path against an int64 oracle (wrapped to int32), and the
// grouped variant bit-identical to the scalar path.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/macros.h"
#include "core/packed_format.h"
#include "forward/epilogue.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "tools/test_registry.h"

namespace pq {
namespace {
std::mt19937_64 lowbit_rng(5);
}  // namespace

// lowbit_gemm on `isa` (whatever lowbit kernel is active or forced); M covers the 2-, 4- and
// 6-row tiles' edges.
void lowbit_sweep(Isa isa, TestCounter& t) {
  struct Shape { size_t m, n, k; };
  const Shape shapes[] = {{1, 1, 1},    {1, 70, 5},    {2, 64, 17},    {3, 130, 1030},
                          {5, 65, 4099}, {9, 33, 2051}, {1, 300, 4096}, {2, 3, 65536},
                          {6, 64, 300},  {7, 130, 1030}, {12, 70, 517}, {13, 200, 4096},
                          // AMX raw tiles from 16 rows: staged last row tiles, a 64-row call +
                          // 13, K tails, extremes over 64 driver K blocks
                          {17, 70, 1030}, {40, 65, 301}, {77, 64, 300}, {20, 3, 65536},
                          // GEMVs over an even / odd number of groups with a short last one
                          // (the decode GEMVs' two streams pair the first and second halves)
                          {1, 64, 300}, {1, 70, 4000}, {1, 65, 4099}};
  for (int bits : {4, 2})
    for (bool a_signed : {false, true})
      for (const Shape& s : shapes)
        for (bool extreme : {false, true}) {
          const int half = 1 << (bits - 1);
          std::vector<uint8_t> a(s.m * s.k);
          std::vector<int8_t> w(s.n * s.k);
          for (auto& x : a)
            x = extreme ? (a_signed ? 0x80 : 0xff) : static_cast<uint8_t>(lowbit_rng());
          for (size_t i = 0; i < w.size(); ++i)
            w[i] = extreme ? static_cast<int8_t>(i % 3 ? -half : half - 1)
                           : static_cast<int8_t>(static_cast<int>(lowbit_rng() % (2 * half)) -
                                                 half);
          std::vector<uint8_t> packed(lowbit_packed_bytes(s.n, s.k, bits));
          lowbit_pack_weights(w.data(), s.n, s.k, bits, packed.data());
          const uint8_t* panels = packed.data() + kPackedAlign;
          std::vector<int32_t> c(s.m * s.n);
          lowbit_gemm_run(a.data(), s.m, s.k, a_signed, panels, s.n, bits, c.data(), 2, isa);
          bool ok = true;
          for (size_t i = 0; i < s.m && ok; ++i)
            for (size_t j = 0; j < s.n && ok; ++j) {
              int64_t acc = 0;
              for (size_t kk = 0; kk < s.k; ++kk) {
                const uint8_t x = a[i * s.k + kk];
                const int64_t av = a_signed ? static_cast<int8_t>(x) : x;
                acc += av * w[j * s.k + kk];
              }
              ok = c[i * s.n + j] == static_cast<int32_t>(static_cast<uint32_t>(acc));
            }
          const std::string what = "lowbit_gemm W" + std::to_string(bits) +
                                   (a_signed ? " s8 " : " u8 ") +
                                   std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                                   std::to_string(s.k) + (extreme ? " extreme" : "");
          t.check(ok, what);
          if (s.k > 8192) continue;
          for (size_t gs : {32, 128}) {
            const size_t ng = div_round_up(s.k, gs);
            std::vector<float> sc(s.n * ng);
            for (auto& x : sc) x = static_cast<float>(lowbit_rng() % 1000) * 1e-3f - 0.3f;
            std::vector<float> f1(s.m * s.n), f2(s.m * s.n);
            lowbit_gemm_grouped_run(a.data(), s.m, s.k, a_signed, panels, s.n, bits, gs, sc.data(),
                                    f1.data(), 2, isa);
            lowbit_gemm_grouped_run(a.data(), s.m, s.k, a_signed, panels, s.n, bits, gs, sc.data(),
                                    f2.data(), 1, Isa::scalar);
            t.check(std::memcmp(f1.data(), f2.data(), f1.size() * sizeof(float)) == 0,
                    what + " grouped g" + std::to_string(gs));
            if (a_signed) continue;
            // the fused forward (uint8 rows): bfloat16 panel scales read by the grouped tiles
            // and GEMVs (panel_scales.h), bit-identical to the scalar path's tile + epilogue
            for (auto& x : sc) {  // bfloat16 values
              uint32_t u;
              std::memcpy(&u, &x, sizeof u);
              u &= 0xffff0000u;
              std::memcpy(&x, &u, sizeof u);
            }
            std::vector<uint16_t> panel(round_up(s.n, kLowbitPanelCols) * ng);
            t.check(lowbit_panel_scales(sc.data(), s.n, ng, panel.data()), what + " panel scales");
            const size_t lda = round_up(s.k, 64);
            std::vector<uint8_t> rows(s.m * lda, 0);
            for (size_t i = 0; i < s.m; ++i) std::memcpy(&rows[i * lda], &a[i * s.k], s.k);
            const float one = 1.0f;
            const Epilogue ep{&one, nullptr, true, nullptr, nullptr, nullptr};
            lowbit_grouped_forward_run(rows.data(), lda, s.m, s.k, panels, s.n, bits, gs,
                                       panel.data(), ep, f1.data(), 2, isa);
            lowbit_grouped_forward_run(rows.data(), lda, s.m, s.k, panels, s.n, bits, gs,
                                       panel.data(), ep, f2.data(), 1, Isa::scalar);
            t.check(std::memcmp(f1.data(), f2.data(), f1.size() * sizeof(float)) == 0,
                    what + " grouped forward g" + std::to_string(gs));
          }
        }
  // W2 groups at the edge of the scaled sums' bound (the AVX-512 and ymm VNNI GEMVs: codes 4c /
  // 16c summed in place while a group or the row is at most kLowbitScaledMaxK k) and one group
  // past it (the unscaled fallback), every weight at code 3 and extreme activations: the scalar
  // path's bits.
  for (bool a_signed : {false, true})
    for (size_t gs : {kLowbitScaledMaxK, kLowbitScaledMaxK + 4}) {
      const size_t m = 1, n = 3, k = gs + 8;
      std::vector<uint8_t> a(m * k, a_signed ? 0x80 : 0xff);
      std::vector<int8_t> w(n * k, 1);  // code 3 of W2
      std::vector<uint8_t> packed(lowbit_packed_bytes(n, k, 2));
      lowbit_pack_weights(w.data(), n, k, 2, packed.data());
      std::vector<float> sc(n * div_round_up(k, gs), 0.5f), f1(m * n), f2(m * n);
      lowbit_gemm_grouped_run(a.data(), m, k, a_signed, packed.data() + kPackedAlign, n, 2, gs,
                              sc.data(), f1.data(), 1, isa);
      lowbit_gemm_grouped_run(a.data(), m, k, a_signed, packed.data() + kPackedAlign, n, 2, gs,
                              sc.data(), f2.data(), 1, Isa::scalar);
      t.check(std::memcmp(f1.data(), f2.data(), f1.size() * sizeof(float)) == 0,
              "lowbit_gemm W2 grouped g" + std::to_string(gs) + (a_signed ? " s8" : " u8") +
                  " at the scaled-sum bound");
      std::vector<int32_t> c1(m * n), c2(m * n);  // the ungrouped GEMV: k past the bound
      lowbit_gemm_run(a.data(), m, k, a_signed, packed.data() + kPackedAlign, n, 2, c1.data(), 1,
                      isa);
      lowbit_gemm_run(a.data(), m, k, a_signed, packed.data() + kPackedAlign, n, 2, c2.data(), 1,
                      Isa::scalar);
      t.check(c1 == c2, "lowbit_gemm W2 " + std::to_string(k) + (a_signed ? " s8" : " u8") +
                            " past the scaled-sum bound");
      if (a_signed) continue;
      // the fused forward's panel GEMVs (uint8 rows; the ymm VNNI one scales in place too)
      const size_t ng = div_round_up(k, gs);
      std::vector<uint16_t> panel(round_up(n, kLowbitPanelCols) * ng);
      t.check(lowbit_panel_scales(sc.data(), n, ng, panel.data()), "panel scales");
      const size_t lda = round_up(k, 64);
      std::vector<uint8_t> rows(lda, 0);
      std::memcpy(rows.data(), a.data(), k);
      const float one = 1.0f;
      const Epilogue ep{&one, nullptr, true, nullptr, nullptr, nullptr};
      lowbit_grouped_forward_run(rows.data(), lda, m, k, packed.data() + kPackedAlign, n, 2, gs,
                                 panel.data(), ep, f1.data(), 1, isa);
      lowbit_grouped_forward_run(rows.data(), lda, m, k, packed.data() + kPackedAlign, n, 2, gs,
                                 panel.data(), ep, f2.data(), 1, Isa::scalar);
      t.check(std::memcmp(f1.data(), f2.data(), f1.size() * sizeof(float)) == 0,
              "lowbit_gemm W2 grouped forward g" + std::to_string(gs) + " at the scaled-sum bound");
    }
}

PQ_REGISTER_NATIVE_TEST(lowbit_gemm, lowbit_sweep);

}  // namespace pq
