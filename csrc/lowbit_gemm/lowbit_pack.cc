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

namespace {

// Code index i = lane * KR + k % KR of a k-group lives in plane i / 64, byte
// (plane / per_byte) * 64 + i % 64, bits (plane % per_byte) * kBits: a lane's KR = 4 codes are 4
// consecutive bytes of one plane, so each is one 32-bit load, xor (code + offset = code ^ offset
// in kBits bits), mask, shift and or. The 64 rows a group reads stay in L1 for the next groups.
template <int kBits>
void pack_panels(const int8_t* w, size_t n, size_t k, size_t panels, size_t k_groups,
                 uint8_t* out) {
  constexpr size_t per_byte = 8 / kBits, gbytes = lowbit_group_bytes(kBits);
  constexpr uint32_t offset = 0x01010101u << (kBits - 1), mask = 0x01010101u * ((1u << kBits) - 1);
  static_assert(kLowbitPanelCols == 64 && kLowbitGroupK == 4, "a lane's codes are 4 bytes");
  for (size_t panel = 0; panel < panels; ++panel) {
    uint8_t* p = out + panel * k_groups * gbytes;
    for (size_t kg = 0; kg < k_groups; ++kg, p += gbytes) {
      const size_t k0 = kg * kLowbitGroupK;
      for (size_t lane = 0; lane < kLowbitPanelCols; ++lane) {
        const size_t col = panel * kLowbitPanelCols + lane;
        uint32_t x = 0;  // padding: w = 0
        if (col < n && k0 + 4 <= k) {
          std::memcpy(&x, w + col * k + k0, 4);
        } else if (col < n) {
          for (size_t j = 0; k0 + j < k; ++j) x |= uint32_t{static_cast<uint8_t>(w[col * k + k0 + j])} << (8 * j);
        }
        const size_t plane = lane / 16;
        uint8_t* dst = p + (plane / per_byte) * 64 + (lane % 16) * 4;
        uint32_t word;
        std::memcpy(&word, dst, 4);
        word |= ((x ^ offset) & mask) << ((plane % per_byte) * kBits);
        std::memcpy(dst, &word, 4);
      }
    }
  }
}

}  // namespace

void lowbit_pack_weights(const int8_t* w, size_t n, size_t k, int bits, uint8_t* out) {
  const size_t n_pad = round_up(n, kLowbitPanelCols), k_pad = round_up(k, kLowbitGroupK);
  const PackedHeader h = lowbit_packed_header(n, k, bits);
  std::memset(out, 0, h.total_bytes);
  std::memcpy(out, &h, sizeof(h));
  const size_t panels = n_pad / kLowbitPanelCols, k_groups = k_pad / kLowbitGroupK;
  if (bits == 2) {
    pack_panels<2>(w, n, k, panels, k_groups, out + h.data_offset);
  } else {
    pack_panels<4>(w, n, k, panels, k_groups, out + h.data_offset);
  }
}

}  // namespace pq
