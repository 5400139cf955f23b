// The one float epilogue of every fused forward (int8, low-bit, LUT2, SPARQ):
//
//   y[m,n] = (acc[m,n] * row_scale[m]) * col_scale[n] - row_offset[m] * col_offset[n] + bias[n]
//
// acc is the integer accumulator (int32, converted in place) or the low-bit grouped kernel's
// float result. One rounding per operation, left to right, no FMA contraction (the build uses
// -ffp-contract=off and this file has no intrinsics), so every ISA path gives the same bits.
// The int8 family's driver applies it per panel too (int8_gemm_run), so there is one epilogue.
//
// Which family puts what where (constants computed at conversion, see pyquant/nn/schemes.py):
//   int8 / WeightOnly zero point: row_scale = sa, row_offset = sa*zp, col_offset = sw*sum_k w
//   LUT2 offset:                   row_scale = sa, row_offset = -off, col_offset = sw*sum_k lv[w]
//   SPARQ:                         row_scale = sa, no offsets
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

struct Epilogue {
  const float* row_scale;   // [M], or one value for every row when rows_shared
  const float* row_offset;  // [M] / one value; nullptr: no offset term
  bool rows_shared;         // static activation quantization: one (scale, offset) for all rows
  const float* col_scale;   // [N] or nullptr (1)
  const float* col_offset;  // [N] or nullptr (0); used only with row_offset
  const float* bias;        // [N] or nullptr
};

// c[m0:m1, n0:n1] (row stride ldc): int32 accumulators -> float32 results in the same memory.
void epilogue_i32(const Epilogue& ep, int32_t* c, size_t ldc, size_t m0, size_t m1, size_t n0,
                  size_t n1, Isa isa);
// One row of 64-column panel output: out[j] for j < nc is column n0 + j of row m.
void epilogue_row_f32(const Epilogue& ep, size_t m, size_t n0, size_t nc, const float* acc,
                      float* out, Isa isa);
// Rows [m0, m1) of it: acc row r - m0 at acc + (r - m0) * ld_acc, out row at out + (r - m0) * ldo
// (the variant of the formula chosen once for the block, not per row).
void epilogue_rows_f32(const Epilogue& ep, size_t m0, size_t m1, size_t n0, size_t nc,
                       const float* acc, size_t ld_acc, float* out, size_t ldo, Isa isa);

// The same loops compiled for each x86 tier (epilogue_rows.inc; the operations are IEEE and
// uncontracted, so the vector width changes the speed, not the bits).
struct EpilogueKernels {
  void (*rows_i32)(const Epilogue& ep, int32_t* c, size_t ldc, size_t m0, size_t m1, size_t n0,
                   size_t n1);
  void (*rows_f32)(const Epilogue& ep, size_t m0, size_t m1, size_t n0, size_t nc,
                   const float* acc, size_t ld_acc, float* out, size_t ldo);
};
extern const EpilogueKernels kEpilogueBaseline;
#if defined(PQ_HAVE_X86)
extern const EpilogueKernels kEpilogueAvx2, kEpilogueAvx512;
#endif

}  // namespace pq
