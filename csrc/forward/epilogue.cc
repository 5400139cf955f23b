// Portable on purpose: the compiler vectorizes these loops for the baseline target, and one
// implementation means one rounding sequence on every path.
#include "forward/epilogue.h"

#include <cstring>

namespace pq {
namespace {

template <typename Acc>
inline void row_apply(const Epilogue& ep, size_t m, size_t n0, size_t nc, const Acc* acc,
                      float* out) {
  const size_t r = ep.rows_shared ? 0 : m;
  const float rs = ep.row_scale[r];
  const float ro = ep.row_offset ? ep.row_offset[r] : 0.0f;
  const float* cs = ep.col_scale ? ep.col_scale + n0 : nullptr;
  const float* co = ep.row_offset && ep.col_offset ? ep.col_offset + n0 : nullptr;
  const float* b = ep.bias ? ep.bias + n0 : nullptr;
  // The branches are hoisted per row; each variant is a plain vectorizable loop.
  for (size_t j = 0; j < nc; ++j) {
    float y = static_cast<float>(acc[j]) * rs;
    if (cs) y = y * cs[j];
    if (co) y = y - ro * co[j];
    if (b) y = y + b[j];
    out[j] = y;
  }
}

}  // namespace

void epilogue_i32(const Epilogue& ep, int32_t* c, size_t ldc, size_t m0, size_t m1, size_t n0,
                  size_t n1) {
  for (size_t m = m0; m < m1; ++m) {
    int32_t* row = c + m * ldc + n0;
    // float written over the int32 it came from, element by element (same index): well defined
    // through a separate float view of the row
    float tmp[256];
    for (size_t j0 = 0; j0 < n1 - n0; j0 += 256) {
      const size_t nc = n1 - n0 - j0 < 256 ? n1 - n0 - j0 : 256;
      row_apply(ep, m, n0 + j0, nc, row + j0, tmp);
      std::memcpy(row + j0, tmp, nc * sizeof(float));
    }
  }
}

void epilogue_f32(const Epilogue& ep, float* c, size_t ldc, size_t m0, size_t m1, size_t n0,
                  size_t n1) {
  for (size_t m = m0; m < m1; ++m) row_apply(ep, m, n0, n1 - n0, c + m * ldc + n0, c + m * ldc + n0);
}

void epilogue_row_f32(const Epilogue& ep, size_t m, size_t n0, size_t nc, const float* acc,
                      float* out) {
  row_apply(ep, m, n0, nc, acc, out);
}

}  // namespace pq
