#include "quantize/row_quantize.h"
#include "core/kernel_table.h"

#include <cmath>

namespace pq {

RowQuantParams row_quant_params(float lo, float hi, float qmax) {
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  float s = (hi - lo) / qmax;
  if (range_overflows(lo, hi)) s = static_cast<float>((static_cast<double>(hi) - lo) / qmax);
  if (!(s > 0.0f)) s = 1.0f;
  float zp = std::nearbyint(-lo / s);  // default rounding mode: half to even
  zp = zp < 0.0f ? 0.0f : (zp > qmax ? qmax : zp);
  zp = zp + 0.0f;  // -0 -> +0
  return {s, 1.0f / s, zp, zp + 0.5f, qmax + 0.25f};
}

void quantize_rows_u8_ex_scalar(const float* x, size_t rows, size_t k, size_t ldq, float qmax,
                                const RowQuantParams* fixed, uint8_t* q, float* scale,
                                float* zero_point) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    RowQuantParams p;
    if (fixed) {
      p = *fixed;
    } else {
      float lo = 0.0f, hi = 0.0f;
      for (size_t i = 0; i < k; ++i) {
        lo = xr[i] < lo ? xr[i] : lo;
        hi = xr[i] > hi ? xr[i] : hi;
      }
      p = row_quant_params(lo, hi, qmax);
      scale[r] = p.scale;
      zero_point[r] = p.zero_point;
    }
    uint8_t* qr = q + r * ldq;
    for (size_t i = 0; i < k; ++i) {
      float t = xr[i] * p.inv_scale;
      t = t + p.offset;
      t = t > 0.0f ? (t < p.top ? t : p.top) : 0.0f;  // NaN -> 0, as the SIMD paths
      qr[i] = static_cast<uint8_t>(t);
    }
    for (size_t i = k; i < ldq; ++i) qr[i] = 0;
  }
}

void quantize_rows_u8_scalar(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                             float* zero_point) {
  quantize_rows_u8_ex_scalar(x, rows, k, k, 255.0f, nullptr, q, scale, zero_point);
}

#if defined(PQ_HAVE_X86)
void quantize_rows_u8_avx2(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                                  float* zero_point) {
  quantize_rows_u8_ex_avx2(x, rows, k, k, 255.0f, nullptr, q, scale, zero_point);
}
#endif

QuantizeRowsExFn quantize_rows_u8_ex_kernel(Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx2 || isa == Isa::avx512) return quantize_rows_u8_ex_avx2;
#endif
  return quantize_rows_u8_ex_scalar;
}

QuantizeRowsFn quantize_rows_u8_kernel(Isa isa) {
  return active_impl<QuantizeRowsFn>(KernelFamily::quantize, isa);  // core/kernel_table.cc
}

}  // namespace pq
