// AVX2 build of the GRU step (gru_step.inc): same source, compiler-vectorized.
#define PQ_GRU_STEP_FN gru_step_avx2
#include "gru/gru_step.inc"
