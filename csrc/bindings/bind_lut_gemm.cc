#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/macros.h"
#include "lut_gemm/lut_gemm.h"

namespace pq {
namespace {

using Levels = std::array<int32_t, 4>;

uint8_t max_code(const uint8_t* p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; ++i) acc |= p[i];  // any code > 3 sets a bit above bit 1
  return acc;
}

LutKernel parse_kernel(const std::string& s) {
  if (s == "auto") return LutKernel::automatic;
  if (s == "scalar") return LutKernel::scalar;
  if (s == "deepgemm") return LutKernel::deepgemm;
  if (s == "vpermb") return LutKernel::vpermb;
  if (s == "pair") return LutKernel::pair;
  throw std::invalid_argument("kernel: unknown lut_gemm kernel '" + s +
                              "' (expected auto, scalar, deepgemm, vpermb or pair)");
}

LutCodebook checked_codebook(const Levels& a_levels, const Levels& w_levels) {
  for (int i = 0; i < 4; ++i) {
    require(w_levels[i] >= -128 && w_levels[i] <= 127, "w_levels: every level must fit int8");
    require(a_levels[i] >= -128 && a_levels[i] <= 127, "a_levels: every level must fit int8");
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int32_t p = a_levels[i] * w_levels[j];
      require(p >= -128 && p <= 127,
              "a_levels/w_levels: the product " + std::to_string(a_levels[i]) + " * " +
                  std::to_string(w_levels[j]) + " = " + std::to_string(p) +
                  " does not fit int8");
    }
  return lut_codebook(a_levels.data(), w_levels.data());
}

CArray<uint8_t> lut_prepack(const CArray<uint8_t>& w, const Levels& w_levels) {
  require_ndim(w, 2, "w");
  const size_t n = w.shape(0), k = w.shape(1);
  require_packable_shape(n, k);
  int8_t lv[4];
  for (int i = 0; i < 4; ++i) {
    require(w_levels[i] >= -128 && w_levels[i] <= 127, "w_levels: every level must fit int8");
    lv[i] = static_cast<int8_t>(w_levels[i]);
  }
  const uint8_t* src = w.data();
  require(max_code(src, n * k) <= 3, "w: codes must be in [0, 3]");
  CArray<uint8_t> out(static_cast<py::ssize_t>(lut_packed_bytes(n, k)));
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    lut_pack_weights(src, n, k, lv, dst);
  }
  return out;
}

CArray<int32_t> lut_gemm(const CArray<uint8_t>& a, const CArray<uint8_t>& packed,
                         const Levels& a_levels, const Levels& w_levels, int threads,
                         const std::string& kernel) {
  require_ndim(a, 2, "a");
  const PackedHeader h = checked_header(packed, PackedOp::lut_gemm);
  for (int i = 0; i < 4; ++i)
    require(h.w_levels[i] == w_levels[i],
            "w: weight was packed with w_levels (" + std::to_string(h.w_levels[0]) + ", " +
                std::to_string(h.w_levels[1]) + ", " + std::to_string(h.w_levels[2]) + ", " +
                std::to_string(h.w_levels[3]) + "), not the w_levels passed");
  const LutCodebook cb = checked_codebook(a_levels, w_levels);
  const LutKernel want = parse_kernel(kernel);
  LutKernel chosen;
  require(lut_select(active_isa(), want, cb, &chosen).fn != nullptr,
          "kernel: '" + kernel + "' is not available on the " + isa_name(active_isa()) +
              " path for this codebook");
  const size_t m = a.shape(0), k = a.shape(1);
  require_k_matches(h, k);
  const uint8_t* ap = a.data();
  require(max_code(ap, m * k) <= 3, "a: codes must be in [0, 3]");
  const size_t n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    if (k == 0)
      std::fill(out, out + m * n, 0);
    else
      lut_gemm_run(ap, m, k, k, base + h.data_offset, n, cb, out, threads, active_isa(), want);
  }
  return c;
}

std::string lut_kernel_for(const Levels& a_levels, const Levels& w_levels,
                           const std::string& kernel) {
  const LutCodebook cb = checked_codebook(a_levels, w_levels);
  LutKernel chosen;
  if (lut_select(active_isa(), parse_kernel(kernel), cb, &chosen).fn == nullptr) return "";
  return lut_kernel_name(chosen);
}

}  // namespace

void bind_lut_gemm(py::module_& m) {
  m.def("lut_prepack", &lut_prepack, py::arg("w"), py::arg("w_levels"));
  m.def("lut_gemm", &lut_gemm, py::arg("a"), py::arg("packed"), py::arg("a_levels"),
        py::arg("w_levels"), py::arg("threads") = 1, py::arg("kernel") = "auto");
  m.def("lut_kernel_for", &lut_kernel_for, py::arg("a_levels"), py::arg("w_levels"),
        py::arg("kernel") = "auto",
        "The kernel lut_gemm runs for this codebook on the active path ('' if unavailable).");
}

}  // namespace pq
