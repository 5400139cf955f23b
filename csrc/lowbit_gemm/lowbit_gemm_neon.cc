// NEON path (Armv8.2 dot product): both operand roles exist natively, so no role swap is needed:
// uint8 A -> udot(codes u8, a u8), int8 A -> sdot(codes as s8 (<= 15), a s8). One 16-byte
// vector of a code block holds 4 columns x 4 k of one quarter (16-column group), i.e. one dot
// lane per column. Rows are processed one at a time (16 accumulators), re-reading the panel
// block from L1/L2 (the driver K-blocks by 1024 when M spans several tiles).
#include <arm_neon.h>

#include <cstring>

#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {
namespace {

template <int BITS, bool SIGNED>
void tile(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
          int32_t* sums) {
  constexpr size_t kGroupBytes = 32 * BITS;
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << BITS) - 1));
  for (size_t r = 0; r < mr; ++r) {
    uint32x4_t acc[16];  // [quarter q][vector i]: columns 16q + 4i + lane
    for (size_t i = 0; i < 16; ++i) acc[i] = vdupq_n_u32(0);
    const uint8_t* ar = a + r * lda;
    for (size_t g = 0; g < kgroups; ++g) {
      const uint8_t* bg = b + g * kGroupBytes;
      uint32_t a4;
      std::memcpy(&a4, ar + g * 4, 4);
      const uint8x16_t av = vreinterpretq_u8_u32(vdupq_n_u32(a4));
      for (size_t i = 0; i < 4; ++i) {
        uint8x16_t w[4];
        if constexpr (BITS == 4) {
          const uint8x16_t v0 = vld1q_u8(bg + 16 * i), v1 = vld1q_u8(bg + 64 + 16 * i);
          w[0] = vandq_u8(v0, mask);
          w[1] = vshrq_n_u8(v0, 4);
          w[2] = vandq_u8(v1, mask);
          w[3] = vshrq_n_u8(v1, 4);
        } else {
          const uint8x16_t v = vld1q_u8(bg + 16 * i);
          w[0] = vandq_u8(v, mask);
          w[1] = vandq_u8(vshrq_n_u8(v, 2), mask);
          w[2] = vandq_u8(vshrq_n_u8(v, 4), mask);
          w[3] = vshrq_n_u8(v, 6);
        }
        for (size_t q = 0; q < 4; ++q) {
          uint32x4_t& c = acc[q * 4 + i];
          if constexpr (SIGNED)
            c = vreinterpretq_u32_s32(vdotq_s32(vreinterpretq_s32_u32(c), vreinterpretq_s8_u8(w[q]),
                                                vreinterpretq_s8_u8(av)));
          else
            c = vdotq_u32(c, w[q], av);
        }
      }
    }
    for (size_t q = 0; q < 4; ++q)
      for (size_t i = 0; i < 4; ++i)
        vst1q_s32(sums + r * 64 + q * 16 + 4 * i, vreinterpretq_s32_u32(acc[q * 4 + i]));
  }
}

}  // namespace

void lowbit_tile4_neon(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                       bool a_signed, int32_t* sums) {
  if (a_signed) return tile<4, true>(a, lda, mr, b, kgroups, sums);
  tile<4, false>(a, lda, mr, b, kgroups, sums);
}
void lowbit_tile2_neon(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
                       bool a_signed, int32_t* sums) {
  if (a_signed) return tile<2, true>(a, lda, mr, b, kgroups, sums);
  tile<2, false>(a, lda, mr, b, kgroups, sums);
}

}  // namespace pq
