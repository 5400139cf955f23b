// Int8Config forward: the row quantizer, then int8_gemm_run with the shared epilogue fused.
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/quantized_rows.h"
#include "forward/scratch.h"
#include "int8_gemm/int8_gemm.h"
#include "quantize/row_quantize.h"

namespace pq {

void quantize_asym_u8_rows(const float* x, size_t m, size_t k, size_t ldq, ActRange act,
                           uint8_t* q, float* sa, float* ro, int threads, Isa isa) {
  const QuantizeRowsExFn fn = quantize_rows_u8_ex_kernel(isa);
  RowQuantParams fixed{};
  if (act.is_static) fixed = row_quant_params(act.lo, act.hi, act.qmax);
  const size_t chunks = m >= 8 && threads > 1 ? static_cast<size_t>(threads) * 2 : 1;
  parallel_for(chunks, threads, [&](size_t c) {
    const size_t r0 = m * c / chunks, r1 = m * (c + 1) / chunks;
    fn(x + r0 * k, r1 - r0, k, ldq, act.qmax, act.is_static ? &fixed : nullptr, q + r0 * ldq,
       sa + r0, ro + r0);  // ro holds the zero points until the loop below
  });
  for (size_t r = 0; r < m; ++r) {
    if (act.is_static) {
      sa[r] = fixed.scale;
      ro[r] = fixed.scale * fixed.zero_point;
    } else {
      ro[r] = sa[r] * ro[r];
    }
  }
}

void forward_int8(const float* x, size_t m, size_t k, const int8_t* panels,
                  const int32_t* col_sums, size_t n, const float* w_scale, const float* w_off,
                  const float* bias, ActRange act, float* y, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const size_t k_pad = round_up(k, kInt8GroupK);  // the GEMM reads the rows in place
  const size_t ldq = int8_rows_stride(k);
  uint8_t* q = static_cast<uint8_t*>(thread_scratch(m * ldq, 0));
  float* sa = static_cast<float*>(thread_scratch(2 * m * sizeof(float), 1));
  float* ro = sa + m;
  quantize_asym_u8_rows(x, m, k, ldq, act, q, sa, ro, threads, isa);
  const Epilogue ep{sa, ro, false, w_scale, w_off, bias};
  int8_gemm_run(q, m, k_pad, ldq, false, panels, col_sums, n, reinterpret_cast<int32_t*>(y),
                threads, isa, &ep);
}

}  // namespace pq
