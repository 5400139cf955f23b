#include <cstring>

#include "core/macros.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {

PackedHeader lowbit_packed_header(size_t n, size_t k, int bits) {
  const size_t n_pad = round_up(n, kLowbitPanelCols), k_pad = round_up(k, kLowbitGroupK);
  const size_t panels = n_pad / kLowbitPanelCols, k_groups = k_pad / kLowbitGroupK;
  const size_t data = panels * k_groups * lowbit_group_bytes(bits);
  PackedHeader h = make_packed_header(PackedOp::lowbit_gemm, n, k, n_pad, k_pad,
                                      static_cast<uint16_t>(bits), kLowbitPanelCols, kLowbitGroupK);
  h.aux_offset = 0;
  h.total_bytes = kPackedAlign + round_up(data, kPackedAlign);
  return h;
}

size_t lowbit_packed_bytes(size_t n, size_t k, int bits) {
  return lowbit_packed_header(n, k, bits).total_bytes;
}

void lowbit_pack_weights(const int8_t* w, size_t n, size_t k, int bits, uint8_t* out) {
  const size_t n_pad = round_up(n, kLowbitPanelCols), k_pad = round_up(k, kLowbitGroupK);
  const size_t k_groups = k_pad / kLowbitGroupK;
  const size_t gbytes = lowbit_group_bytes(bits);
  const size_t per_byte = 8 / static_cast<size_t>(bits);
  const int offset = 1 << (bits - 1);
  const PackedHeader h = lowbit_packed_header(n, k, bits);
  std::memset(out, 0, h.total_bytes);
  std::memcpy(out, &h, sizeof(h));
  uint8_t* panels = out + h.data_offset;
  for (size_t col = 0; col < n_pad; ++col) {
    const size_t panel = col / kLowbitPanelCols, lane = col % kLowbitPanelCols;
    uint8_t* p = panels + panel * k_groups * gbytes;
    for (size_t kk = 0; kk < k_pad; ++kk) {
      const int code = col < n && kk < k ? w[col * k + kk] : 0;  // padding: w = 0
      const unsigned u = static_cast<unsigned>(code + offset);
      const size_t i = lane * kLowbitGroupK + kk % kLowbitGroupK;  // int8 panel index in [0, 256)
      const size_t q = i / 64, j = i % 64;
      p[(kk / kLowbitGroupK) * gbytes + (q / per_byte) * 64 + j] |=
          static_cast<uint8_t>(u << ((q % per_byte) * bits));
    }
  }
}

}  // namespace pq
