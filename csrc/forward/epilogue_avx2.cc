// The shared epilogue's loops (epilogue_rows.inc) with AVX2 vectors.
#define PQ_EPILOGUE_KERNELS kEpilogueAvx2
#include "forward/epilogue_rows.inc"
