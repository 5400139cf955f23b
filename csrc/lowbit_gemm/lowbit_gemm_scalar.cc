// Portable reference path: decodes one k-group of a panel into u codes, then plain int loops.
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {
namespace {

template <int BITS>
void tile(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b, size_t kgroups,
          bool a_signed, int32_t* sums) {
  constexpr size_t kPer = 8 / BITS, kGroupBytes = 32 * BITS;
  constexpr unsigned kMask = (1u << BITS) - 1;
  uint32_t acc[8][64] = {};
  uint8_t u[256];  // [col][kk], the int8 panel order
  for (size_t g = 0; g < kgroups; ++g) {
    const uint8_t* bg = b + g * kGroupBytes;
    for (size_t i = 0; i < 256; ++i) {
      const size_t q = i / 64;
      u[i] = (bg[(q / kPer) * 64 + i % 64] >> ((q % kPer) * BITS)) & kMask;
    }
    for (size_t r = 0; r < mr; ++r) {
      const uint8_t* ar = a + r * lda + g * 4;
      for (size_t col = 0; col < 64; ++col) {
        int32_t s = 0;
        for (size_t kk = 0; kk < 4; ++kk) {
          const int32_t av = a_signed ? static_cast<int8_t>(ar[kk]) : ar[kk];
          s += av * u[col * 4 + kk];
        }
        acc[r][col] += static_cast<uint32_t>(s);  // wraps like the SIMD paths
      }
    }
  }
  for (size_t r = 0; r < mr; ++r)
    for (size_t col = 0; col < 64; ++col) sums[r * 64 + col] = static_cast<int32_t>(acc[r][col]);
}

}  // namespace

void lowbit_tile4_scalar(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                         size_t kgroups, bool a_signed, int32_t* sums) {
  tile<4>(a, lda, mr, b, kgroups, a_signed, sums);
}
void lowbit_tile2_scalar(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                         size_t kgroups, bool a_signed, int32_t* sums) {
  tile<2>(a, lda, mr, b, kgroups, a_signed, sums);
}

void lowbit_epilogue_scalar(const int32_t* sums, size_t mr, const uint32_t* corr, const float* sc,
                            float* out) {
  for (size_t r = 0; r < mr; ++r)
    for (size_t j = 0; j < 64; ++j) {
      const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(sums[r * 64 + j]) - corr[r]);
      out[r * 64 + j] += sc[j] * static_cast<float>(v);
    }
}

}  // namespace pq
