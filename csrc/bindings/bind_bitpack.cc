#include "bindings/array_utils.h"
#include "bitpack/bitpack.h"
#include "core/thread_pool.h"

namespace pq {
namespace {

void check_bits(int bits) {
  require(bits == 1 || bits == 2 || bits == 4, "bits: expected 1, 2 or 4, got " + std::to_string(bits));
}

// codes [rows, n] uint8 -> packed [rows, ceil(n*bits/8)]
CArray<uint8_t> pack(const CArray<uint8_t>& codes, int bits, int threads) {
  check_bits(bits);
  require_ndim(codes, 2, "codes");
  const size_t rows = codes.shape(0), n = codes.shape(1);
  const size_t row_bytes = packed_row_bytes(n, bits);
  CArray<uint8_t> out({rows, row_bytes});
  const uint8_t* src = codes.data();
  uint8_t* dst = out.mutable_data();
  const PackRowsFn fn = bitpack_kernels(active_isa()).pack;
  {
    py::gil_scoped_release release;
    const size_t chunks = chunk_count(rows, threads, (1u << 16) / (n + 1) + 1);
    parallel_for(chunks, threads, [&](size_t c) {
      const size_t r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks;
      fn(src + r0 * n, dst + r0 * row_bytes, r1 - r0, n, bits);
    });
  }
  return out;
}

CArray<uint8_t> unpack(const CArray<uint8_t>& packed, int bits, size_t n, bool sign_extend,
                       int threads) {
  check_bits(bits);
  require_ndim(packed, 2, "packed");
  const size_t rows = packed.shape(0);
  const size_t row_bytes = packed_row_bytes(n, bits);
  require(static_cast<size_t>(packed.shape(1)) == row_bytes,
          "n: " + std::to_string(n) + " codes of " + std::to_string(bits) + " bits need " +
              std::to_string(row_bytes) + " bytes per row, packed has " +
              std::to_string(packed.shape(1)));
  CArray<uint8_t> out({rows, n});
  const uint8_t* src = packed.data();
  uint8_t* dst = out.mutable_data();
  const UnpackRowsFn fn = bitpack_kernels(active_isa()).unpack;
  {
    py::gil_scoped_release release;
    const size_t chunks = chunk_count(rows, threads, (1u << 16) / (n + 1) + 1);
    parallel_for(chunks, threads, [&](size_t c) {
      const size_t r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks;
      fn(src + r0 * row_bytes, dst + r0 * n, r1 - r0, n, bits, sign_extend);
    });
  }
  return out;
}

}  // namespace

void bind_bitpack(py::module_& m) {
  m.def("pack", &pack, py::arg("codes"), py::arg("bits"), py::arg("threads") = 1,
        "Pack uint8 codes [rows, n] into the canonical LSB-first layout.");
  m.def("unpack", &unpack, py::arg("packed"), py::arg("bits"), py::arg("n"),
        py::arg("sign_extend") = false, py::arg("threads") = 1,
        "Unpack canonical packed rows into one code per byte.");
}

}  // namespace pq
