// AVX-512 row quantizer: the same float32 operations as the scalar path, 16 lanes at a time
// (min/max are order-independent and skip NaN inputs like the scalar loop, so the reductions
// give the same bits).
#include <immintrin.h>

#include "quantize/row_quantize.h"

namespace pq {

void quantize_rows_u8_avx512(const float* x, size_t rows, size_t k, uint8_t* q, float* scale,
                             float* zero_point) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= k; i += 16) {
      const __m512 v = _mm512_loadu_ps(xr + i);
      vlo = _mm512_min_ps(v, vlo);  // min/max return the second operand for a NaN: a NaN
      vhi = _mm512_max_ps(v, vhi);  // input is skipped, as in the scalar reduction
    }
    if (i < k) {
      const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, xr + i);  // zeros: neutral, 0 is in the range
      vlo = _mm512_min_ps(v, vlo);
      vhi = _mm512_max_ps(v, vhi);
    }
    const RowQuantParams p =
        row_quant_params(_mm512_reduce_min_ps(vlo), _mm512_reduce_max_ps(vhi), 255.0f);
    const __m512 inv = _mm512_set1_ps(p.inv_scale), off = _mm512_set1_ps(p.offset);
    const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.25f);
    uint8_t* qr = q + r * k;
    for (i = 0; i < k; i += 16) {
      const __mmask16 m =
          k - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (k - i)) - 1);
      __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), inv);
      t = _mm512_add_ps(t, off);
      t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
      _mm_mask_storeu_epi8(qr + i, m, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
    }
    scale[r] = p.scale;
    zero_point[r] = p.zero_point;
  }
}

}  // namespace pq
