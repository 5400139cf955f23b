// WeightOnlyConfig forward: the row quantizer writes the K-padded activations the low-bit
// kernels read, then the grouped driver runs with the shared epilogue per tile.
#include "core/macros.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/quantized_rows.h"
#include "forward/scratch.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {

void forward_lowbit(const float* x, size_t m, size_t k, const uint8_t* panels, size_t n, int bits,
                    size_t group_size, const uint16_t* panel_scales, const float* w_off,
                    const float* bias, ActRange act, float* y, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  const size_t lda = lowbit_rows_stride(k);
  uint8_t* q = static_cast<uint8_t*>(thread_scratch(m * lda, 0));
  float* sa = static_cast<float*>(thread_scratch(2 * m * sizeof(float), 1));
  float* ro = sa + m;
  quantize_asym_u8_rows(x, m, k, lda, act, q, sa, ro, threads, isa);
  // y = (F * sa) - (sa * zp) * w_off + bias, F = sum_g scale * (integer group sum)
  const Epilogue ep{sa, ro, false, nullptr, w_off, bias};
  lowbit_grouped_forward_run(q, lda, m, k, panels, n, bits, group_size, panel_scales, ep, y,
                             threads, isa);
}

}  // namespace pq
