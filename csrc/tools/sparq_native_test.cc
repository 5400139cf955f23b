// Native checks for SPARQ (run on aarch64 under qemu by scripts/neon-qemu.sh): every path's
// trimming against the scalar reference on every ordered pair of uint8 values and on short odd
// rows, for every config; sparq_gemm against an int64 oracle over the scalar-trimmed values.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "int8_gemm/int8_gemm.h"
#include "sparq/sparq.h"
#include "tools/test_registry.h"

namespace pq {
namespace {

std::vector<SparqConfig> all_configs() {
  std::vector<SparqConfig> out;
  const int bo[5][2] = {{4, 5}, {4, 3}, {4, 2}, {3, 6}, {2, 7}};
  for (auto& c : bo)
    for (bool round : {true, false})
      for (bool pairs : {true, false}) out.push_back({c[0], c[1], round, pairs});
  return out;
}

std::string name(const SparqConfig& c) {
  return "b" + std::to_string(c.bits) + "o" + std::to_string(c.options) +
         (c.round ? " round" : " trunc") + (c.pairs ? " pairs" : " single");
}

void test_sparq(Isa isa, TestCounter& t) {
  std::mt19937_64 rng(6);
  std::vector<uint8_t> pairs(2 * 65536);
  for (size_t i = 0; i < 65536; ++i) {
    pairs[2 * i] = static_cast<uint8_t>(i >> 8);
    pairs[2 * i + 1] = static_cast<uint8_t>(i);
  }
  const SparqTrimRowFn trim = sparq_kernels(isa).trim_row;
  for (const SparqConfig& cfg : all_configs()) {
    SparqPlan plan;
    sparq_make_plan(cfg, &plan);
    std::vector<uint8_t> got(pairs.size()), want(pairs.size());
    trim(plan, pairs.data(), pairs.size(), got.data());
    sparq_trim_row_scalar(plan, pairs.data(), pairs.size(), want.data());
    t.check(got == want, "every pair " + name(cfg));
    bool ok = true;
    for (size_t k = 1; k <= 70 && ok; ++k) {
      std::vector<uint8_t> a(k), g(k + 1, 0xaa), w(k);
      for (auto& x : a) x = (rng() & 1) ? static_cast<uint8_t>(rng()) : 0;
      trim(plan, a.data(), k, g.data());
      sparq_trim_row_scalar(plan, a.data(), k, w.data());
      ok = std::memcmp(g.data(), w.data(), k) == 0 && g[k] == 0xaa;  // and no write past k
    }
    t.check(ok, "short rows " + name(cfg));
  }
  // Compact format: encode (trim + pack) then decode gives the trimmed values back.
  for (const SparqConfig& cfg : all_configs()) {
    SparqPlan plan;
    sparq_make_plan(cfg, &plan);
    bool ok = true;
    for (size_t k : {size_t{1}, size_t{2}, size_t{3}, size_t{31}, size_t{64}, size_t{131072}}) {
      const uint8_t* a = pairs.data();  // every ordered pair at k = 131072
      std::vector<uint8_t> payload(2 * sparq_encoded_row_bytes(cfg, k)), back(2 * k), want(k);
      sparq_encode_run(a, 1, k, cfg, payload.data(), 1, isa);
      sparq_decode_run(payload.data(), 1, k, cfg, back.data(), 1);
      sparq_trim_row_scalar(plan, a, k, want.data());
      ok = ok && std::memcmp(back.data(), want.data(), k) == 0;
    }
    t.check(ok, "encode/decode " + name(cfg));
  }
  // GEMM: several M blocks (K = 16384), odd K, N tails.
  struct Shape { size_t m, n, k; };
  for (Shape s : {Shape{7, 65, 5}, Shape{13, 130, 67}, Shape{70, 33, 16384}}) {
    for (const SparqConfig& cfg : {SparqConfig{4, 5, true, true}, SparqConfig{2, 7, false, false}}) {
      std::vector<uint8_t> a(s.m * s.k), q(s.m * s.k);
      std::vector<int8_t> w(s.n * s.k);
      for (auto& x : a) x = (rng() & 1) ? static_cast<uint8_t>(rng()) : 0;
      for (auto& x : w) x = static_cast<int8_t>(rng());
      SparqPlan plan;
      sparq_make_plan(cfg, &plan);
      for (size_t i = 0; i < s.m; ++i)
        sparq_trim_row_scalar(plan, a.data() + i * s.k, s.k, q.data() + i * s.k);
      std::vector<uint8_t> packed(int8_packed_bytes(s.n, s.k));
      int8_pack_weights(w.data(), s.n, s.k, PackedOp::sparq_gemm, sparq_flags(cfg), packed.data());
      PackedHeader h;
      std::memcpy(&h, packed.data(), sizeof h);
      std::vector<int32_t> c(s.m * s.n, 12345);
      sparq_gemm_run(a.data(), s.m, s.k, cfg,
                     reinterpret_cast<const int8_t*>(packed.data() + h.data_offset),
                     reinterpret_cast<const int32_t*>(packed.data() + h.aux_offset), s.n, c.data(),
                     2, isa);
      bool ok = true;
      for (size_t i = 0; i < s.m && ok; ++i)
        for (size_t j = 0; j < s.n && ok; ++j) {
          int64_t acc = 0;
          for (size_t kk = 0; kk < s.k; ++kk) acc += int64_t{q[i * s.k + kk]} * w[j * s.k + kk];
          ok = static_cast<int32_t>(acc) == c[i * s.n + j];
        }
      std::vector<uint8_t> payload(s.m * sparq_encoded_row_bytes(cfg, s.k));
      sparq_encode_run(a.data(), s.m, s.k, cfg, payload.data(), 2, isa);
      std::vector<int32_t> c2(s.m * s.n, 54321);
      sparq_gemm_encoded_run(payload.data(), s.m, s.k, cfg,
                             reinterpret_cast<const int8_t*>(packed.data() + h.data_offset),
                             reinterpret_cast<const int32_t*>(packed.data() + h.aux_offset), s.n,
                             c2.data(), 2, isa);
      ok = ok && c2 == c;
      t.check(ok, "sparq_gemm (+ from the compact format) " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                      std::to_string(s.k) + " " + name(cfg));
    }
  }
}

// 2:4-sparse weights: sparq24_gemm_run against an int64 oracle written from the rule (pairs at
// the non-zero weights, singles with a zero partner), M blocks and K blocks, every config; and
// arbitrary payload bytes (selectors 10..15 included) giving the scalar kernel's result.
void test_sparq24(Isa isa, TestCounter& t) {
  std::mt19937_64 rng(24);
  // The path's selector tables equal the scalar ones byte for byte (every k tail, runs of zeros,
  // 255s), and it writes nothing past ceil(k / 4) groups.
  const Sparq24TablesRowFn tables_row = sparq_kernels(isa).tables24;
  for (const SparqConfig& cfg : all_configs()) {
    SparqPlan plan;
    sparq_make_plan(cfg, &plan);
    bool ok = true;
    for (size_t k : {1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 67, 68, 127, 128, 129, 130, 255, 256, 259,
                     1031}) {
      std::vector<uint8_t> a(k);
      for (auto& x : a) {
        const uint64_t r = rng();
        x = r % 4 == 0 ? 0 : r % 4 == 1 ? 255 : static_cast<uint8_t>(r >> 8);
      }
      const size_t bytes = (k + 3) / 4 * kS24TableBytes;
      std::vector<uint8_t> got(bytes + 64, 0xaa), want(bytes);
      tables_row(plan, a.data(), k, got.data());
      sparq24_tables_row(plan, a.data(), k, want.data());
      ok = ok && std::memcmp(got.data(), want.data(), bytes) == 0 &&
           std::all_of(got.begin() + bytes, got.end(), [](uint8_t v) { return v == 0xaa; });
    }
    t.check(ok, "sparq24 tables " + name(cfg));
  }
  // The path's one-pass signed tables (where it has them) equal the tables then the sign split,
  // with and without narrow tables, and write nothing past ceil(k / 4) groups.
  if (const Sparq24TablesRowSignedFn tables_signed = sparq_kernels(isa).tables24_signed) {
    for (const SparqConfig& cfg : all_configs()) {
      SparqPlan plan;
      sparq_make_plan(cfg, &plan);
      bool ok = true;
      for (size_t k : {1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 259, 1031}) {
        for (bool narrow : {false, true}) {
          std::vector<uint8_t> a(k), negative(k);
          for (size_t i = 0; i < k; ++i) {
            const uint64_t r = rng();
            a[i] = r % 4 == 0 ? 0 : r % 4 == 1 ? 255 : static_cast<uint8_t>(r >> 8);
            negative[i] = r % 3 == 0 ? static_cast<uint8_t>(1 + (r >> 16) % 255) : 0;
          }
          const size_t groups = (k + 3) / 4, bytes = groups * kS24TableBytes;
          std::vector<uint8_t> pos(bytes + 64, 0xaa), neg(bytes + 64, 0xaa), want(bytes),
              want_neg(bytes);
          std::vector<uint64_t> high((groups + 63) / 64, ~uint64_t{0}), want_high(high.size());
          const size_t count = tables_signed(plan, a.data(), negative.data(), k, pos.data(),
                                             neg.data(), narrow ? high.data() : nullptr);
          sparq24_tables_row(plan, a.data(), k, want.data());
          // the ymm kernels' narrow format is sparq24_split_tables'; the zmm kernel's holds
          // l + 128 and h + 1 for each signed table value t = l + 128 * h (|l| < 128)
          const bool zmm = narrow && isa == Isa::avx512;
          const size_t want_count = sparq24_split_tables(
              want.data(), negative.data(), k, want_neg.data(),
              narrow ? want_high.data() : nullptr);
          if (zmm) {
            sparq24_tables_row(plan, a.data(), k, want.data());
            sparq24_split_tables(want.data(), negative.data(), k, want_neg.data());
            for (size_t i = 0; i < bytes; ++i) {
              const int l = pos[i] - 128, h = neg[i] - 1;
              ok = ok && l > -128 && h >= -1 && h <= 1 && l + 128 * h == want[i] - want_neg[i];
            }
          }
          ok = ok && count == want_count && (!narrow || high == want_high) &&
               (zmm || (std::memcmp(pos.data(), want.data(), bytes) == 0 &&
                        std::memcmp(neg.data(), want_neg.data(), bytes) == 0)) &&
               std::all_of(pos.begin() + bytes, pos.end(), [](uint8_t v) { return v == 0xaa; }) &&
               std::all_of(neg.begin() + bytes, neg.end(), [](uint8_t v) { return v == 0xaa; });
        }
      }
      t.check(ok, "sparq24 signed tables " + name(cfg));
    }
  }
  // The sign split: every sign pattern of a group (k tails 1-3 too) moves exactly the bytes
  // whose activation position is negative: E0[s] / E1[s] of pair s at its first / second
  // position (E0[10 + s] repeats E1[s]), E0[6 + j] of single j; E1[6..15] hold nothing.
  {
    bool ok = true;
    SparqPlan plan;
    sparq_make_plan(SparqConfig{}, &plan);
    for (size_t k : {1, 2, 3, 4, 8}) {
      for (unsigned signs = 0; signs < (1u << k); ++signs) {
        std::vector<uint8_t> a(k), negative(k);
        for (size_t i = 0; i < k; ++i) {
          a[i] = static_cast<uint8_t>(rng() % 255 + 1);
          negative[i] = (signs >> i) & 1u;
        }
        const size_t bytes = (k + 3) / 4 * kS24TableBytes;
        std::vector<uint8_t> tables(bytes), pos(bytes), neg(bytes, 0xaa);
        sparq24_tables_row(plan, a.data(), k, tables.data());
        pos = tables;
        sparq24_split_tables(pos.data(), negative.data(), k, neg.data());
        for (size_t e = 0; e < bytes; ++e) {
          const size_t g = e / kS24TableBytes, b = e % kS24TableBytes, s = b % 16;
          int at = -1;  // the activation position this byte holds
          if (s < 6) at = kS24PairPos[s][b / 16];
          else if (s < 10 && b < 16) at = static_cast<int>(s - 6);
          else if (s >= 10 && b < 16) at = kS24PairPos[s - 10][1];
          const bool is_neg = at >= 0 && 4 * g + at < k && negative[4 * g + at];
          ok = ok && pos[e] == (is_neg ? 0 : tables[e]) && neg[e] == (is_neg ? tables[e] : 0);
        }
      }
    }
    t.check(ok, "sparq24 sign split");
    // With narrow tables: E0 parts as above, every E0 value pos - neg = l + 128 * h (l in
    // tables' E1 half, h in neg's), and a group's high bit set iff one of its values is >= 128
    // in magnitude; also without negative flags (a row of non-negative values).
    ok = true;
    for (size_t k : {1, 3, 4, 8, 300}) {
      for (int round = 0; round < 40; ++round) {
        std::vector<uint8_t> a(k), negative(k);
        for (size_t i = 0; i < k; ++i) {
          a[i] = static_cast<uint8_t>(rng() % 2 ? rng() % 128 : rng() % 256);
          negative[i] = rng() % 2;
        }
        const size_t groups = (k + 3) / 4, bytes = groups * kS24TableBytes;
        std::vector<uint8_t> tables(bytes), pos(bytes), neg(bytes, 0xaa), split(bytes),
            split_neg(bytes, 0xaa);
        std::vector<uint64_t> high((groups + 63) / 64, ~uint64_t{0});
        sparq24_tables_row(plan, a.data(), k, tables.data());
        const bool no_negatives = round % 4 == 0;
        const uint8_t* flags = no_negatives ? nullptr : negative.data();
        pos = split = tables;
        if (no_negatives) std::fill(split_neg.begin(), split_neg.end(), 0);
        else sparq24_split_tables(split.data(), flags, k, split_neg.data());
        const size_t count = sparq24_split_tables(pos.data(), flags, k, neg.data(), high.data());
        size_t want_count = 0;
        for (size_t g = 0; g < groups; ++g) {
          bool any_high = false;
          for (size_t e = 0; e < 16; ++e) {
            const size_t i = g * kS24TableBytes + e;
            const int value = split[i] - split_neg[i];
            ok = ok && pos[i] == split[i] && neg[i] == split_neg[i];
            ok = ok && static_cast<int8_t>(pos[i + 16]) + 128 * static_cast<int8_t>(neg[i + 16]) ==
                           value;
            ok = ok && std::abs(static_cast<int8_t>(pos[i + 16])) < 128;
            any_high = any_high || value >= 128 || value <= -128;
          }
          want_count += any_high;
          ok = ok && ((high[g / 64] >> (g % 64)) & 1u) == (any_high ? 1u : 0u);
        }
        for (size_t g = groups; g < 64 * high.size(); ++g) ok = ok && !((high[g / 64] >> (g % 64)) & 1u);
        ok = ok && count == want_count;
      }
    }
    t.check(ok, "sparq24 narrow tables");
  }
  // few_high: magnitudes mostly below 128 (signed rows: the narrow tables' pass over the few
  // high groups)
  struct Shape { size_t m, n, k; bool few_high; };
  for (Shape s : {Shape{1, 1, 1, false}, Shape{3, 33, 7, false}, Shape{5, 70, 37, false},
                  Shape{1, 40, 8223, false}, Shape{1, 40, 8219, false},
                  Shape{2, 40, 8214, false},  // decode streams' tails
                  Shape{19, 40, 16384, false}, Shape{9, 70, 1031, true},
                  Shape{19, 40, 16384, true}}) {
    for (const SparqConfig& cfg : all_configs()) {
      if (s.k > 1000 && !(cfg.bits == 4 && cfg.options == 5)) continue;
      std::vector<uint8_t> a(s.m * s.k);
      std::vector<int8_t> w(s.n * s.k, 0);
      for (auto& x : a) {
        const uint64_t r = rng();
        x = r % 3 == 0 ? 0
            : !s.few_high ? static_cast<uint8_t>(r >> 8)
            : static_cast<uint8_t>(r % 40 == 1 ? 128 + (r >> 8) % 128 : (r >> 8) % 128);
      }
      for (size_t r = 0; r < s.n; ++r)
        for (size_t g = 0; 4 * g < s.k; ++g)
          for (int j = 0; j < 4; ++j)
            if (rng() % 2 && 4 * g + j < s.k) {
              int nz = 0;
              for (int i = 0; i < j; ++i) nz += w[r * s.k + 4 * g + i] != 0;
              if (nz < 2) w[r * s.k + 4 * g + j] = static_cast<int8_t>(rng() | 1);
            }
      const PackedHeader h = sparq24_packed_header(s.n, s.k, sparq_flags(cfg));
      std::vector<uint8_t> packed(h.total_bytes);
      sparq24_pack_weights(w.data(), s.n, s.k, sparq_flags(cfg), packed.data());
      // sign-magnitude rows: the same magnitudes, about half of them negative, and a row
      // block without negative values (rows 4..7)
      std::vector<int16_t> a_signed(s.m * s.k);
      for (size_t i = 0; i < a.size(); ++i)
        a_signed[i] = static_cast<int16_t>(rng() % 2 && (i / s.k) / 4 != 1 ? -a[i] : a[i]);
      std::vector<int32_t> c(s.m * s.n, 12345), c_signed(s.m * s.n, 12345);
      sparq24_gemm_run(a.data(), s.m, s.k, cfg, packed.data() + h.data_offset, s.n, c.data(), 2,
                       isa);
      sparq24_gemm_signed_run(a_signed.data(), s.m, s.k, cfg, packed.data() + h.data_offset, s.n,
                              c_signed.data(), 2, isa);
      const uint32_t narrow = sparq_shift_mask(cfg.bits, cfg.options);
      const uint32_t wide = cfg.pairs ? sparq_zero_partner_mask(cfg.bits) : narrow;
      const int nw = cfg.pairs ? 2 * cfg.bits : cfg.bits;
      // sign(v) * trim(|v|) of activation kk of row i, pairs judged on magnitudes
      auto value = [&](bool signed_rows, size_t i, size_t kk, int n_, uint32_t m_) {
        const int64_t v = int64_t{sparq_trim_value(a[i * s.k + kk], n_, m_, cfg.round)};
        return signed_rows && a_signed[i * s.k + kk] < 0 ? -v : v;
      };
      bool ok = true, ok_signed = true;
      for (size_t i = 0; i < s.m; ++i)
        for (size_t j = 0; j < s.n; ++j)
          for (bool sg : {false, true}) {
            int64_t acc = 0;
            for (size_t g = 0; 4 * g < s.k; ++g) {
              size_t pos[2];
              int cnt = 0;
              for (size_t kk = 4 * g; kk < std::min(s.k, 4 * g + 4); ++kk)
                if (w[j * s.k + kk] != 0) pos[cnt++] = kk;
              if (cnt == 1) {
                acc += value(sg, i, pos[0], nw, wide) * w[j * s.k + pos[0]];
              } else if (cnt == 2) {
                const uint8_t x0 = a[i * s.k + pos[0]], x1 = a[i * s.k + pos[1]];
                const bool z = cfg.pairs && (x0 == 0 || x1 == 0);
                const int n_ = z ? nw : cfg.bits;
                const uint32_t m_ = z ? wide : narrow;
                acc += value(sg, i, pos[0], n_, m_) * w[j * s.k + pos[0]] +
                       value(sg, i, pos[1], n_, m_) * w[j * s.k + pos[1]];
              }
            }
            bool& flag = sg ? ok_signed : ok;
            flag = flag && static_cast<int32_t>(acc) == (sg ? c_signed : c)[i * s.n + j];
          }
      t.check(ok, "sparq24_gemm " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                      std::to_string(s.k) + " " + name(cfg));
      t.check(ok_signed, "sparq24_gemm signed rows " + std::to_string(s.m) + "x" +
                             std::to_string(s.n) + "x" + std::to_string(s.k) + " " + name(cfg));
      if (s.k > 1000 || !(cfg.bits == 4 && cfg.options == 5 && cfg.round && cfg.pairs)) continue;
      for (size_t i = h.data_offset; i < packed.size(); ++i) packed[i] = static_cast<uint8_t>(rng());
      std::vector<int32_t> c_isa(s.m * s.n), c_ref(s.m * s.n);
      sparq24_gemm_run(a.data(), s.m, s.k, cfg, packed.data() + h.data_offset, s.n, c_isa.data(),
                       1, isa);
      sparq24_gemm_run(a.data(), s.m, s.k, cfg, packed.data() + h.data_offset, s.n, c_ref.data(),
                       1, Isa::scalar);
      t.check(c_isa == c_ref, "sparq24_gemm random payload " + std::to_string(s.m) + "x" +
                                  std::to_string(s.n) + "x" + std::to_string(s.k));
    }
  }
}

PQ_REGISTER_NATIVE_TEST(sparq, test_sparq);
PQ_REGISTER_NATIVE_TEST(sparq24, test_sparq24);

}  // namespace
}  // namespace pq
