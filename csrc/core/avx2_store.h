// Output stores shared by the AVX2-and-up integer tiles (include only from files compiled with
// AVX2 flags). A masked store (vpmaskmovd) costs several times a plain one on AMD Zen, and tiles
// of short K (QuantGRU's recurrent and input GEMMs, small layers) store once per few k groups,
// so whole vectors take plain moves and only a ragged tail pays for the mask.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/macros.h"

namespace pq {

// dst[i] = x[i] + (base ? base[i] : 0) for i < valid (valid >= 1; whole vector when >= 8).
// base may equal dst (accumulate into C).
PQ_INLINE void store8_plus(int32_t* dst, const int32_t* base, __m256i x, size_t valid) {
  if (valid >= 8) {
    if (base) x = _mm256_add_epi32(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), x);
    return;
  }
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  if (base) x = _mm256_add_epi32(x, _mm256_maskload_epi32(base, mask));
  _mm256_maskstore_epi32(dst, mask, x);
}

// C rows [0, rows) x columns [0, nc) of a tile = sums (int32 [rows][ld], ld >= nc rounded up to
// 8) + (accumulate ? C : bias ? bias : 0). Out of line on purpose: inlined after a tile's
// register-resident loop it changed GCC's register allocation of that loop (a spilled
// accumulator and register copies: the AVX2 int8 tile fell from 29 to 22 MAC/cycle).
// `static`: every ISA's file gets its own copy (no cross-ISA symbol for the linker to merge).
[[gnu::noinline, maybe_unused]] static void store_tile_rows(const int32_t* sums, size_t ld,
                                                            size_t rows, int32_t* c, size_t ldc,
                                                            size_t nc, const int32_t* bias,
                                                            bool accumulate) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < nc; j += 8) {
      int32_t* dst = c + r * ldc + j;
      const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums + r * ld + j));
      store8_plus(dst, accumulate ? dst : bias ? bias + j : nullptr, x, nc - j);
    }
}

}  // namespace pq
