// AVX-512 (BW) canonical pack/unpack: 64 codes per step, the rest of each row by the scalar tail.
#include <immintrin.h>

#include <cstring>

#include "bitpack/bitpack.h"

namespace pq {

void pack_rows_avx512(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const __m512i low_mask = _mm512_set1_epi8(static_cast<char>((1 << bits) - 1));
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * n;
    uint8_t* dst = packed + r * row_bytes;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
      const __m512i v = _mm512_and_si512(_mm512_loadu_si512(src + i), low_mask);
      uint8_t* out = dst + i * bits / 8;
      if (bits == 4) {
        // byte pairs (c0, c1) -> c0 + 16*c1 in a 16-bit lane, then narrow to bytes
        const __m512i w = _mm512_maddubs_epi16(v, _mm512_set1_epi16(0x1001));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi16_epi8(w));
      } else if (bits == 2) {
        const __m512i w = _mm512_maddubs_epi16(v, _mm512_set1_epi16(0x0401));
        const __m512i d = _mm512_madd_epi16(w, _mm512_set1_epi32(0x00100001));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(d));
      } else {
        // bit i of the mask is code i: exactly the LSB-first layout
        const uint64_t m = _mm512_test_epi8_mask(v, v);
        std::memcpy(out, &m, 8);
      }
    }
    pack_row_tail(src, dst, i, n, bits);
  }
}

void unpack_rows_avx512(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                        bool sign_extend) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const __m512i sign_bit = _mm512_set1_epi8(static_cast<char>(1 << (bits - 1)));
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + r * row_bytes;
    uint8_t* dst = codes + r * n;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
      const uint8_t* in = src + i * bits / 8;
      __m512i v;
      if (bits == 4) {
        const __m512i w =
            _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in)));
        v = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(0x000f)),
                            _mm512_and_si512(_mm512_slli_epi16(w, 4), _mm512_set1_epi16(0x0f00)));
      } else if (bits == 2) {
        const __m512i d =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
        v = _mm512_and_si512(d, _mm512_set1_epi32(0x3));
        v = _mm512_or_si512(v, _mm512_and_si512(_mm512_slli_epi32(d, 6), _mm512_set1_epi32(0x300)));
        v = _mm512_or_si512(v,
                            _mm512_and_si512(_mm512_slli_epi32(d, 12), _mm512_set1_epi32(0x30000)));
        v = _mm512_or_si512(
            v, _mm512_and_si512(_mm512_slli_epi32(d, 18), _mm512_set1_epi32(0x3000000)));
      } else {
        uint64_t m;
        std::memcpy(&m, in, 8);
        v = _mm512_maskz_set1_epi8(m, 1);
      }
      if (sign_extend) v = _mm512_sub_epi8(_mm512_xor_si512(v, sign_bit), sign_bit);
      _mm512_storeu_si512(dst + i, v);
    }
    unpack_row_tail(src, dst, i, n, bits, sign_extend);
  }
}

}  // namespace pq
