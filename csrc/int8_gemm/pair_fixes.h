// The pair route's fixes of a block of rows (Int8GroupFix, int8_gemm.h): on a path that has it
// (AVX2's vpmaddubsw tile), 8-bit uint8 rows (or sign_xor rows' magnitudes) are split into
// pair-safe rows (its fast route) and fixes, at most k groups / 8 + 1 per row, added to the int32
// output after the tile; a row that needs more stays whole (its tiles take the split route).
// Paths with add_fixes but no pair route (the VNNI kernels) hold only the fixes a caller writes
// itself (SPARQ's offset rows: split_after), any number per row (the block's guess bounds their
// share). Inactive on other paths. Used by int8_gemm_run and SPARQ's drivers.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "int8_gemm/int8_gemm.h"

namespace pq {

class PairFixes {
 public:
  // Bytes of storage for rows_max rows of k_pad (0: the path adds no fixes).
  static size_t storage_bytes(const Int8GemmKernels& kern, size_t rows_max, size_t k_pad) {
    return kern.add_fixes ? rows_max * cap(kern, k_pad) * sizeof(Int8GroupFix) : 0;
  }
  // storage: storage_bytes(...) bytes, aligned for Int8GroupFix (unused when inactive).
  PairFixes(const Int8GemmKernels& kern, size_t rows_max, size_t k_pad, void* storage)
      : kern_(kern),
        k_pad_(k_pad),
        cap_(cap(kern, k_pad)),
        fixes_(kern.add_fixes ? static_cast<Int8GroupFix*>(storage) : nullptr),
        count_(kern.add_fixes ? rows_max : 0) {}
  // The path adds fixes (split_after's own, at least).
  bool active() const { return fixes_ != nullptr; }
  // The path has the pair route (split).
  bool splits() const { return active() && kern_.pair_split != nullptr; }
  // Splits row r (k_pad bytes, in place; signs: its sign bytes if it is a sign_xor row); false
  // if it stays whole. Only where splits().
  bool split(size_t r, uint8_t* row, const uint8_t* signs = nullptr) {
    const size_t got = kern_.pair_split(row, signs, k_pad_, fixes_ + r * cap_, cap_);
    count_[r] = got == SIZE_MAX ? 0 : got;
    return got != SIZE_MAX;
  }
  // Room for the fixes of one row.
  size_t row_cap() const { return cap_; }
  // split() after the row's own fixes `pre` (n_pre <= row_cap(): what its bytes could not hold),
  // which are kept whether or not the row splits (without the pair route: only those; true).
  bool split_after(size_t r, uint8_t* row, const Int8GroupFix* pre, size_t n_pre) {
    Int8GroupFix* out = fixes_ + r * cap_;
    std::copy(pre, pre + n_pre, out);
    if (!kern_.pair_split) {
      count_[r] = n_pre;
      return true;
    }
    const size_t got = kern_.pair_split(row, nullptr, k_pad_, out + n_pre, cap_ - n_pre);
    count_[r] = n_pre + (got == SIZE_MAX ? 0 : got);
    return got != SIZE_MAX;
  }
  // Fixes of row r (0 if it was left whole, but for split_after's own).
  size_t count(size_t r) const { return count_[r]; }
  // Adds rows [r0, r1)'s fixes to their outputs (row r at c + r * ldc) in one panel.
  void add(size_t r0, size_t r1, const int8_t* panels, size_t panel, int32_t* c, size_t ldc,
           size_t n) const {
    const int8_t* panel_b = panels + panel * (k_pad_ / kInt8GroupK) * kInt8PanelGroupBytes;
    const size_t n0 = panel * kInt8PanelCols, nc = std::min(n - n0, kInt8PanelCols);
    for (size_t r = r0; r < r1; ++r)
      kern_.add_fixes(panel_b, fixes_ + r * cap_, count_[r], c + r * ldc + n0, nc);
  }

 private:
  static size_t cap(const Int8GemmKernels& kern, size_t k_pad) {
    // (without the pair route: two per k group, one of each sign, the most a row can have)
    return kern.pair_split ? k_pad / kInt8GroupK / 8 + 1 : 2 * (k_pad / kInt8GroupK);
  }

  const Int8GemmKernels& kern_;
  size_t k_pad_, cap_;
  Int8GroupFix* fixes_;
  std::vector<size_t> count_;
};

}  // namespace pq
