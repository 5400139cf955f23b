// Dynamic per-row asymmetric uint8 quantization of float activations (the int8 front end's
// activation path), in two passes over x: min/max, then quantize.
//
//   lo = min(0, min_k x), hi = max(0, max_k x), s = (hi - lo) / qmax (s = 1 if 0; in double,
//   rounded to float32, when hi - lo overflows float32: range_overflows),
//   zp = round_half_even(-lo / s) clamped to [0, qmax],
//   q  = trunc(clamp(x * (1/s) + (zp + 0.5), 0, qmax + 0.25))   (round half up)
// in float32 with no fused multiply-add, so every path gives the same bits (NaN input: undefined).
// qmax = 255 (8-bit codes) or 127 (7-bit: the AVX2 int8 kernel's full-speed range, as PyTorch's
// reduce_range); the public quantize_rows_u8 form is 8-bit.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

struct RowQuantParams;
using QuantizeRowsFn = void (*)(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                                float* zero_point);

void quantize_rows_u8_scalar(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                             float* zero_point);
#if defined(PQ_HAVE_X86)
void quantize_rows_u8_avx2(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                           float* zero_point);
void quantize_rows_u8_avx512(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                             float* zero_point);
#endif
QuantizeRowsFn quantize_rows_u8_kernel(Isa isa);

// The fused forwards' form: output rows of stride ldq (columns [k, ldq) zero filled, so the
// GEMM's K padding is written here), and either dynamic per-row ranges (fixed == nullptr; scale
// and zero_point get one value per row) or one fixed range for every row (static quantization
// after calibration; scale/zero_point untouched, may be nullptr), codes 0..qmax (the fixed
// range's params carry their own qmax). Same bits as the form above at qmax = 255.
using QuantizeRowsExFn = void (*)(const float* x, size_t rows, size_t k, size_t ldq, float qmax,
                                  const struct RowQuantParams* fixed, uint8_t* q, float* scale,
                                  float* zero_point);
void quantize_rows_u8_ex_scalar(const float* x, size_t rows, size_t k, size_t ldq, float qmax,
                                const RowQuantParams* fixed, uint8_t* q, float* scale,
                                float* zero_point);
#if defined(PQ_HAVE_X86)
void quantize_rows_u8_ex_avx2(const float* x, size_t rows, size_t k, size_t ldq, float qmax,
                              const RowQuantParams* fixed, uint8_t* q, float* scale,
                              float* zero_point);
#endif
QuantizeRowsExFn quantize_rows_u8_ex_kernel(Isa isa);

// Whether finite lo <= hi are so far apart (values of both signs near FLT_MAX) that hi - lo
// overflows float32: the quantizers then compute the width in double, so a finite row gets a
// finite scale (not inf, whose 1/s = 0 made every output NaN). Other ranges never take that
// branch: their bits are those of the plain float32 formula.
static inline bool range_overflows(float lo, float hi) {
  return std::isfinite(lo) && std::isfinite(hi) && std::isinf(hi - lo);
}

// Row parameters shared by every path (scalar code, so identical bits).
struct RowQuantParams {
  float scale, inv_scale, zero_point, offset;  // offset = zero_point + 0.5
  float top;                                   // clamp bound qmax + 0.25
};
RowQuantParams row_quant_params(float lo, float hi, float qmax);

}  // namespace pq
