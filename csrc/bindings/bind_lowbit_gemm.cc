#include <algorithm>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/macros.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {
namespace {

void check_bits(int bits) {
  require(bits == 2 || bits == 4, "bits: expected 2 or 4, got " + std::to_string(bits));
}

CArray<uint8_t> lowbit_prepack(const CArray<int8_t>& w, int bits) {
  check_bits(bits);
  require_ndim(w, 2, "w");
  const size_t n = w.shape(0), k = w.shape(1);
  require_packable_shape(n, k);
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  const int8_t* src = w.data();
  int8_t wmin = 0, wmax = 0;  // (a plain loop: std::minmax_element is not vectorized)
  for (size_t i = 0; i < n * k; ++i) {
    wmin = std::min(wmin, src[i]);
    wmax = std::max(wmax, src[i]);
  }
  if (n * k > 0) {
    const int bad = wmin < lo ? wmin : wmax;
    require(wmin >= lo && wmax <= hi,
            "w: " + std::to_string(bits) + "-bit codes must be in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "], found " + std::to_string(bad));
  }
  CArray<uint8_t> out(static_cast<py::ssize_t>(lowbit_packed_bytes(n, k, bits)));
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    lowbit_pack_weights(src, n, k, bits, dst);
  }
  return out;
}

PackedHeader checked_lowbit(const CArray<uint8_t>& a, const CArray<uint8_t>& packed, int bits) {
  check_bits(bits);
  require_ndim(a, 2, "a");
  const PackedHeader h = checked_header(packed, PackedOp::lowbit_gemm);
  require(h.bits == bits, "w: packed with bits=" + std::to_string(h.bits) +
                              " but called with bits=" + std::to_string(bits));
  require_k_matches(h, a.shape(1));
  return h;
}

// a: [M, K] bytes (uint8, or int8 viewed as uint8 when a_signed)
CArray<int32_t> lowbit_gemm(const CArray<uint8_t>& a, bool a_signed, const CArray<uint8_t>& packed,
                            int bits, int threads) {
  const PackedHeader h = checked_lowbit(a, packed, bits);
  const size_t m = a.shape(0), k = h.k, n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* a_ptr = a.data();
  const uint8_t* panels = packed.data() + h.data_offset;
  {
    py::gil_scoped_release release;
    if (k == 0)
      std::fill(out, out + m * n, 0);
    else
      lowbit_gemm_run(a_ptr, m, k, a_signed, panels, n, bits, out, threads, active_isa());
  }
  return c;
}

CArray<float> lowbit_gemm_grouped(const CArray<uint8_t>& a, bool a_signed,
                                  const CArray<uint8_t>& packed, int bits, size_t group_size,
                                  const CArray<float>& scales, int threads) {
  const PackedHeader h = checked_lowbit(a, packed, bits);
  require_group_size(group_size);
  const size_t m = a.shape(0), k = h.k, n = h.n;
  const size_t n_groups = div_round_up(k, group_size);
  require(scales.ndim() == 2 && static_cast<size_t>(scales.shape(0)) == n &&
              static_cast<size_t>(scales.shape(1)) == n_groups,
          "scales: expected shape [" + std::to_string(n) + ", " + std::to_string(n_groups) + "]");
  CArray<float> c({m, n});
  float* out = c.mutable_data();
  const uint8_t* a_ptr = a.data();
  const float* s_ptr = scales.data();
  const uint8_t* panels = packed.data() + h.data_offset;
  {
    py::gil_scoped_release release;
    if (k == 0)
      std::fill(out, out + m * n, 0.0f);
    else
      lowbit_gemm_grouped_run(a_ptr, m, k, a_signed, panels, n, bits, group_size, s_ptr, out,
                              threads, active_isa());
  }
  return c;
}

}  // namespace

void bind_lowbit_gemm(py::module_& m) {
  m.def("lowbit_prepack", &lowbit_prepack, py::arg("w"), py::arg("bits"));
  m.def("lowbit_gemm", &lowbit_gemm, py::arg("a"), py::arg("a_signed"), py::arg("packed"),
        py::arg("bits"), py::arg("threads") = 1);
  m.def("lowbit_gemm_grouped", &lowbit_gemm_grouped, py::arg("a"), py::arg("a_signed"),
        py::arg("packed"), py::arg("bits"), py::arg("group_size"), py::arg("scales"),
        py::arg("threads") = 1);
}

}  // namespace pq
