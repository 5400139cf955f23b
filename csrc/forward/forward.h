// Fused forwards of the quantized modules: float32 x [m][k] in, float32 y [m][n] out, in one
// call: activation quantization (dynamic per row, or one static range), the integer GEMM and the
// shared epilogue (epilogue.h). Every constant that depends only on the weight (column sums x
// scales, panel-layout scales, ...) is computed at conversion and passed in. Call without the GIL.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"
#include "lut_gemm/lut_gemm.h"
#include "sparq/sparq.h"

namespace pq {

// The module's act_range: static (calibrated) or dynamic per row; qmax: the uint8 row
// quantizer's top code (255, or 127 for Int8Config's 7-bit activations).
struct ActRange {
  bool is_static = false;
  float lo = 0.0f, hi = 0.0f;
  float qmax = 255.0f;
};

// Int8Config: asymmetric uint8 rows x int8 weights (int8_gemm_run with the shared epilogue).
// w_off[n] = w_scale[n] * sum_k w[n, k].
void forward_int8(const float* x, size_t m, size_t k, const int8_t* panels,
                  const int32_t* col_sums, size_t n, const float* w_scale, const float* w_off,
                  const float* bias, ActRange act, float* y, int threads, Isa isa);

// WeightOnlyConfig: asymmetric uint8 rows x grouped low-bit weights. panel_scales: bfloat16 bits
// in the [N_pad/64][G][64] layout (lowbit_panel_scales); w_off[n] = sum_g scale[n, g] * sum_{k in
// g} w.
void forward_lowbit(const float* x, size_t m, size_t k, const uint8_t* panels, size_t n, int bits,
                    size_t group_size, const uint16_t* panel_scales, const float* w_off,
                    const float* bias, ActRange act, float* y, int threads, Isa isa);

// LUT2Config: 2-bit activation codes ("minmax", "mse" or static) x 2-bit weight codes.
// w_off[n] = w_scale[n] * sum_k w_levels[w[n, k]].
void forward_lut(const float* x, size_t m, size_t k, const uint8_t* panels, size_t n,
                 const LutCodebook& cb, const int32_t a_levels[4], bool mse,
                 const float* w_scale, const float* w_off, const float* bias, ActRange act,
                 float* y, int threads, Isa isa);

// SparqConfig: magnitudes trimmed once, signed values in one GEMM where the int8 path's
// activation format holds them (int16), else positive and negative parts (sparq_gemm.cc).
// Returns whether any input was negative. w_scale nullptr: no epilogue, y holds the int32 sums
// (sparq_gemm_signed_run).
bool forward_sparq(const float* x, size_t m, size_t k, const SparqConfig& cfg,
                   const int8_t* panels, const int32_t* col_sums, size_t n, const float* w_scale,
                   const float* bias, ActRange act, float* y, int threads, Isa isa);

// SparqConfig(sparse24=True): |x| quantized per row (or static), trimmed per output channel at
// its 2:4 weight mask inside the sparq24 kernel (pairs judged on magnitudes), the shared
// epilogue (row_scale = sa, col_scale = w_scale, bias). Negative inputs keep their sign
// (sign-magnitude: a block with one runs positive and negative parts, twice the products); with
// allow_negative false, returns true and computes nothing if x has a negative value, else
// returns false. panels: the sparq24_gemm layout (sparq.h).
bool forward_sparq24(const float* x, size_t m, size_t k, const SparqConfig& cfg,
                     const uint8_t* panels, size_t n, const float* w_scale, const float* bias,
                     ActRange act, bool allow_negative, float* y, int threads, Isa isa);

// ---- grouped forwards (forward_grouped.cc): several weights of one shape in one call
// (a mixture-of-experts layer: the experts one step routes its tokens to). Group g multiplies
// input rows [in_row0, in_row0 + rows) by weight `weight` into the next `rows` output rows
// (outputs in group order); groups may share input rows (one token sent to k experts). Each
// group's rows give exactly what that weight's own forward gives them; all groups' tasks run
// in one parallel region (core/gemm_tasks.h: run_task_sets).
struct RowGroup {
  size_t weight = 0, in_row0 = 0, rows = 0;
};

struct Int8Weight {  // forward_int8's per-weight arguments
  const int8_t* panels;
  const int32_t* col_sums;
  const float* w_scale;
  const float* w_off;
  const float* bias;  // or nullptr
  ActRange act;
};
void forward_int8_grouped(const float* x, size_t k, const Int8Weight* weights,
                          const RowGroup* groups, size_t n_groups, size_t n, float* y,
                          int threads, Isa isa);

struct LowbitWeight {  // forward_lowbit's per-weight arguments
  const uint8_t* panels;
  const uint16_t* panel_scales;
  const float* w_off;
  const float* bias;  // or nullptr
  ActRange act;
};
void forward_lowbit_grouped(const float* x, size_t k, int bits, size_t group_size,
                            const LowbitWeight* weights, const RowGroup* groups, size_t n_groups,
                            size_t n, float* y, int threads, Isa isa);

}  // namespace pq
