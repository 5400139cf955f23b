// The recurrent gates' AVX-512 build (recurrent_gates.inc).
#define PQ_GATE_KERNELS kGatesAvx512
#include "forward/recurrent_gates.inc"
