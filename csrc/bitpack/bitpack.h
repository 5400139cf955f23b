// Canonical sub-byte packing (algorithms.md section 1): along each row, code i lives in byte
// (i*bits)/8 at bit offset (i*bits)%8, LSB first; a row of n codes takes ceil(n*bits/8) bytes and
// pad bits are zero. bits is 1, 2 or 4.
//
// pack:   codes [rows, n] (one code per byte; only the low `bits` bits are used, so signed codes
//         in two's complement pack as-is) -> packed [rows, ceil(n*bits/8)].
// unpack: packed -> codes; with sign_extend the `bits`-wide field is sign-extended to int8.
// Every ISA variant gives identical bytes; none reads or writes outside the given rows.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

using PackRowsFn = void (*)(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits);
using UnpackRowsFn = void (*)(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n,
                              int bits, bool sign_extend);

inline size_t packed_row_bytes(size_t n, int bits) { return (n * bits + 7) / 8; }

struct BitpackKernels {
  PackRowsFn pack;
  UnpackRowsFn unpack;
};
const BitpackKernels& bitpack_kernels(Isa isa);

// Per-ISA implementations: SIMD over whole chunks of each row, the scalar tail for the rest.
void pack_rows_scalar(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits);
void unpack_rows_scalar(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                        bool sign_extend);
// Scalar tails: codes [begin, n) of one row (begin * bits must be a multiple of 8).
void pack_row_tail(const uint8_t* codes, uint8_t* packed, size_t begin, size_t n, int bits);
void unpack_row_tail(const uint8_t* packed, uint8_t* codes, size_t begin, size_t n, int bits,
                     bool sign_extend);

#if defined(PQ_HAVE_X86)
void pack_rows_avx2(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits);
void unpack_rows_avx2(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                      bool sign_extend);
void pack_rows_avx512(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits);
void unpack_rows_avx512(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                        bool sign_extend);
#endif
#if defined(PQ_HAVE_NEON)
void pack_rows_neon(const uint8_t* codes, uint8_t* packed, size_t rows, size_t n, int bits);
void unpack_rows_neon(const uint8_t* packed, uint8_t* codes, size_t rows, size_t n, int bits,
                      bool sign_extend);
#endif

}  // namespace pq
