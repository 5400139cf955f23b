// _C.validate_packed: the ops' own buffer validation (packed_utils.h), callable on its own so
// that loading a weight (PackedWeight unpickling, load_state_dict into a quantized module) checks
// it up front instead of at the first forward, payload included (packed_utils.h
// validate_packed_payload). Plus the packed format's shape limits, and the huge-page memory that
// quantized modules keep their streamed buffers in (core/hugepage_arena.h).
#include <pybind11/stl.h>

#include <new>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/hugepage_arena.h"

namespace pq {
namespace {

PackedOp parse_op(const std::string& op) {
  for (PackedOp p : {PackedOp::int8_gemm, PackedOp::lut_gemm, PackedOp::lowbit_gemm,
                     PackedOp::sparq_gemm, PackedOp::sparq24_gemm})
    if (op == packed_op_name(p)) return p;
  throw std::invalid_argument("op: unknown packed op '" + op +
                              "' (expected int8_gemm, lut_gemm, lowbit_gemm, sparq_gemm or sparq24_gemm)");
}

// The op keyword arguments a header records, named as the Python ops take them.
py::dict header_params(const PackedHeader& h) {
  py::dict p;
  switch (static_cast<PackedOp>(h.op)) {
    case PackedOp::int8_gemm:
      break;
    case PackedOp::lowbit_gemm:
      p["bits"] = static_cast<int>(h.bits);
      break;
    case PackedOp::lut_gemm:
      p["w_levels"] = py::make_tuple(h.w_levels[0], h.w_levels[1], h.w_levels[2], h.w_levels[3]);
      break;
    case PackedOp::sparq_gemm:
    case PackedOp::sparq24_gemm: {
      SparqConfig cfg;
      sparq_config_from_flags(h.flags, &cfg);  // valid: checked by validate_packed_buffer
      p["bits"] = cfg.bits;
      p["options"] = cfg.options;
      p["rounding"] = cfg.round ? "round" : "trunc";
      p["pairs"] = cfg.pairs;
      break;
    }
  }
  return p;
}

py::dict validate_packed(const CArray<uint8_t>& buf, const std::string& op,
                         const std::string& name, bool payload) {
  const PackedHeader h = checked_header(buf, parse_op(op), name.c_str());
  if (payload) validate_packed_payload(buf.data(), h, name.c_str());
  py::dict out;
  out["op"] = op;
  out["n"] = h.n;
  out["k"] = h.k;
  out["nbytes"] = h.total_bytes;
  out["params"] = header_params(h);
  return out;
}

// An uninitialized uint8 array of nbytes in huge-page arena memory, freed with the array.
py::array_t<uint8_t> hugepage_bytes(size_t nbytes) {
  void* p = hugepage_alloc(nbytes);
  if (!p) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { hugepage_free(q); });
  return py::array_t<uint8_t>({nbytes}, {size_t{1}}, static_cast<uint8_t*>(p), owner);
}

}  // namespace

void bind_packed(py::module_& m) {
  m.def("validate_packed", &validate_packed, py::arg("buffer"), py::arg("op"),
        py::arg("name") = "w", py::arg("payload") = true,
        "Checks a packed weight buffer (1-D uint8) exactly as the op `op` does before running: "
        "header, layout and size; with `payload` (load time) also that the regions derived from "
        "the weights match them (int8 column sums: one pass over the weights). Returns {op, n, "
        "k, nbytes, params}; raises ValueError naming `name` otherwise.");
  m.def("hugepage_bytes", &hugepage_bytes, py::arg("nbytes"),
        "An uninitialized uint8 array of nbytes, 64-byte aligned, on transparent huge pages "
        "where the OS gives them (shared 2 MiB-aligned arenas, core/hugepage_arena.h).");
  m.def(
      "hugepage_owns",
      [](uintptr_t address) { return hugepage_owns(reinterpret_cast<const void*>(address)); },
      py::arg("address"), "Whether the address lies in a live hugepage_bytes buffer.");
  m.attr("HUGEPAGE_ARENAS") = py::bool_(hugepage_arenas_available());
  m.attr("PACKED_MAX_N") = py::int_(kPackedMaxN);
  m.attr("PACKED_MAX_K") = py::int_(kPackedMaxK);
}

}  // namespace pq
