// Codebook analysis (product table, overflow-free accumulation counts) and weight packing.
#include <algorithm>
#include <cstring>

#include "core/macros.h"
#include "lut_gemm/lut_gemm.h"

namespace pq {

LutCodebook lut_codebook(const int32_t a_levels[4], const int32_t w_levels[4]) {
  LutCodebook cb{};
  cb.pmin = 127;
  cb.pmax = -128;
  for (int i = 0; i < 4; ++i) {
    cb.a_levels[i] = a_levels[i];
    cb.w_levels[i] = w_levels[i];
  }
  for (int a = 0; a < 4; ++a)
    for (int w = 0; w < 4; ++w) {
      const int32_t p = a_levels[a] * w_levels[w];  // caller guarantees int8 range
      cb.prod[a][w] = static_cast<int8_t>(p);
      cb.pmin = std::min(cb.pmin, p);
      cb.pmax = std::max(cb.pmax, p);
    }
  // n products fit an int8 lane iff n * pmax <= 127 and n * pmin >= -128.
  int n = 1 << 20;
  if (cb.pmax > 0) n = std::min(n, 127 / cb.pmax);
  if (cb.pmin < 0) n = std::min(n, 128 / -cb.pmin);
  cb.int8_products = std::max(n, 1);  // a single product always fits (checked by the caller)
  cb.u8_products = cb.pmax == cb.pmin ? (1 << 20) : 255 / (cb.pmax - cb.pmin);
  cb.umax = 3 * (cb.pmax - cb.pmin);
  cb.u8_lookups = cb.umax == 0 ? (1 << 20) : 255 / cb.umax;
  cb.pair_lookups = cb.pmax == cb.pmin ? (1 << 20) : 255 / (2 * (cb.pmax - cb.pmin));
  return cb;
}

bool lut_vpermb_ok(const LutCodebook& cb) { return cb.umax <= 255; }
bool lut_pair_ok(const LutCodebook& cb) { return 2 * (cb.pmax - cb.pmin) <= 255; }

// Entry q (activation codes a_j = (q >> 2j) & 3), lane h, index i = w0 << 2 | w1:
// p[a_2h][w0] + p[a_2h+1][w1] - 2 pmin. Built when a thread meets a new codebook (the driver
// keeps the last one's tables), as 512 sums of two 16-byte rows, which the compiler vectorizes.
void lut_pair_tables(const LutCodebook& cb, uint8_t* out) {
  uint8_t first[4][16], second[4][16];  // p[a][i >> 2] - pmin, p[a][i & 3] - pmin
  for (int a = 0; a < 4; ++a)
    for (int i = 0; i < 16; ++i) {
      first[a][i] = static_cast<uint8_t>(cb.prod[a][i >> 2] - cb.pmin);
      second[a][i] = static_cast<uint8_t>(cb.prod[a][i & 3] - cb.pmin);
    }
  for (int q = 0; q < 256; ++q)
    for (int h = 0; h < 2; ++h) {
      const uint8_t* f = first[(q >> (4 * h)) & 3];
      const uint8_t* s = second[(q >> (4 * h + 2)) & 3];
      uint8_t* d = out + q * 32 + h * 16;
      for (int i = 0; i < 16; ++i) d[i] = static_cast<uint8_t>(f[i] + s[i]);
    }
}

PackedHeader lut_packed_header(size_t n, size_t k, const int8_t w_levels[4]) {
  const size_t n_pad = round_up(n, kLutPanelCols), k_pad = round_up(k, kLutKAlign);
  PackedHeader h = make_packed_header(PackedOp::lut_gemm, n, k, n_pad, k_pad, 2, kLutPanelCols, 4);
  std::memcpy(h.w_levels, w_levels, 4);
  h.aux_offset = 0;
  h.total_bytes = kPackedAlign + round_up(n_pad * k_pad / 4, kPackedAlign);
  return h;
}

size_t lut_packed_bytes(size_t n, size_t k) {
  const int8_t none[4] = {0, 0, 0, 0};
  return lut_packed_header(n, k, none).total_bytes;
}

void lut_pack_weights(const uint8_t* w, size_t n, size_t k, const int8_t w_levels[4],
                      uint8_t* out) {
  const PackedHeader h = lut_packed_header(n, k, w_levels);
  const size_t groups = h.k_padded / 4;
  std::memset(out, 0, h.total_bytes);
  std::memcpy(out, &h, sizeof(h));
  uint8_t* panels = out + h.data_offset;
  for (size_t col = 0; col < n; ++col) {
    uint8_t* dst = panels + (col / kLutPanelCols) * groups * kLutPanelCols + col % kLutPanelCols;
    const uint8_t* src = w + col * k;
    for (size_t kk = 0; kk < k; ++kk)
      dst[(kk / 4) * kLutPanelCols] |= static_cast<uint8_t>((src[kk] & 3) << kLutSlotShift[kk % 4]);
  }
}

}  // namespace pq
