// The elementwise half of one QuantGRU time step (everything after the recurrent GEMM): gate
// requantizations, lookup tables, the update. Plain int64 loops mirroring gru.py's torch
// arithmetic bit for bit (wrapping on overflow like torch); the AVX2 build of the same source
// lets the compiler vectorize them (4 lanes of emulated 64-bit multiplies beat scalar imul).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/isa.h"

namespace pq {

constexpr int kGruShift = 36;  // gru.py SHIFT: every rescale is (t * M + 2^35) >> 36

struct GruGateView {
  const int32_t* p;  // int32 GEMM results of one gate
  size_t ld;         // row stride (elements)
};

// Operands of the narrow AVX2 step (gru_step_narrow_avx2.cc), built by GruPlan only when every
// one of them is exact in 32 bits (gru_cell.cc, narrow_operands): int32 biases, and each
// multiplier split as M = hi * 2^31 + lo with lo in [0, 2^31), so t * M mod 2^64 is two signed
// 32 x 32 -> 64 multiplies (vpmuldq) for any int32 t: the int64 step's bits, 4 lanes at a time.
struct GruNarrow {
  std::vector<int32_t> b_ih, b_hh;                     // [3H]
  // [H], held as int64 lanes (a plain load feeds vpmuldq, which reads the low dwords)
  std::vector<int64_t> mi_hi[3], mi_lo[3], mh_hi[3], mh_lo[3], rn_hi, rn_lo;
  int32_t omz_hi, omz_lo, zn_hi, zn_lo, zh_hi, zh_lo, h0_hi, h0_lo, h1_hi, h1_lo;
};

struct GruStepArgs {
  size_t batch, hidden;
  size_t gi_row0, gi_row_step;  // input-projection row of batch b: gi_row0 + b * gi_row_step
  GruGateView gi[3], gh[3];     // input / recurrent accumulators per gate r, z, n
  const int64_t *b_ih, *b_hh;   // [3H]
  const int64_t *lut_r, *lut_z, *lut_n;
  const int64_t *m_pre_i[3], *m_pre_h[3], *m_rn;  // [H]
  int64_t q_pre[3], q_rn, L_z, L_omz, q_zn, q_zh, q_h;
  int64_t m_omz, m_zn, m_zh, m_h0, m_h1;
  int32_t *idx_r, *idx_z, *idx_n;  // scratch [H]: lookup indices
  int64_t *v_r, *v_z, *v_n;        // scratch [H]: looked-up values
  int8_t* h;                       // [B][H] state codes, updated in place
  int64_t* out;                    // row of batch b: out + (gi_row0 + b * gi_row_step) * H
  const GruNarrow* narrow;         // the narrow step's operands (nullptr: not exact in 32 bits)
};

using GruStepFn = void (*)(const GruStepArgs& a);
void gru_step_scalar(const GruStepArgs& a);
#if defined(PQ_HAVE_X86)
void gru_step_avx2(const GruStepArgs& a);
void gru_step_narrow_avx2(const GruStepArgs& a);  // needs a.narrow and hidden % 4 == 0
#endif
// The step for this ISA; `narrow`: the plan's operands fit the narrow step.
GruStepFn gru_step_kernel(Isa isa, bool narrow);

}  // namespace pq
