#include <cstring>

#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {

PackedHeader int8_packed_header(size_t n, size_t k, PackedOp op, uint16_t flags) {
  const size_t n_pad = round_up(n, kInt8PanelCols), k_pad = round_up(k, kInt8GroupK);
  PackedHeader h = make_packed_header(op, n, k, n_pad, k_pad, 8, kInt8PanelCols, kInt8GroupK);
  h.flags = flags;
  h.aux_offset = kPackedAlign + round_up(n_pad * k_pad, kPackedAlign);
  h.total_bytes = h.aux_offset + n_pad * sizeof(int32_t);
  return h;
}

size_t int8_packed_bytes(size_t n, size_t k) {
  return int8_packed_header(n, k, PackedOp::int8_gemm, 0).total_bytes;
}

void int8_pack_panels(const int8_t* w, size_t n, size_t k, int8_t* panels, int32_t* col_sums) {
  const size_t n_pad = round_up(n, kInt8PanelCols), k_pad = round_up(k, kInt8GroupK);
  const size_t k_groups = k_pad / kInt8GroupK;
  std::memset(panels, 0, n_pad * k_pad);
  for (size_t col = 0; col < n_pad; ++col) {
    int64_t sum = 0;
    if (col < n) {
      const size_t panel = col / kInt8PanelCols, lane = col % kInt8PanelCols;
      int8_t* dst = panels + panel * k_groups * kInt8PanelGroupBytes + lane * kInt8GroupK;
      const int8_t* src = w + col * k;
      for (size_t kk = 0; kk < k; ++kk) {
        dst[(kk / kInt8GroupK) * kInt8PanelGroupBytes + kk % kInt8GroupK] = src[kk];
        sum += src[kk];
      }
    }
    col_sums[col] = static_cast<int32_t>(sum);  // |sum| <= 128*K: fits for any K < 2^24
  }
}

bool int8_col_sums_match(const int8_t* panels, const int32_t* col_sums, size_t n, size_t k,
                         size_t* bad_col, int32_t* want) {
  const size_t k_groups = round_up(k, kInt8GroupK) / kInt8GroupK;
  for (size_t c0 = 0; c0 < n; c0 += kInt8PanelCols) {  // panel by panel, in memory order
    const int8_t* g = panels + (c0 / kInt8PanelCols) * k_groups * kInt8PanelGroupBytes;
    int32_t sums[kInt8PanelCols] = {};  // |sum| <= 128 * K: fits (packed_format.h)
    for (size_t kk = 0; kk < k; kk += kInt8GroupK, g += kInt8PanelGroupBytes) {
      const size_t depth = k - kk < kInt8GroupK ? k - kk : kInt8GroupK;  // not the K padding
      for (size_t lane = 0; lane < kInt8PanelCols; ++lane)
        for (size_t j = 0; j < depth; ++j) sums[lane] += g[lane * kInt8GroupK + j];
    }
    for (size_t lane = 0; lane < kInt8PanelCols && c0 + lane < n; ++lane)
      if (sums[lane] != col_sums[c0 + lane]) {
        *bad_col = c0 + lane;
        *want = sums[lane];
        return false;
      }
  }
  return true;
}

void int8_pack_weights(const int8_t* w, size_t n, size_t k, PackedOp op, uint16_t flags,
                       uint8_t* out) {
  const PackedHeader h = int8_packed_header(n, k, op, flags);
  std::memset(out, 0, h.total_bytes);
  std::memcpy(out, &h, sizeof(h));
  int8_pack_panels(w, n, k, reinterpret_cast<int8_t*>(out + h.data_offset),
                   reinterpret_cast<int32_t*>(out + h.aux_offset));
}

}  // namespace pq
