// Float matrix transposes for the NCHW <-> NHWC copies of QuantConv2d/1d's native conv (conv.cc).
#pragma once
#include <cstddef>

#include "core/isa.h"

namespace pq {

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (exact on every tier; the AVX2 and
// AVX-512 tiers use 8 x 8 register transposes, measured 0.6 vs 0.9 ms for a 512 x 3199 image on
// Zen 5, the baseline SSE2 4 x 4).
void transpose_floats(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                      size_t ldd, Isa isa);
// The tiers' builds (conv_transpose.cc, conv_transpose_avx2.cc).
void transpose_floats_baseline(const float* src, size_t lds, size_t rows, size_t cols,
                               float* dst, size_t ldd);
void transpose_floats_avx2(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                           size_t ldd);

}  // namespace pq
