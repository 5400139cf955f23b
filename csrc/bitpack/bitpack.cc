#include "bitpack/bitpack.h"
#include "core/kernel_table.h"

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
  return active_impl<BitpackKernels>(KernelFamily::pack, isa);  // core/kernel_table.cc
}

}  // namespace pq
