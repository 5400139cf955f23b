#include <algorithm>
#include <type_traits>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "int8_gemm/int8_gemm.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

SparqConfig checked_config(int bits, int options, bool round, bool pairs) {
  require(bits == 2 || bits == 3 || bits == 4,
          "bits: expected 4, 3 or 2, got " + std::to_string(bits));
  SparqConfig cfg{bits, options, round, pairs};
  require(sparq_config_valid(cfg), "options: " + std::to_string(options) +
                                       " placements are not available for bits=" +
                                       std::to_string(bits));
  return cfg;
}

// The validated header of a weight packed for sparq_gemm with exactly `cfg`.
PackedHeader checked_sparq_weight(const CArray<uint8_t>& packed, const SparqConfig& cfg) {
  const PackedHeader h = checked_header(packed, PackedOp::sparq_gemm);
  require(h.flags == sparq_flags(cfg),
          "w: packed for another SPARQ configuration (bits/options/rounding/pairs); prepack it "
          "with the arguments of this call");
  return h;
}

// ---- 2:4-sparse weights ----
CArray<uint8_t> sparq24_prepack(const CArray<int8_t>& w, int bits, int options, bool round,
                                bool pairs) {
  require_ndim(w, 2, "w");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const size_t n = w.shape(0), k = w.shape(1);
  require_packable_shape(n, k);
  const int8_t* src = w.data();
  std::string err;
  {
    py::gil_scoped_release release;
    err = sparq24_check_sparsity(src, n, k);
  }
  require(err.empty(), "w: not 2:4 sparse: " + err);
  CArray<uint8_t> out(static_cast<py::ssize_t>(sparq24_packed_header(n, k, 0).total_bytes));
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    sparq24_pack_weights(src, n, k, sparq_flags(cfg), dst);
  }
  return out;
}

CArray<float> prune_24_f32_py(const CArray<float>& w, int threads) {
  require_ndim(w, 2, "w");
  CArray<float> out({w.shape(0), w.shape(1)});
  {
    py::gil_scoped_release release;
    prune_24_f32(w.data(), w.shape(0), w.shape(1), out.mutable_data(), threads);
  }
  return out;
}

// int16 sign-magnitude activations must lie in [-255, 255] (ValueError naming the first not).
void check_sign_magnitude(const int16_t* a, size_t m, size_t k) {
  const auto bad = std::find_if(a, a + m * k, [](int16_t v) { return v < -255 || v > 255; });
  require(bad == a + m * k,
          "a: int16 activations are sign-magnitude 8-bit values in [-255, 255]; got " +
              std::to_string(bad == a + m * k ? 0 : *bad) + " at row " +
              std::to_string((bad - a) / (k ? k : 1)) + ", column " +
              std::to_string((bad - a) % (k ? k : 1)));
}

// The raw 2:4 op on uint8 rows, or on int16 sign-magnitude rows in [-255, 255].
template <class T>
CArray<int32_t> sparq24_gemm_any(const CArray<T>& a, const CArray<uint8_t>& packed, int bits,
                                 int options, bool round, bool pairs, int threads) {
  require_ndim(a, 2, "a");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const PackedHeader h = checked_header(packed, PackedOp::sparq24_gemm);
  require(h.flags == sparq_flags(cfg),
          "w: packed for another SPARQ configuration (bits/options/rounding/pairs); prepack it "
          "with the arguments of this call");
  const size_t m = a.shape(0), k = a.shape(1);
  require_k_matches(h, k);
  const T* a_ptr = a.data();
  if constexpr (std::is_same_v<T, int16_t>) check_sign_magnitude(a_ptr, m, k);
  const size_t n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<T, int16_t>)
      sparq24_gemm_signed_run(a_ptr, m, k, cfg, base + h.data_offset, n, out, threads, active_isa());
    else
      sparq24_gemm_run(a_ptr, m, k, cfg, base + h.data_offset, n, out, threads, active_isa());
  }
  return c;
}

// a: [rows, k] (the Python side flattens leading dims); pairs run along k within each row.
CArray<uint8_t> sparq_quantize(const CArray<uint8_t>& a, int bits, int options, bool round,
                               bool pairs, int threads) {
  require_ndim(a, 2, "a");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const size_t rows = a.shape(0), k = a.shape(1);
  CArray<uint8_t> out({rows, k});
  const uint8_t* src = a.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    sparq_quantize_run(src, rows, k, cfg, dst, threads, active_isa());
  }
  return out;
}

CArray<uint8_t> sparq_prepack(const CArray<int8_t>& w, int bits, int options, bool round,
                              bool pairs) {
  require_ndim(w, 2, "w");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const size_t n = w.shape(0), k = w.shape(1);
  require_packable_shape(n, k);
  CArray<uint8_t> out(static_cast<py::ssize_t>(int8_packed_bytes(n, k)));
  const int8_t* src = w.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    int8_pack_weights(src, n, k, PackedOp::sparq_gemm, sparq_flags(cfg), dst);
  }
  return out;
}

// The raw op on uint8 rows, or on int16 sign-magnitude rows in [-255, 255] (one pass: the
// fused forward's signed route, sparq_gemm_signed_run).
template <class T>
CArray<int32_t> sparq_gemm_any(const CArray<T>& a, const CArray<uint8_t>& packed, int bits,
                               int options, bool round, bool pairs, int threads) {
  require_ndim(a, 2, "a");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const PackedHeader h = checked_sparq_weight(packed, cfg);
  const size_t m = a.shape(0), k = a.shape(1);
  require_k_matches(h, k);
  const T* a_ptr = a.data();
  if constexpr (std::is_same_v<T, int16_t>) check_sign_magnitude(a_ptr, m, k);
  const size_t n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* base = packed.data();
  const auto* panels = reinterpret_cast<const int8_t*>(base + h.data_offset);
  const auto* col_sums = reinterpret_cast<const int32_t*>(base + h.aux_offset);
  {
    py::gil_scoped_release release;
    if (k == 0)
      std::fill(out, out + m * n, 0);
    else if constexpr (std::is_same_v<T, int16_t>)
      sparq_gemm_signed_run(a_ptr, m, k, cfg, panels, col_sums, n, out, threads, active_isa());
    else
      sparq_gemm_run(a_ptr, m, k, cfg, panels, col_sums, n, out, threads, active_isa());
  }
  return c;
}

// payload: [M, encoded row bytes] of activations with K = k columns (the compact format)
CArray<int32_t> sparq_gemm_encoded(const CArray<uint8_t>& payload, size_t k,
                                   const CArray<uint8_t>& packed, int bits, int options,
                                   bool round, bool pairs, int threads) {
  require_ndim(payload, 2, "payload");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const PackedHeader h = checked_sparq_weight(packed, cfg);
  require(k == h.k, "payload: encodes K = " + std::to_string(k) + " columns but w has K = " +
                        std::to_string(h.k));
  require(static_cast<size_t>(payload.shape(1)) == sparq_encoded_row_bytes(cfg, k),
          "payload: expected " + std::to_string(sparq_encoded_row_bytes(cfg, k)) +
              " bytes per row for K = " + std::to_string(k) + ", got " +
              std::to_string(payload.shape(1)));
  const size_t m = payload.shape(0), n = h.n;
  CArray<int32_t> c({m, n});
  int32_t* out = c.mutable_data();
  const uint8_t* src = payload.data();
  const uint8_t* base = packed.data();
  {
    py::gil_scoped_release release;
    if (k == 0)
      std::fill(out, out + m * n, 0);
    else
      sparq_gemm_encoded_run(src, m, k, cfg, reinterpret_cast<const int8_t*>(base + h.data_offset),
                             reinterpret_cast<const int32_t*>(base + h.aux_offset), n, out,
                             threads, active_isa());
  }
  return c;
}

// a: [rows, k] -> payload [rows, encoded row bytes]
CArray<uint8_t> sparq_encode(const CArray<uint8_t>& a, int bits, int options, bool round,
                             bool pairs, int threads) {
  require_ndim(a, 2, "a");
  const SparqConfig cfg = checked_config(bits, options, round, pairs);
  const size_t rows = a.shape(0), k = a.shape(1);
  CArray<uint8_t> out({rows, sparq_encoded_row_bytes(cfg, k)});
  const uint8_t* src = a.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    sparq_encode_run(src, rows, k, cfg, dst, threads, active_isa());
  }
  return out;
}

CArray<uint8_t> sparq_decode(const CArray<uint8_t>& payload, size_t k, int bits, int options,
                             bool pairs, int threads) {
  require_ndim(payload, 2, "payload");
  const SparqConfig cfg = checked_config(bits, options, true, pairs);
  const size_t rows = payload.shape(0);
  // (a K the packed format cannot hold made sparq_encoded_row_bytes wrap: 2^61 x 8 bits)
  require(k <= kPackedMaxK, "k: expected at most " + std::to_string(kPackedMaxK) +
                                " (the packed K limit), got " + std::to_string(k));
  require(static_cast<size_t>(payload.shape(1)) == sparq_encoded_row_bytes(cfg, k),
          "payload: expected " + std::to_string(sparq_encoded_row_bytes(cfg, k)) +
              " bytes per row for K = " + std::to_string(k) + ", got " +
              std::to_string(payload.shape(1)));
  CArray<uint8_t> out({rows, k});
  const uint8_t* src = payload.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    sparq_decode_run(src, rows, k, cfg, dst, threads);
  }
  return out;
}

int code_bits(int bits, int options, bool pairs) {
  return sparq_code_bits(checked_config(bits, options, true, pairs));
}

}  // namespace

void bind_sparq(py::module_& m) {
  m.def("sparq_quantize", &sparq_quantize, py::arg("a"), py::arg("bits"), py::arg("options"),
        py::arg("round"), py::arg("pairs"), py::arg("threads") = 1);
  m.def("sparq_prepack", &sparq_prepack, py::arg("w"), py::arg("bits"), py::arg("options"),
        py::arg("round"), py::arg("pairs"));
  m.def("sparq_gemm", &sparq_gemm_any<uint8_t>, py::arg("a"), py::arg("packed"),
        py::arg("bits"), py::arg("options"), py::arg("round"), py::arg("pairs"),
        py::arg("threads") = 1);
  m.def("sparq_gemm_signed", &sparq_gemm_any<int16_t>, py::arg("a"), py::arg("packed"),
        py::arg("bits"), py::arg("options"), py::arg("round"), py::arg("pairs"),
        py::arg("threads") = 1);
  m.def("sparq_gemm_encoded", &sparq_gemm_encoded, py::arg("payload"), py::arg("k"),
        py::arg("packed"), py::arg("bits"), py::arg("options"), py::arg("round"),
        py::arg("pairs"), py::arg("threads") = 1);
  m.def("sparq_encode", &sparq_encode, py::arg("a"), py::arg("bits"), py::arg("options"),
        py::arg("round"), py::arg("pairs"), py::arg("threads") = 1);
  m.def("sparq_decode", &sparq_decode, py::arg("payload"), py::arg("k"), py::arg("bits"),
        py::arg("options"), py::arg("pairs"), py::arg("threads") = 1);
  m.def("sparq24_prepack", &sparq24_prepack, py::arg("w"), py::arg("bits"), py::arg("options"),
        py::arg("round"), py::arg("pairs"));
  m.def("prune_24_f32", &prune_24_f32_py, py::arg("w"), py::arg("threads") = 1,
        "Magnitude 2:4 pruning of float32 rows [rows, k] (pyquant.prune_24's fast path).");
  m.def("sparq24_gemm", &sparq24_gemm_any<uint8_t>, py::arg("a"), py::arg("packed"),
        py::arg("bits"), py::arg("options"), py::arg("round"), py::arg("pairs"),
        py::arg("threads") = 1);
  m.def("sparq24_gemm_signed", &sparq24_gemm_any<int16_t>, py::arg("a"), py::arg("packed"),
        py::arg("bits"), py::arg("options"), py::arg("round"), py::arg("pairs"),
        py::arg("threads") = 1);
  m.def("sparq_code_bits", &code_bits, py::arg("bits"), py::arg("options"), py::arg("pairs"));
}

}  // namespace pq
