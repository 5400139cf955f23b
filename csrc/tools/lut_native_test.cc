// Native checks for lut_gemm (run on aarch64 under qemu by scripts/neon-qemu.sh, or natively):
// every kernel of the path against an int64 oracle, over codebooks that hit every accumulation
// schedule, M/N/K tails and a long-K extreme.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cmath>
#include <limits>

#include "lut_gemm/lut_gemm.h"
#include "quantize/act_quantize.h"
#include "tools/test_registry.h"

namespace pq {
namespace {

void test_lut_gemm(Isa isa, TestCounter& t) {
  std::mt19937_64 rng(4);
  const int32_t books[][2][4] = {
      {{0, 1, 2, 3}, {-2, -1, 0, 1}},   {{-3, -1, 1, 3}, {0, 1, 2, 5}},
      {{-8, -4, 0, 7}, {16, -8, 3, 0}}, {{-7, -1, 0, 1}, {9, 0, 1, 2}},
      {{2, 2, 2, 2}, {-3, -3, -3, -3}}, {{0, 1, 5, 17}, {-1, 0, 1, 4}},
  };
  struct Shape { size_t m, n, k; bool extreme; };
  const Shape shapes[] = {{1, 1, 1, false},   {3, 7, 11, false},   {5, 64, 12, false},
                          {6, 65, 13, false}, {9, 130, 37, false}, {4, 129, 1001, false},
                          {2, 64, 3073, false}, {7, 70, 600, false}, {2, 3, 20000, true}};
  for (const auto& book : books) {
    const LutCodebook cb = lut_codebook(book[0], book[1]);
    int8_t wl[4];
    for (int i = 0; i < 4; ++i) wl[i] = static_cast<int8_t>(book[1][i]);
    for (LutKernel kern :
         {LutKernel::scalar, LutKernel::deepgemm, LutKernel::vpermb, LutKernel::pair}) {
      LutKernel chosen;
      if (lut_select(isa, kern, cb, &chosen).fn == nullptr) continue;
      for (const Shape& s : shapes) {
        std::vector<uint8_t> a(s.m * s.k), w(s.n * s.k);
        for (auto& x : a) x = s.extreme ? 3 : static_cast<uint8_t>(rng() & 3);
        for (auto& x : w) x = s.extreme ? 0 : static_cast<uint8_t>(rng() & 3);
        std::vector<uint8_t> packed(lut_packed_bytes(s.n, s.k));
        lut_pack_weights(w.data(), s.n, s.k, wl, packed.data());
        std::vector<int32_t> c(s.m * s.n, 12345);
        lut_gemm_run(a.data(), s.m, s.k, s.k, packed.data() + kPackedAlign, s.n, cb, c.data(), 2,
                     isa, kern);
        bool ok = true;
        for (size_t i = 0; i < s.m && ok; ++i)
          for (size_t j = 0; j < s.n && ok; ++j) {
            int64_t acc = 0;
            for (size_t kk = 0; kk < s.k; ++kk)
              acc += int64_t{book[0][a[i * s.k + kk]]} * book[1][w[j * s.k + kk]];
            ok = static_cast<int32_t>(acc) == c[i * s.n + j];
          }
        t.check(ok, std::string("lut_gemm ") + lut_kernel_name(kern) + " " +
                        std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                        std::to_string(s.k) + " levels " + std::to_string(book[0][3]) + "/" +
                        std::to_string(book[1][0]));
      }
    }
  }
}

// LUT2's activation quantizer on this path against the scalar loops, bit for bit (codes, s and
// off): rows with NaN (first and later), +-0 in every order, +-inf, denormals, all-equal rows,
// every length to 70 and a long one, minmax and mse, two level sets.
void test_lut_act_quantize(Isa isa, TestCounter& t) {
  std::mt19937_64 rng(2);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.0f, -0.0f, nan, inf, -inf, 1e-40f, -1e-40f, 1.0f, -1.0f};
  const int32_t level_sets[2][4] = {{0, 1, 2, 3}, {3, -1, 1, -3}};
  bool ok = true;
  std::string what;
  for (const auto& levels : level_sets) {
    const LutActLevels lv = lut_act_levels(levels);
    for (size_t k = 1; k <= 1100 && ok; k += (k < 70 ? 1 : 343)) {
      for (int kind = 0; kind < 8 && ok; ++kind) {
        std::vector<float> x(k);
        for (size_t i = 0; i < k; ++i) {
          const uint64_t r = rng();
          float v = static_cast<float>(static_cast<int64_t>(r % 2001) - 1000) / 37.0f;
          if (kind == 1) v = std::fabs(v);                   // a ReLU row: min 0 likely
          if (kind == 2) v = -std::fabs(v);                  // max 0 likely
          if (kind >= 3 && r % 5 == 0) v = specials[(r >> 8) % 9];
          if (kind == 4 && r % 3 == 0) v = (r & 64) ? 0.0f : -0.0f;
          if (kind == 5) v = (r & 1) ? 0.0f : -0.0f;        // only zeros
          if (kind == 6) v = 2.5f;                           // constant
          x[i] = v;
        }
        if (kind == 7) x[0] = nan;
        for (bool mse : {false, true}) {
          std::vector<uint8_t> got(k), want(k);
          float gs, go, ws, wo;
          lut_quantize_row(x.data(), k, lv, mse, false, 0, 0, isa, got.data(), &gs, &go);
          lut_quantize_row(x.data(), k, lv, mse, false, 0, 0, Isa::scalar, want.data(), &ws, &wo);
          const bool same = got == want && std::memcmp(&gs, &ws, 4) == 0 &&
                            std::memcmp(&go, &wo, 4) == 0;
          if (!same) {
            ok = false;
            what = " k=" + std::to_string(k) + " kind=" + std::to_string(kind) +
                   (mse ? " mse" : " minmax");
          }
        }
      }
    }
  }
  t.check(ok, "lut activation quantizer" + what);
  // The range's zero sign: rows whose extreme is 0 with zeros of both signs after a non-zero
  // x[0], in both orders and at every lane position (the vector lanes' zeros differ; the
  // scalar rule keeps the first).
  const LutRowRangeFn range = lut_row_range_kernel(isa);
  bool zeros_ok = true;
  for (size_t k : {16, 17, 31, 32, 33, 47, 70, 413}) {
    for (size_t p = 1; p + 1 < k && zeros_ok; ++p) {
      for (float sign : {1.0f, -1.0f}) {
        std::vector<float> x(k, sign);  // min 0 (sign 1) or max 0 (sign -1)
        x[p] = sign > 0 ? -0.0f : 0.0f;
        x[k - 1 - (p % 3)] = sign > 0 ? 0.0f : -0.0f;
        if (p % 5 == 0) x[(p * 7) % k] = nan;
        float gl, gh, wl, wh;
        range(x.data(), k, &gl, &gh);
        lut_row_range(x.data(), k, &wl, &wh);
        zeros_ok = std::memcmp(&gl, &wl, 4) == 0 && std::memcmp(&gh, &wh, 4) == 0;
        if (!zeros_ok) what = " zero sign k=" + std::to_string(k) + " p=" + std::to_string(p);
      }
    }
  }
  t.check(zeros_ok, "lut row range" + what);

  // The mse estimator's histogram, counts compared directly (a wrong count need not change the
  // chosen candidate): every tail to 40, values on bin edges and the last bin, NaN, +-inf, and
  // inv_bw = inf (a denormal-wide range: t = 0 * inf is NaN) or 0.
  const LutHistogramFn hist = lut_histogram_kernel(isa);
  bool hist_ok = true;
  const float lo = -3.0f, hi = 5.0f;
  for (float inv_bw : {kLutBins / (hi - lo), inf, 0.0f, kLutBins / 1e-45f}) {
    for (size_t k = 1; k <= 1000 && hist_ok; k += (k < 40 ? 1 : 321)) {
      std::vector<float> x(k);
      for (size_t i = 0; i < k; ++i) {
        const uint64_t r = rng();
        const float edge = lo + static_cast<float>(r % (kLutBins + 1)) * (hi - lo) / kLutBins;
        x[i] = r % 4 == 0 ? specials[(r >> 8) % 9] : r % 4 == 1 ? edge
               : lo + static_cast<float>((r >> 16) % 100000) * (hi - lo) / 99999.0f;
      }
      uint32_t got[kLutBins] = {}, want[kLutBins] = {};
      uint64_t got_occ[kLutBins / 64], want_occ[kLutBins / 64];
      std::memset(got_occ, 0xa5, sizeof got_occ);  // every word must be written
      hist(x.data(), k, lo, inv_bw, got, got_occ);
      lut_histogram(x.data(), k, lo, inv_bw, want);
      for (int w = 0; w < kLutBins / 64; ++w) {  // the bitmap from its definition
        want_occ[w] = 0;
        for (int i = 0; i < 64; ++i) want_occ[w] |= uint64_t{want[64 * w + i] != 0} << i;
      }
      hist_ok = std::memcmp(got, want, sizeof got) == 0 &&
                std::memcmp(got_occ, want_occ, sizeof got_occ) == 0;
      if (!hist_ok) what = " histogram k=" + std::to_string(k);
    }
  }
  t.check(hist_ok, "lut histogram" + what);
}

}  // namespace

PQ_REGISTER_NATIVE_TEST(lut_gemm, test_lut_gemm);
PQ_REGISTER_NATIVE_TEST(lut_act_quantize, test_lut_act_quantize);

}  // namespace pq
