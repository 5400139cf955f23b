// The elementwise half of one QuantGRU time step (everything after the recurrent GEMM): gate
// requantizations, lookup tables, the update. Plain int64 loops mirroring gru.py's torch
// arithmetic bit for bit (wrapping on overflow like torch); the AVX2 build of the same source
// lets the compiler vectorize them (4 lanes of emulated 64-bit multiplies beat scalar imul).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

constexpr int kGruShift = 36;  // gru.py SHIFT: every rescale is (t * M + 2^35) >> 36

struct GruGateView {
  const int32_t* p;  // int32 GEMM results of one gate
  size_t ld;         // row stride (elements)
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
};

using GruStepFn = void (*)(const GruStepArgs& a);
void gru_step_scalar(const GruStepArgs& a);
#if defined(PQ_HAVE_X86)
void gru_step_avx2(const GruStepArgs& a);
#endif
GruStepFn gru_step_kernel(Isa isa);

}  // namespace pq
