// The shared epilogue's loops (epilogue_rows.inc) with AVX-512 vectors.
#define PQ_EPILOGUE_KERNELS kEpilogueAvx512
#include "forward/epilogue_rows.inc"
