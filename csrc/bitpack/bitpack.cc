#include "bitpack/bitpack.h"

#include <cstring>

namespace pq {

void pack_row_tail(const uint8_t* codes, uint8_t* packed, size_t begin, size_t n, int bits) {
  const unsigned mask = (1u << bits) - 1;
  const size_t first_byte = begin * bits / 8;
  std::memset(packed + first_byte, 0, packed_row_bytes(n, bits) - first_byte);
  for (size_t i = begin; i < n; ++i) {
    const size_t bit = i * bits;
    packed[bit / 8] |= static_cast<uint8_t>((codes[i] & mask) << (bit % 8));
  }
}

void unpack_row_tail(const uint8_t* packed, uint8_t* codes, size_t begin, size_t n, int bits,
                     bool sign_extend) {
  const unsigned mask = (1u << bits) - 1;
  const unsigned sign_bit = 1u << (bits - 1);
  for (size_t i = begin; i < n; ++i) {
    const size_t bit = i * bits;
    unsigned v = (packed[bit / 8] >> (bit % 8)) & mask;
    if (sign_extend) v = (v ^ sign_bit) - sign_bit;  // two's-complement sign extension
    codes[i] = static_cast<uint8_t>(v);
  }
}

void pack_rows_scalar(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  for (size_t r = 0; r < rows; ++r) pack_row_tail(codes + r * n, packed + r * row_bytes, 0, n, bits);
}

void unpack_rows_scalar(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                        bool sign_extend) {
  const size_t row_bytes = packed_row_bytes(n, bits);
  for (size_t r = 0; r < rows; ++r)
    unpack_row_tail(packed + r * row_bytes, codes + r * n, 0, n, bits, sign_extend);
}

const BitpackKernels& bitpack_kernels(Isa isa) {
  static const BitpackKernels scalar{pack_rows_scalar, unpack_rows_scalar};
#if defined(PQ_HAVE_X86)
  static const BitpackKernels avx2{pack_rows_avx2, unpack_rows_avx2};
  static const BitpackKernels avx512{pack_rows_avx512, unpack_rows_avx512};
  if (isa == Isa::avx512) return avx512;
  if (isa == Isa::avx2) return avx2;
#endif
#if defined(PQ_HAVE_NEON)
  static const BitpackKernels neon{pack_rows_neon, unpack_rows_neon};
  if (isa == Isa::neon) return neon;
#endif
  return scalar;
}

}  // namespace pq
