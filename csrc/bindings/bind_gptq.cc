// GPTQ's and SparseGPT's block sweeps (csrc/quantize/gptq_sweep.h), driven block by block by
// pyquant/nn/gptq.py.
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bindings/array_utils.h"
#include "quantize/gptq_sweep.h"

namespace pq {
namespace {

// w [n, b] float32 and h [b, b] float32 (the block of the upper Cholesky factor of H^-1).
void check_block(const CArray<float>& w, const CArray<float>& h) {
  require_ndim(w, 2, "w");
  const size_t b = w.shape(1);
  require(h.ndim() == 2 && static_cast<size_t>(h.shape(0)) == b && static_cast<size_t>(h.shape(1)) == b,
          "h: expected float32 [" + std::to_string(b) + ", " + std::to_string(b) +
              "] (the block's part of the Cholesky factor)");
}

py::tuple gptq_block_py(const CArray<float>& w, const CArray<float>& h, size_t group_size,
                        const std::vector<float>& ratios, int qmin, int qmax, int threads) {
  check_block(w, h);
  const size_t n = w.shape(0), b = w.shape(1);
  require(group_size > 0 && group_size <= (size_t{1} << 31),
          "group_size: expected 1 <= group_size <= 2^31");
  require(qmin <= qmax && qmin >= -128 && qmax <= 127,
          "qmin, qmax: expected -128 <= qmin <= qmax <= 127");
  require(!ratios.empty() && std::all_of(ratios.begin(), ratios.end(),
                                         [](float r) { return r > 0 && std::isfinite(r); }),
          "ratios: expected at least one positive finite clipping ratio");
  const size_t groups = (b + group_size - 1) / group_size;
  CArray<int8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(b)});
  CArray<float> scales({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(groups)});
  CArray<float> err({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(b)});
  {
    py::gil_scoped_release release;
    gptq_block(w.data(), n, b, h.data(), group_size, ratios.data(), ratios.size(), qmin, qmax,
               codes.mutable_data(), scales.mutable_data(), err.mutable_data(), threads);
  }
  return py::make_tuple(codes, scales, err);
}

py::tuple sparsegpt24_block_py(const CArray<float>& w, const CArray<float>& h, int threads) {
  check_block(w, h);
  const size_t n = w.shape(0), b = w.shape(1);
  CArray<float> values({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(b)});
  CArray<float> err({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(b)});
  {
    py::gil_scoped_release release;
    sparsegpt24_block(w.data(), n, b, h.data(), values.mutable_data(), err.mutable_data(),
                      threads);
  }
  return py::make_tuple(values, err);
}

}  // namespace

void bind_gptq(py::module_& m) {
  m.def("gptq_block", &gptq_block_py, py::arg("w"), py::arg("h"), py::arg("group_size"),
        py::arg("ratios"), py::arg("qmin"), py::arg("qmax"), py::arg("threads") = 1,
        "GPTQ's sweep over one block of columns: (codes int8 [n, b], scales float32 [n, groups], "
        "err float32 [n, b]).");
  m.def("sparsegpt24_block", &sparsegpt24_block_py, py::arg("w"), py::arg("h"),
        py::arg("threads") = 1,
        "SparseGPT's 2:4 sweep over one block of columns: (values float32 [n, b], err float32 "
        "[n, b]).");
}

}  // namespace pq
