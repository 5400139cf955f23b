// The recurrent gates' baseline build (recurrent_gates.inc).
#define PQ_GATE_KERNELS kGatesBaseline
#include "forward/recurrent_gates.inc"
