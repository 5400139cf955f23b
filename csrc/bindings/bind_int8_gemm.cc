#include <algorithm>
#include <optional>
#include <pybind11/stl.h>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "forward/epilogue.h"
#include "int8_gemm/int8_gemm.h"
#include "quantize/row_quantize.h"

namespace pq {
namespace {

// The int8 panel layout serves int8_gemm and (with SPARQ flags) sparq_gemm.
PackedOp int8_layout_op(int op, bool allow_sparq) {
  const bool ok = op == static_cast<int>(PackedOp::int8_gemm) ||
                  (allow_sparq && op == static_cast<int>(PackedOp::sparq_gemm));
  require(ok, "op: expected " + std::string(allow_sparq ? "1 (int8_gemm) or 4 (sparq_gemm)"
                                                        : "1 (int8_gemm)") +
                  ", got " + std::to_string(op));
  return static_cast<PackedOp>(op);
}

CArray<uint8_t> int8_prepack(const CArray<int8_t>& w, int op) {
  const PackedOp pop = int8_layout_op(op, false);
  require_ndim(w, 2, "w");
  const size_t n = w.shape(0), k = w.shape(1);
  require_packable_shape(n, k);
  CArray<uint8_t> out(static_cast<py::ssize_t>(int8_packed_bytes(n, k)));
  const int8_t* src = w.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    int8_pack_weights(src, n, k, pop, 0, dst);
  }
  return out;
}

// a: [M, K] bytes (uint8, or int8 viewed as uint8 when a_signed)
CArray<int32_t> int8_gemm(const CArray<uint8_t>& a, bool a_signed, const CArray<uint8_t>& packed,
                          int op, int threads) {
  require_ndim(a, 2, "a");
  const PackedHeader h = checked_header(packed, int8_layout_op(op, true));
  const size_t m = a.shape(0), k = a.shape(1);
  require_k_matches(h, k);
  const size_t n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* a_ptr = a.data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    int8_gemm_run(a_ptr, m, k, k, a_signed, reinterpret_cast<const int8_t*>(base + h.data_offset),
                  reinterpret_cast<const int32_t*>(base + h.aux_offset), n, out, threads,
                  active_isa());
  }
  return c;
}

void require_vector(const CArray<float>& v, size_t len, const char* name) {
  require(v.ndim() == 1 && static_cast<size_t>(v.shape(0)) == len,
          std::string(name) + ": expected a float32 vector of length " + std::to_string(len));
}

// y = (acc * row_scale[m]) * col_scale[n] - row_offset[m] * col_offset[n] (+ bias[n]), float32,
// fused into the GEMM (the Int8Config front end's dequantization).
CArray<float> int8_gemm_dequant(const CArray<uint8_t>& a, bool a_signed, const CArray<uint8_t>& packed,
                                const CArray<float>& row_scale, const CArray<float>& row_offset,
                                const CArray<float>& col_scale, const CArray<float>& col_offset,
                                const std::optional<CArray<float>>& bias, int threads) {
  require_ndim(a, 2, "a");
  const PackedHeader h = checked_header(packed, PackedOp::int8_gemm);
  const size_t m = a.shape(0), k = a.shape(1), n = h.n;
  require_k_matches(h, k);
  require_vector(row_scale, m, "row_scale");
  require_vector(row_offset, m, "row_offset");
  require_vector(col_scale, n, "col_scale");
  require_vector(col_offset, n, "col_offset");
  if (bias) require_vector(*bias, n, "bias");
  CArray<float> y({m, n});
  const Epilogue ep{row_scale.data(), row_offset.data(), false, col_scale.data(),
                    col_offset.data(), bias ? bias->data() : nullptr};
  int32_t* out = reinterpret_cast<int32_t*>(y.mutable_data());
  const uint8_t* a_ptr = a.data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    int8_gemm_run(a_ptr, m, k, k, a_signed, reinterpret_cast<const int8_t*>(base + h.data_offset),
                  reinterpret_cast<const int32_t*>(base + h.aux_offset), n, out, threads,
                  active_isa(), &ep);
  }
  return y;
}

py::tuple quantize_rows_u8(const CArray<float>& x, int threads) {
  require_ndim(x, 2, "x");
  const size_t m = x.shape(0), k = x.shape(1);
  CArray<uint8_t> q({m, k});
  CArray<float> scale(static_cast<py::ssize_t>(m)), zp(static_cast<py::ssize_t>(m));
  const float* src = x.data();
  uint8_t* qd = q.mutable_data();
  float* sd = scale.mutable_data();
  float* zd = zp.mutable_data();
  const QuantizeRowsFn fn = quantize_rows_u8_kernel(active_isa());
  {
    py::gil_scoped_release release;
    const size_t chunks = chunk_count(m, threads, (1u << 15) / (k + 1) + 1);
    parallel_for(chunks, threads, [&](size_t c) {
      const size_t r0 = m * c / chunks, r1 = m * (c + 1) / chunks;
      fn(src + r0 * k, r1 - r0, k, qd + r0 * k, sd + r0, zd + r0);
    });
  }
  return py::make_tuple(q, scale, zp);
}

}  // namespace

void bind_int8_gemm(py::module_& m) {
  m.def(
      "int8_full_speed_act_bits", [] { return int8_gemm_kernels(active_isa()).full_speed_act_bits; },
      "widest uint8 activations the active int8_gemm kernel runs at full speed (7 or 8)");
  m.def("int8_prepack", &int8_prepack, py::arg("w"), py::arg("op") = 1);
  m.def("int8_gemm_dequant", &int8_gemm_dequant, py::arg("a"), py::arg("a_signed"),
        py::arg("packed"), py::arg("row_scale"), py::arg("row_offset"), py::arg("col_scale"),
        py::arg("col_offset"), py::arg("bias") = py::none(), py::arg("threads") = 1);
  m.def("quantize_rows_u8", &quantize_rows_u8, py::arg("x"), py::arg("threads") = 1);
  m.def("int8_gemm", &int8_gemm, py::arg("a"), py::arg("a_signed"), py::arg("packed"),
        py::arg("op") = 1, py::arg("threads") = 1);
}

}  // namespace pq
