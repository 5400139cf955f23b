// AVX2 row quantizer: the scalar path's float32 operations, 8 lanes at a time (min/max are
// order-independent and skip NaN inputs like the scalar loop, so the reductions give the same
// bits; mul and add stay separate).
#include <immintrin.h>

#include <cstring>

#include "core/avx2_reduce.h"
#include "quantize/row_quantize.h"

namespace pq {
namespace {

// lanes [0, n) of 8 set (n < 8): a masked load reads zeros elsewhere and never touches them
inline __m256i first_lanes(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}



}  // namespace

void quantize_rows_u8_ex_avx2(const float* x, size_t rows, size_t k, size_t ldq, float qmax,
                              const RowQuantParams* fixed, uint8_t* q, float* scale,
                              float* zero_point) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    RowQuantParams p;
    if (fixed) {
      p = *fixed;
    } else {
      // four independent chains: one min/max chain per 8 floats would wait on the latency
      __m256 lo4[4], hi4[4];
      for (int j = 0; j < 4; ++j) lo4[j] = hi4[j] = _mm256_setzero_ps();
      size_t i = 0;
      for (; i + 32 <= k; i += 32)
        for (int j = 0; j < 4; ++j) {
          const __m256 v = _mm256_loadu_ps(xr + i + 8 * j);
          lo4[j] = _mm256_min_ps(v, lo4[j]);  // min/max return the second operand for a NaN:
          hi4[j] = _mm256_max_ps(v, hi4[j]);  // a NaN input is skipped, as in the scalar loop
        }
      for (; i + 8 <= k; i += 8) {
        const __m256 v = _mm256_loadu_ps(xr + i);
        lo4[0] = _mm256_min_ps(v, lo4[0]);
        hi4[0] = _mm256_max_ps(v, hi4[0]);
      }
      if (i < k) {  // zeros in the other lanes: neutral, 0 is in the range
        const __m256 v = _mm256_maskload_ps(xr + i, first_lanes(k - i));
        lo4[1] = _mm256_min_ps(v, lo4[1]);
        hi4[1] = _mm256_max_ps(v, hi4[1]);
      }
      // (the accumulators hold no NaN: any order of combining gives the same extremes)
      const __m256 vlo = _mm256_min_ps(_mm256_min_ps(lo4[0], lo4[1]), _mm256_min_ps(lo4[2], lo4[3]));
      const __m256 vhi = _mm256_max_ps(_mm256_max_ps(hi4[0], hi4[1]), _mm256_max_ps(hi4[2], hi4[3]));
      p = row_quant_params(hmin8(vlo), hmax8(vhi), qmax);
      scale[r] = p.scale;
      zero_point[r] = p.zero_point;
    }
    const __m256 inv = _mm256_set1_ps(p.inv_scale), off = _mm256_set1_ps(p.offset);
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(p.top);
    uint8_t* qr = q + r * ldq;
    size_t i = 0;
    for (; i + 32 <= k; i += 32) {
      __m256i v[4];
      for (int j = 0; j < 4; ++j) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(xr + i + 8 * j), inv);
        t = _mm256_add_ps(t, off);
        t = _mm256_min_ps(_mm256_max_ps(t, zero), top);
        v[j] = _mm256_cvttps_epi32(t);
      }
      // 32 int32 in [0, qmax] -> 32 bytes; packs interleave 128-bit lanes, undone by a permute
      const __m256i w01 = _mm256_packus_epi32(v[0], v[1]), w23 = _mm256_packus_epi32(v[2], v[3]);
      const __m256i b = _mm256_packus_epi16(w01, w23);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + i),
                          _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (; i + 8 <= k; i += 8) {  // (a K = 147 stem conv row has 19 after the 32-wide loop)
      __m256 t = _mm256_mul_ps(_mm256_loadu_ps(xr + i), inv);
      t = _mm256_add_ps(t, off);
      t = _mm256_min_ps(_mm256_max_ps(t, zero), top);
      const __m256i v = _mm256_cvttps_epi32(t);
      const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + i), _mm_packus_epi16(w, w));
    }
    if (i < k) {  // the last k % 8 through a masked load, stored byte-exact
      __m256 t = _mm256_mul_ps(_mm256_maskload_ps(xr + i, first_lanes(k - i)), inv);
      t = _mm256_add_ps(t, off);
      t = _mm256_min_ps(_mm256_max_ps(t, zero), top);
      const __m256i v = _mm256_cvttps_epi32(t);
      const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      alignas(16) uint8_t bytes[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(bytes), _mm_packus_epi16(w, w));
      std::memcpy(qr + i, bytes, k - i);
    }
    for (i = k; i < ldq; ++i) qr[i] = 0;
  }
}

}  // namespace pq
