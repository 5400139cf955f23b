// AVX2 canonical pack/unpack: 32 codes per step, the rest of each row by the scalar tail.
#include <immintrin.h>

#include <cstring>

#include "bitpack/bitpack.h"

namespace pq {

void pack_rows_avx2(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const __m256i low_mask = _mm256_set1_epi8(static_cast<char>((1 << bits) - 1));
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * n;
    uint8_t* dst = packed + r * row_bytes;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256i v = _mm256_and_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)), low_mask);
      uint8_t* out = dst + i * bits / 8;
      if (bits == 4) {
        const __m256i w = _mm256_maddubs_epi16(v, _mm256_set1_epi16(0x1001));
        // packus works per 128-bit lane: keep qwords 0 and 2
        const __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(b));
      } else if (bits == 2) {
        const __m256i w = _mm256_maddubs_epi16(v, _mm256_set1_epi16(0x0401));
        const __m256i d = _mm256_madd_epi16(w, _mm256_set1_epi32(0x00100001));
        const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(d, d), d);
        const uint32_t lo = static_cast<uint32_t>(_mm256_extract_epi32(b, 0));
        const uint32_t hi = static_cast<uint32_t>(_mm256_extract_epi32(b, 4));
        std::memcpy(out, &lo, 4);
        std::memcpy(out + 4, &hi, 4);
      } else {
        const uint32_t m = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(v, 7)));
        std::memcpy(out, &m, 4);
      }
    }
    pack_row_tail(src, dst, i, n, bits);
  }
}

void unpack_rows_avx2(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                      bool sign_extend) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  const __m256i sign_bit = _mm256_set1_epi8(static_cast<char>(1 << (bits - 1)));
  // 1-bit: byte j of the output takes source byte j/8 and tests bit j%8
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit_of = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + r * row_bytes;
    uint8_t* dst = codes + r * n;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const uint8_t* in = src + i * bits / 8;
      __m256i v;
      if (bits == 4) {
        const __m256i w =
            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
        v = _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi16(0x000f)),
                            _mm256_and_si256(_mm256_slli_epi16(w, 4), _mm256_set1_epi16(0x0f00)));
      } else if (bits == 2) {
        const __m256i d =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in)));
        v = _mm256_and_si256(d, _mm256_set1_epi32(0x3));
        v = _mm256_or_si256(v, _mm256_and_si256(_mm256_slli_epi32(d, 6), _mm256_set1_epi32(0x300)));
        v = _mm256_or_si256(v,
                            _mm256_and_si256(_mm256_slli_epi32(d, 12), _mm256_set1_epi32(0x30000)));
        v = _mm256_or_si256(
            v, _mm256_and_si256(_mm256_slli_epi32(d, 18), _mm256_set1_epi32(0x3000000)));
      } else {
        uint32_t m;
        std::memcpy(&m, in, 4);
        const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(m)), spread);
        v = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit_of), bit_of);  // 0xff where set
        v = _mm256_and_si256(v, _mm256_set1_epi8(1));
      }
      if (sign_extend) v = _mm256_sub_epi8(_mm256_xor_si256(v, sign_bit), sign_bit);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), v);
    }
    unpack_row_tail(src, dst, i, n, bits, sign_extend);
  }
}

}  // namespace pq
