// The grouped 6x64 zmm tile (lowbit_tile_grouped_avx512.inc) with its codes unpacked signed:
// one GF2P8AFFINEQB per vpdpbusd operand maps a stored code u to u - 2^(b-1) sign-extended (an
// affine map over GF(2): (u XOR 2^(b-1)) as a b-bit two's-complement number, its top bit copied
// up), so a group's sum needs no offset subtract in the fold, and W4 unpacks in 4 instructions
// per k group instead of 6, W2 in 4 instead of 7. Same integers, so the same bits as the
// AVX-512 VNNI tile (measured: docs/notes/nn_forward.md, twenty-eighth session).
#include <immintrin.h>

#include "core/macros.h"

#include "lowbit_gemm/lowbit_gemm.h"
#include "lowbit_gemm/panel_scales.h"

namespace pq {
namespace {

// GF2P8AFFINEQB's matrix: byte 7 - i of the qword selects the input bits whose parity is output
// bit i (then XORed with bit i of the immediate).
constexpr long long affine_rows(unsigned b0, unsigned b1, unsigned b2, unsigned b3, unsigned b4,
                                unsigned b5, unsigned b6, unsigned b7) {
  return static_cast<long long>(
      (static_cast<unsigned long long>(b0) << 56) | (static_cast<unsigned long long>(b1) << 48) |
      (static_cast<unsigned long long>(b2) << 40) | (static_cast<unsigned long long>(b3) << 32) |
      (static_cast<unsigned long long>(b4) << 24) | (static_cast<unsigned long long>(b5) << 16) |
      (static_cast<unsigned long long>(b6) << 8) | b7);
}
// bits 0 .. b-1 of the field at bit `shift` to output bits 0 .. b-1, its top bit to the rest
template <int BITS>
constexpr long long signed_field(int shift) {
  unsigned rows[8] = {};
  for (int i = 0; i < 8; ++i) rows[i] = 1u << (shift + (i < BITS ? i : BITS - 1));
  return affine_rows(rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6], rows[7]);
}
// XOR with 2^(b-1) (the field's top bit, and so every copy of it): u - 2^(b-1)
template <int BITS>
constexpr int kFlipTop = 0xff & ~((1 << (BITS - 1)) - 1);

// The instruction modelled per byte, to check the constants in every build (also where no CPU
// runs this file): every stored byte, every field, gives its code minus 2^(b-1).
constexpr int affine_byte(long long matrix, int x, int imm) {
  int out = 0;
  for (int i = 0; i < 8; ++i) {
    const unsigned long long row = static_cast<unsigned long long>(matrix) >> (8 * (7 - i));
    int bits = static_cast<int>(row & 0xff) & x;
    int parity = 0;
    for (; bits; bits &= bits - 1) parity ^= 1;
    out |= (parity ^ ((imm >> i) & 1)) << i;
  }
  return out;
}
template <int BITS>
constexpr bool signed_fields_exact() {
  for (int shift = 0; shift < 8; shift += BITS)
    for (int x = 0; x < 256; ++x) {
      const int u = (x >> shift) & ((1 << BITS) - 1);
      const int got = affine_byte(signed_field<BITS>(shift), x, kFlipTop<BITS>);
      if ((got >= 128 ? got - 256 : got) != u - (1 << (BITS - 1))) return false;
    }
  return true;
}
static_assert(signed_fields_exact<4>() && signed_fields_exact<2>(), "GF2P8AFFINEQB constants");

template <int BITS>
PQ_INLINE __m512i signed_codes(__m512i v, int shift) {
  return _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(signed_field<BITS>(shift)),
                                       kFlipTop<BITS>);
}

template <int BITS>
PQ_INLINE void grouped_codes(const uint8_t* bg, __m512i& w0, __m512i& w1, __m512i& w2,
                             __m512i& w3) {
  const char* pf = reinterpret_cast<const char*>(bg + kLowbitZmmPrefetchBytes);
  if constexpr (BITS == 4) {
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    const __m512i v0 = _mm512_loadu_si512(bg), v1 = _mm512_loadu_si512(bg + 64);
    w0 = signed_codes<4>(v0, 0);
    w1 = signed_codes<4>(v0, 4);
    w2 = signed_codes<4>(v1, 0);
    w3 = signed_codes<4>(v1, 4);
  } else {
    _mm_prefetch(pf, _MM_HINT_T0);
    const __m512i v = _mm512_loadu_si512(bg);
    w0 = signed_codes<2>(v, 0);
    w1 = signed_codes<2>(v, 2);
    w2 = signed_codes<2>(v, 4);
    w3 = signed_codes<2>(v, 6);
  }
}

#define PQ_TG_SIGNED_CODES 1
#include "lowbit_gemm/lowbit_tile_grouped_avx512.inc"
#undef PQ_TG_SIGNED_CODES

}  // namespace

void lowbit_tile_grouped4_avx512vnnigfni(const uint8_t* a, size_t lda, size_t mr,
                                         const uint8_t* b, size_t kgroups, size_t group_kgroups,
                                         const uint32_t* corr, size_t n_groups,
                                         const uint16_t* sc, float* out) {
  tile_grouped_mr<4>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}
void lowbit_tile_grouped2_avx512vnnigfni(const uint8_t* a, size_t lda, size_t mr,
                                         const uint8_t* b, size_t kgroups, size_t group_kgroups,
                                         const uint32_t* corr, size_t n_groups,
                                         const uint16_t* sc, float* out) {
  tile_grouped_mr<2>(a, lda, mr, b, kgroups, group_kgroups, corr, n_groups, sc, out);
}

}  // namespace pq
