// The pyquant._C extension module: one bind_* function per op family, each in its own file.
#include <pybind11/stl.h>

#include "bindings/array_utils.h"
#include "core/clock.h"
#include "core/isa.h"
#include "core/thread_pool.h"

namespace pq {
void bind_bitpack(py::module_& m);
void bind_int8_gemm(py::module_& m);
void bind_lut_gemm(py::module_& m);
void bind_lowbit_gemm(py::module_& m);
void bind_sparq(py::module_& m);
void bind_packed(py::module_& m);
void bind_forward(py::module_& m);
void bind_gru(py::module_& m);  // QuantGRU's native forward
void bind_weight_search(py::module_& m);  // conversion-time clipping searches
void bind_gptq(py::module_& m);  // GPTQ's and SparseGPT's column sweeps
void bind_kernels(py::module_& m);  // cpu_features, kernel_table, select/set_kernel
}  // namespace pq

namespace {

std::vector<std::string> available_isa_names() {
  std::vector<std::string> out;
  for (pq::Isa isa : pq::available_isas()) out.push_back(pq::isa_name(isa));
  return out;
}

void set_isa(const std::string& name) {
  pq::Isa isa;
  pq::require(pq::parse_isa(name, &isa),
              "isa: unknown path '" + name + "' (expected scalar, avx2, avx512 or neon)");
  pq::require(pq::isa_available(isa),
              "isa: this CPU (or this build) cannot run the '" + name + "' path");
  pq::set_active_isa(isa);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyquant native kernels";
  m.def("available_isas", &available_isa_names);
  m.def("active_isa", [] { return std::string(pq::isa_name(pq::active_isa())); });
  m.def("set_isa", &set_isa, pybind11::arg("name"),
        "Switch the active path for the whole process (internal: tests and benchmarks).");
  m.def("measure_clock_ghz", &pq::measure_clock_ghz,
        "Core clock in GHz from a dependent-add chain (0 where it cannot be measured).");
  m.def("parallel_runtime", &pq::parallel_runtime,
        "Path of the host OpenMP runtime whose threads run multi-threaded calls (PyTorch's "
        "libgomp once torch is loaded), or '' for pyquant's own thread pool.");
  pq::bind_bitpack(m);
  pq::bind_int8_gemm(m);
  pq::bind_lut_gemm(m);
  pq::bind_lowbit_gemm(m);
  pq::bind_sparq(m);
  pq::bind_packed(m);
  pq::bind_forward(m);
  pq::bind_gru(m);
  pq::bind_weight_search(m);
  pq::bind_gptq(m);
  pq::bind_kernels(m);
}
