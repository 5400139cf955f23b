#include <algorithm>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"

namespace pq {
namespace {

CArray<uint8_t> int8_prepack(const CArray<int8_t>& w, int op) {
  require_ndim(w, 2, "w");
  const size_t n = w.shape(0), k = w.shape(1);
  require(n < (1u << 31) && k < (1u << 24), "w: shape too large for the packed format");
  CArray<uint8_t> out(static_cast<py::ssize_t>(int8_packed_bytes(n, k)));
  const int8_t* src = w.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    int8_pack_weights(src, n, k, static_cast<PackedOp>(op), 0, dst);
  }
  return out;
}

// a: [M, K] bytes (uint8, or int8 viewed as uint8 when a_signed)
CArray<int32_t> int8_gemm(const CArray<uint8_t>& a, bool a_signed, const CArray<uint8_t>& packed,
                          int op, int threads) {
  require_ndim(a, 2, "a");
  const PackedHeader h = checked_header(packed, static_cast<PackedOp>(op));
  const size_t m = a.shape(0), k = a.shape(1);
  require(k == h.k, "a: expected K = " + std::to_string(h.k) + " columns to match w, got " +
                        std::to_string(k));
  const size_t n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* a_ptr = a.data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    if (k == 0) {
      std::fill(out, out + m * n, 0);
    } else {
      int8_gemm_run(a_ptr, m, k, k, a_signed, reinterpret_cast<const int8_t*>(base + h.data_offset),
                    reinterpret_cast<const int32_t*>(base + h.aux_offset), n, out, threads,
                    active_isa());
    }
  }
  return c;
}

}  // namespace

void bind_int8_gemm(py::module_& m) {
  m.def("int8_prepack", &int8_prepack, py::arg("w"), py::arg("op") = 1);
  m.def("int8_gemm", &int8_gemm, py::arg("a"), py::arg("a_signed"), py::arg("packed"),
        py::arg("op") = 1, py::arg("threads") = 1);
}

}  // namespace pq
