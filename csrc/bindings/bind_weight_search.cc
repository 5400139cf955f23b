// Conversion-time weight quantizers (csrc/quantize/weight_search.h): the clipping searches of
// WeightOnlyConfig and LUT2Config, the per-row int8 of Int8Config and SparqConfig.
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bindings/array_utils.h"
#include "quantize/weight_search.h"

namespace pq {
namespace {

// [n, k] float32 weights (finite: checked by the caller, pyquant/nn/modules.py; a NaN picks
// some scale and codes, it cannot make the search read or write out of bounds).
void check_weights(const CArray<float>& w) { require_ndim(w, 2, "w"); }

// (bounded so that the group count cannot wrap)
void check_group_size(size_t group_size) {
  require(group_size > 0 && group_size <= (size_t{1} << 31),
          "group_size: expected 1 <= group_size <= 2^31");
}

// [candidates, n, groups] float32, every candidate positive and finite.
void check_scales(const CArray<float>& scales, size_t n, size_t groups) {
  require(scales.ndim() == 3 && scales.shape(0) >= 1 && static_cast<size_t>(scales.shape(1)) == n &&
              static_cast<size_t>(scales.shape(2)) == groups,
          "scales: expected float32 [candidates >= 1, " + std::to_string(n) + ", " +
              std::to_string(groups) + "]");
  const float* p = scales.data();
  require(std::all_of(p, p + scales.size(), [](float s) { return s > 0 && std::isfinite(s); }),
          "scales: expected positive finite candidate scales");
}

py::tuple clip_search_uniform_py(const CArray<float>& w, const CArray<float>& scales,
                                 size_t group_size, int qmin, int qmax, int threads) {
  check_weights(w);
  const size_t n = w.shape(0), k = w.shape(1);
  check_group_size(group_size);
  require(qmin <= qmax && qmin >= -128 && qmax <= 127, "qmin, qmax: expected -128 <= qmin <= qmax <= 127");
  const size_t groups = k == 0 ? 0 : (k + group_size - 1) / group_size;
  check_scales(scales, n, groups);
  CArray<int8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
  CArray<float> best({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(groups)});
  {
    py::gil_scoped_release release;
    clip_search_uniform(w.data(), n, k, group_size, scales.data(), scales.shape(0), qmin, qmax,
                        codes.mutable_data(), best.mutable_data(), threads);
  }
  return py::make_tuple(codes, best);
}

py::tuple clip_search_levels_py(const CArray<float>& w, const CArray<float>& scales,
                                const std::vector<int>& levels, int threads) {
  check_weights(w);
  const size_t n = w.shape(0), k = w.shape(1);
  require(k > 0, "w: expected at least one column (a scale per row needs weights)");
  require(levels.size() == 4, "levels: expected 4 distinct integers");
  check_scales(scales, n, k == 0 ? 0 : 1);
  LevelQuantizer q;
  int order[4];
  std::iota(order, order + 4, 0);
  std::sort(order, order + 4, [&](int a, int b) { return levels[a] < levels[b]; });
  for (int i = 0; i < 4; ++i) {
    q.sorted[i] = static_cast<float>(levels[order[i]]);
    q.code[i] = static_cast<uint8_t>(order[i]);
  }
  for (int i = 0; i < 3; ++i) {
    require(q.sorted[i] < q.sorted[i + 1], "levels: expected 4 distinct integers");
    q.mids[i] = (q.sorted[i + 1] + q.sorted[i]) / 2.0f;
  }
  CArray<uint8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
  CArray<float> best(static_cast<py::ssize_t>(n));
  {
    py::gil_scoped_release release;
    clip_search_levels(w.data(), n, k, scales.data(), scales.shape(0), q, codes.mutable_data(),
                       best.mutable_data(), threads);
  }
  return py::make_tuple(codes, best);
}

py::tuple quantize_rows_int8_py(const CArray<float>& w, int threads) {
  check_weights(w);
  const size_t n = w.shape(0), k = w.shape(1);
  require(k > 0, "w: expected at least one column (a scale per row needs weights)");
  CArray<int8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
  CArray<float> scales(static_cast<py::ssize_t>(n));
  {
    py::gil_scoped_release release;
    quantize_rows_int8(w.data(), n, k, codes.mutable_data(), scales.mutable_data(), threads);
  }
  return py::make_tuple(codes, scales);
}

CArray<float> group_absmax_py(const CArray<float>& w, size_t group_size, int threads) {
  check_weights(w);
  check_group_size(group_size);
  const size_t n = w.shape(0), k = w.shape(1), groups = (k + group_size - 1) / group_size;
  CArray<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(groups)});
  py::gil_scoped_release release;
  group_absmax(w.data(), n, k, group_size, out.mutable_data(), threads);
  return out;
}

CArray<int32_t> group_sums_py(const CArray<int8_t>& codes, size_t group_size, int threads) {
  require_ndim(codes, 2, "codes");
  check_group_size(group_size);
  const size_t n = codes.shape(0), k = codes.shape(1), groups = (k + group_size - 1) / group_size;
  CArray<int32_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(groups)});
  py::gil_scoped_release release;
  group_sums(codes.data(), n, k, group_size, out.mutable_data(), threads);
  return out;
}

CArray<int32_t> level_counts_py(const CArray<uint8_t>& codes, int threads) {
  require_ndim(codes, 2, "codes");
  const size_t n = codes.shape(0), k = codes.shape(1);
  CArray<int32_t> out({static_cast<py::ssize_t>(n), py::ssize_t{4}});
  py::gil_scoped_release release;
  level_counts(codes.data(), n, k, out.mutable_data(), threads);
  return out;
}

}  // namespace

void bind_weight_search(py::module_& m) {
  m.def("clip_search_uniform", &clip_search_uniform_py, py::arg("w"), py::arg("scales"),
        py::arg("group_size"), py::arg("qmin"), py::arg("qmax"), py::arg("threads") = 1,
        "WeightOnly's clipping search: (codes int8 [n, k], scales float32 [n, groups]).");
  m.def("clip_search_levels", &clip_search_levels_py, py::arg("w"), py::arg("scales"),
        py::arg("levels"), py::arg("threads") = 1,
        "LUT2's clipping search: (codes uint8 [n, k], scales float32 [n]).");
  m.def("group_absmax", &group_absmax_py, py::arg("w"), py::arg("group_size"),
        py::arg("threads") = 1, "max |w| per group: float32 [n, groups].");
  m.def("group_sums", &group_sums_py, py::arg("codes"), py::arg("group_size"),
        py::arg("threads") = 1, "Sum of int8 codes per group: int32 [n, groups].");
  m.def("level_counts", &level_counts_py, py::arg("codes"), py::arg("threads") = 1,
        "Codes 0, 1, 2, 3 per row of uint8 codes: int32 [n, 4].");
  m.def("quantize_rows_int8", &quantize_rows_int8_py, py::arg("w"), py::arg("threads") = 1,
        "Symmetric per-row int8 weights: (codes int8 [n, k], scales float32 [n]).");
}

}  // namespace pq
