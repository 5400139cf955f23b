// NEON canonical pack/unpack: 16 codes per step, the rest of each row by the scalar tail.
#include <arm_neon.h>

#include <cstring>

#include "bitpack/bitpack.h"

namespace pq {

void pack_rows_neon(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const uint8x16_t low_mask = vdupq_n_u8(static_cast<uint8_t>((1 << bits) - 1));
  static const uint8_t kBitWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bit_weights = vld1q_u8(kBitWeights);
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * n;
    uint8_t* dst = packed + r * row_bytes;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const uint8x16_t v = vandq_u8(vld1q_u8(src + i), low_mask);
      uint8_t* out = dst + i * bits / 8;
      if (bits == 4) {
        // u16 lane c0 | c1<<8: adding w>>4 puts c0 + 16*c1 in the low byte
        const uint16x8_t w = vreinterpretq_u16_u8(v);
        vst1_u8(out, vmovn_u16(vsraq_n_u16(w, w, 4)));
      } else if (bits == 2) {
        const uint16x8_t w = vreinterpretq_u16_u8(v);
        const uint8x8_t e = vmovn_u16(vsraq_n_u16(w, w, 6));  // c0 + 4*c1 per byte
        const uint16x4_t y = vreinterpret_u16_u8(e);
        const uint8x8_t b = vmovn_u16(vcombine_u16(vsra_n_u16(y, y, 4), vdup_n_u16(0)));
        const uint32_t word = vget_lane_u32(vreinterpret_u32_u8(b), 0);
        std::memcpy(out, &word, 4);
      } else {
        const uint8x16_t weighted = vandq_u8(vtstq_u8(v, v), bit_weights);
        out[0] = vaddv_u8(vget_low_u8(weighted));
        out[1] = vaddv_u8(vget_high_u8(weighted));
      }
    }
    pack_row_tail(src, dst, i, n, bits);
  }
}

void unpack_rows_neon(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                      bool sign_extend) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const uint8x16_t sign_bit = vdupq_n_u8(static_cast<uint8_t>(1 << (bits - 1)));
  static const uint8_t kSpread2[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
  static const int8_t kShift2[16] = {0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6};
  static const uint8_t kSpread1[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
  static const uint8_t kBit1[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + r * row_bytes;
    uint8_t* dst = codes + r * n;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const uint8_t* in = src + i * bits / 8;
      uint8x16_t v;
      if (bits == 4) {
        const uint8x8_t b = vld1_u8(in);
        const uint8x8_t lo = vand_u8(b, vdup_n_u8(0x0f));
        const uint8x8_t hi = vshr_n_u8(b, 4);
        v = vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi));
      } else if (bits == 2) {
        uint32_t word;
        std::memcpy(&word, in, 4);
        const uint8x16_t b = vqtbl1q_u8(vreinterpretq_u8_u32(vdupq_n_u32(word)), vld1q_u8(kSpread2));
        v = vandq_u8(vshlq_u8(b, vld1q_s8(kShift2)), vdupq_n_u8(3));
      } else {
        uint16_t half;
        std::memcpy(&half, in, 2);
        const uint8x16_t b = vqtbl1q_u8(vreinterpretq_u8_u16(vdupq_n_u16(half)), vld1q_u8(kSpread1));
        v = vandq_u8(vtstq_u8(b, vld1q_u8(kBit1)), vdupq_n_u8(1));
      }
      if (sign_extend) v = vsubq_u8(veorq_u8(v, sign_bit), sign_bit);
      vst1q_u8(dst + i, v);
    }
    unpack_row_tail(src, dst, i, n, bits, sign_extend);
  }
}

}  // namespace pq
