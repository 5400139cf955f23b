// The shared epilogue (epilogue.h): the baseline build of its loops and the choice per tier.
#define PQ_EPILOGUE_KERNELS kEpilogueBaseline
#include "forward/epilogue_rows.inc"

namespace pq {
namespace {

const EpilogueKernels& epilogue_kernels(Isa isa) {
#if defined(PQ_HAVE_X86)
  if (isa == Isa::avx512) return kEpilogueAvx512;
  if (isa == Isa::avx2) return kEpilogueAvx2;
#endif
  return kEpilogueBaseline;
}

}  // namespace

void epilogue_i32(const Epilogue& ep, int32_t* c, size_t ldc, size_t m0, size_t m1, size_t n0,
                  size_t n1, Isa isa) {
  epilogue_kernels(isa).rows_i32(ep, c, ldc, m0, m1, n0, n1);
}

void epilogue_row_f32(const Epilogue& ep, size_t m, size_t n0, size_t nc, const float* acc,
                      float* out, Isa isa) {
  epilogue_kernels(isa).rows_f32(ep, m, m + 1, n0, nc, acc, nc, out, nc);
}

void epilogue_rows_f32(const Epilogue& ep, size_t m0, size_t m1, size_t n0, size_t nc,
                       const float* acc, size_t ld_acc, float* out, size_t ldo, Isa isa) {
  epilogue_kernels(isa).rows_f32(ep, m0, m1, n0, nc, acc, ld_acc, out, ldo);
}

}  // namespace pq
