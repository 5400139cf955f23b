// Helpers for the pybind11 layer: typed, C-contiguous numpy views and checks that raise
// ValueError (std::invalid_argument) with the argument's name. The Python wrappers already
// validate and convert; these checks keep the C++ entry points safe on their own.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace pq {

namespace py = pybind11;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

template <typename T>
void require_ndim(const CArray<T>& a, int ndim, const char* name) {
  require(a.ndim() == ndim, std::string(name) + ": expected a " + std::to_string(ndim) +
                                "-D array, got " + std::to_string(a.ndim()) + "-D");
}

// Splits [0, n) into chunks for parallel_for: about `per_thread` chunks per thread, each at least
// `min_chunk` long.
inline size_t chunk_count(size_t n, int threads, size_t min_chunk, size_t per_thread = 4) {
  if (n == 0) return 0;
  size_t chunks = static_cast<size_t>(threads > 1 ? threads : 1) * per_thread;
  const size_t max_chunks = (n + min_chunk - 1) / min_chunk;
  return chunks < max_chunks ? chunks : max_chunks;
}

}  // namespace pq
