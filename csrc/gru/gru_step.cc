// Baseline build of the GRU step (gru_step.inc) and the per-ISA choice.
#define PQ_GRU_STEP_FN gru_step_scalar
#include "gru/gru_step.inc"

namespace pq {

GruStepFn gru_step_kernel(Isa isa, bool narrow) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx2 || isa == Isa::avx512) return narrow ? gru_step_narrow_avx2 : gru_step_avx2;
#endif
  (void)narrow;
  return gru_step_scalar;
}

}  // namespace pq
