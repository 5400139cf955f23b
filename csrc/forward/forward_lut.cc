// LUT2Config forward: per-row 2-bit activation codes (minmax, the bounded-cost "mse" estimator,
// or a static range), lut_gemm_run, then the shared epilogue over the output in parallel.
#include <algorithm>

#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "forward/forward.h"
#include "forward/scratch.h"
#include "quantize/act_quantize.h"

namespace pq {

void forward_lut(const float* x, size_t m, size_t k, const uint8_t* panels, size_t n,
                 const LutCodebook& cb, const int32_t a_levels[4], bool mse,
                 const float* w_scale, const float* w_off, const float* bias, ActRange act,
                 float* y, int threads, Isa isa) {
  if (m == 0 || n == 0) return;
  uint8_t* codes = static_cast<uint8_t*>(thread_scratch(m * k, 0));
  float* sa = static_cast<float*>(thread_scratch(2 * m * sizeof(float), 1));
  float* neg_off = sa + m;
  const LutActLevels lv = lut_act_levels(a_levels);
  const size_t chunks = m >= 2 && threads > 1 ? std::min(m, static_cast<size_t>(threads) * 4) : 1;
  parallel_for(chunks, threads, [&](size_t c) {
    for (size_t r = m * c / chunks; r < m * (c + 1) / chunks; ++r) {
      float s, off;
      lut_quantize_row(x + r * k, k, lv, mse, act.is_static, act.lo, act.hi, isa, codes + r * k,
                       &s, &off);
      sa[r] = s;
      neg_off[r] = -off;  // y = sw * (sa * acc + off * lsum): the offset term enters with +
    }
  });
  int32_t* acc = reinterpret_cast<int32_t*>(y);
  lut_gemm_run(codes, m, k, k, panels, n, cb, acc, threads, isa, LutKernel::automatic);
  const Epilogue ep{sa, neg_off, false, w_scale, w_off, bias};
  const size_t tasks = std::min(m, static_cast<size_t>(threads > 1 ? threads : 1) * 4);
  if (m == 1) {
    const size_t nt = static_cast<size_t>(threads > 1 ? threads : 1);
    parallel_for(nt, threads, [&](size_t t) {
      epilogue_i32(ep, acc, n, 0, 1, n * t / nt, n * (t + 1) / nt, isa);
    });
    return;
  }
  parallel_for(tasks, threads, [&](size_t t) {
    epilogue_i32(ep, acc, n, m * t / tasks, m * (t + 1) / tasks, 0, n, isa);
  });
}

}  // namespace pq
