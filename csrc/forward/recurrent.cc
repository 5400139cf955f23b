// Quantized recurrent layers' time loop (recurrent.h).
#include "forward/recurrent.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace pq {
namespace {

const GateKernels& gate_kernels(Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx512) return kGatesAvx512;
  if (isa == Isa::avx2) return kGatesAvx2;
#endif
  return kGatesBaseline;
}

}  // namespace

void sigmoid_rows(const float* x, size_t count, float* y, Isa isa) {
  gate_kernels(isa).sigmoid(x, count, y);
}

void tanh_rows(const float* x, size_t count, float* y, Isa isa) {
  gate_kernels(isa).tanh(x, count, y);
}

RecurrentStop recurrent_run(const float* xp, const int64_t* batch_sizes, size_t steps,
                            bool reverse, const RecurrentShape& s, const StepMatmul& hh,
                            const StepMatmul& hr, float* h, float* c, float* y, int threads,
                            Isa isa) {
  const GateKernels& k = gate_kernels(isa);
  const auto sigmoid_rows = k.sigmoid;
  const auto tanh_rows = k.tanh;
  const size_t H = s.hidden, out = s.out;
  const size_t gates = s.mode == CellMode::lstm ? 4 * H : s.mode == CellMode::gru ? 3 * H : H;
  std::vector<size_t> offset(steps + 1, 0);
  for (size_t t = 0; t < steps; ++t)
    offset[t + 1] = offset[t] + static_cast<size_t>(batch_sizes[t]);
  std::vector<float> g(s.batch * gates), cell(hr ? s.batch * H : 0);
  for (size_t i = 0; i < steps; ++i) {
    const size_t t = reverse ? steps - 1 - i : i;
    const size_t n = static_cast<size_t>(batch_sizes[t]);
    if (n == 0) continue;
    if (hh(h, n, g.data(), threads)) return RecurrentStop::hh_refused;  // this step's state matmul
    const float* x = xp + offset[t] * gates;
    float* yt = y + offset[t] * out;
    for (size_t r = 0; r < n; ++r) {
      float* gr = g.data() + r * gates;
      const float* xr = x + r * gates;
      float* hr_row = h + r * out;
      if (s.mode == CellMode::lstm) {
        for (size_t j = 0; j < gates; ++j) gr[j] += xr[j];
        sigmoid_rows(gr, 3 * H, gr);  // i, f, o
        tanh_rows(gr + 3 * H, H, gr + 3 * H);
        float* cr = c + r * H;
        for (size_t j = 0; j < H; ++j) cr[j] = gr[H + j] * cr[j] + gr[j] * gr[3 * H + j];
        float* dst = hr ? cell.data() + r * H : hr_row;
        tanh_rows(cr, H, dst);
        for (size_t j = 0; j < H; ++j) dst[j] *= gr[2 * H + j];
      } else if (s.mode == CellMode::gru) {
        for (size_t j = 0; j < 2 * H; ++j) gr[j] += xr[j];
        sigmoid_rows(gr, 2 * H, gr);  // r, z
        for (size_t j = 0; j < H; ++j) gr[2 * H + j] = xr[2 * H + j] + gr[j] * gr[2 * H + j];
        tanh_rows(gr + 2 * H, H, gr + 2 * H);
        for (size_t j = 0; j < H; ++j) {  // (1 - z) n + z h
          const float nj = gr[2 * H + j];
          hr_row[j] = nj + gr[H + j] * (hr_row[j] - nj);
        }
      } else {
        for (size_t j = 0; j < H; ++j) gr[j] += xr[j];
        if (s.mode == CellMode::rnn_tanh)
          tanh_rows(gr, H, hr_row);
        else
          for (size_t j = 0; j < H; ++j) hr_row[j] = gr[j] < 0.0f ? 0.0f : gr[j];  // (NaN stays)
      }
    }
    if (hr && hr(cell.data(), n, h, threads))  // LSTM's projection: W_hr (o tanh c)
      return RecurrentStop::hr_refused;
    std::memcpy(yt, h, n * out * sizeof(float));
  }
  return RecurrentStop::ran;
}

}  // namespace pq
