// The time loop of a quantized recurrent layer (pyquant.nn.QuantRNN) in one native call: per
// step, the state's matmul through a fused forward (forward.h) and the cell's gates in float.
// The input projections of every step arrive precomputed (one GEMM over all rows, biases in).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

#include "core/isa.h"

namespace pq {

enum class CellMode { lstm, gru, rnn_tanh, rnn_relu };

// y[m][n] = the weight's fused forward of x[m][k] on `threads` threads; returns true where the
// layer refuses its input (SparqConfig(negative="error") and a negative state).
using StepMatmul = std::function<bool(const float* x, size_t m, float* y, int threads)>;

struct RecurrentShape {
  CellMode mode = CellMode::lstm;
  size_t hidden = 0;    // H: the cell state's width (LSTM c, and h without a projection)
  size_t out = 0;       // the output h's width: H, or proj_size
  size_t batch = 0;     // B: rows of h (and c)
};

// Rows are packed as a PackedSequence's data: step t owns the next batch_sizes[t] rows of xp
// (gates: LSTM (i, f, o, g), GRU (r, z, n), RNN one) and y, and runs the first batch_sizes[t]
// rows of h / c (sequences sorted longest first: batch_sizes never grows). reverse: steps from
// the last to the first. h [B][out] and c [B][H] (LSTM only) hold the initial states on entry
// and the final ones on return. hh: the state matmul ([gate width x out] weight, its bias is
// GRU's b_hh); hr: LSTM's projection ([out x H]) or empty. Stops where a matmul refused its input
// (h, c and y then partly written) and says which.
enum class RecurrentStop { ran, hh_refused, hr_refused };
RecurrentStop recurrent_run(const float* xp, const int64_t* batch_sizes, size_t steps,
                            bool reverse, const RecurrentShape& s, const StepMatmul& hh,
                            const StepMatmul& hr, float* h, float* c, float* y, int threads,
                            Isa isa);

// The gates' nonlinearities as the loop computes them (recurrent_gates.inc), one build per tier:
// within 2.5e-7 of the exact functions, the same bits on every tier and CPU.
struct GateKernels {
  void (*sigmoid)(const float* x, size_t count, float* y);
  void (*tanh)(const float* x, size_t count, float* y);
};
extern const GateKernels kGatesBaseline, kGatesAvx2, kGatesAvx512;
void sigmoid_rows(const float* x, size_t count, float* y, Isa isa);
void tanh_rows(const float* x, size_t count, float* y, Isa isa);

}  // namespace pq
