// The recurrent gates' AVX2 build (recurrent_gates.inc).
#define PQ_GATE_KERNELS kGatesAvx2
#include "forward/recurrent_gates.inc"
