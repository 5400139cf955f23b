// Validation of packed-weight buffers at the binding layer: the one place every op's binding (and
// _C.validate_packed) checks a buffer before a kernel sees it. Buffers may come from files other
// people wrote, so nothing in the header is trusted: the header must be exactly the one the op's
// packer writes for the shape and parameters it claims, and the buffer exactly as long as that
// header says. Then every offset and size a kernel derives from (n, k) stays inside the buffer.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "bindings/array_utils.h"
#include "core/packed_format.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "lut_gemm/lut_gemm.h"
#include "sparq/sparq.h"

namespace pq {

inline bool packed_op_known(uint16_t op) {
  return op >= static_cast<uint16_t>(PackedOp::int8_gemm) &&
         op <= static_cast<uint16_t>(PackedOp::sparq24_gemm);
}

// The SPARQ config whose sparq_flags() equal `flags`; false if none does. The table of valid
// configs is built once from sparq.h (so the flag encoding is defined there only).
inline bool sparq_config_from_flags(uint16_t flags, SparqConfig* out) {
  static const std::vector<std::pair<uint16_t, SparqConfig>> table = [] {
    std::vector<std::pair<uint16_t, SparqConfig>> t;
    for (int bits = 2; bits <= 4; ++bits)
      for (int options = 1; options <= 8; ++options)
        for (int r = 0; r < 2; ++r)
          for (int p = 0; p < 2; ++p) {
            const SparqConfig cfg{bits, options, r == 1, p == 1};
            if (sparq_config_valid(cfg)) t.emplace_back(sparq_flags(cfg), cfg);
          }
    return t;
  }();
  for (const auto& entry : table)
    if (entry.first == flags) {
      *out = entry.second;
      return true;
    }
  return false;
}

// The header the packer of `h.op` writes for the shape and parameters `h` claims (n, k; bits for
// lowbit_gemm, the codebook for lut_gemm, the config flags for sparq_gemm). Returns "" or why no
// such header exists. Call only after read_packed_header succeeded (n, k within the limits).
inline std::string canonical_packed_header(const PackedHeader& h, PackedHeader* want) {
  switch (static_cast<PackedOp>(h.op)) {
    case PackedOp::int8_gemm:
      *want = int8_packed_header(h.n, h.k, PackedOp::int8_gemm, 0);
      return "";
    case PackedOp::sparq_gemm: {
      SparqConfig cfg;
      if (!sparq_config_from_flags(h.flags, &cfg))
        return "header field flags is " + std::to_string(h.flags) +
               ", expected the flags of a valid SPARQ configuration";
      *want = int8_packed_header(h.n, h.k, PackedOp::sparq_gemm, h.flags);
      return "";
    }
    case PackedOp::sparq24_gemm: {
      SparqConfig cfg;
      if (!sparq_config_from_flags(h.flags, &cfg))
        return "header field flags is " + std::to_string(h.flags) +
               ", expected the flags of a valid SPARQ configuration";
      *want = sparq24_packed_header(h.n, h.k, h.flags);
      return "";
    }
    case PackedOp::lut_gemm:
      *want = lut_packed_header(h.n, h.k, h.w_levels);  // any int8 codebook can be packed
      return "";
    case PackedOp::lowbit_gemm:
      if (h.bits != 2 && h.bits != 4)
        return "header field bits is " + std::to_string(h.bits) + ", expected 2 or 4";
      *want = lowbit_packed_header(h.n, h.k, h.bits);
      return "";
  }
  return "header field op is " + std::to_string(h.op) + ", expected 1 to 5";
}

// Validates `size` bytes at `data` as a weight packed for `op`; throws ValueError naming `name`.
// (Messages are built only on failure: this runs on every GEMM call.)
inline PackedHeader validate_packed_buffer(const uint8_t* data, size_t size, PackedOp op,
                                           const char* name) {
  PackedHeader h;
  std::string err = read_packed_header(data, size, &h);
  if (err.empty() && !packed_op_known(h.op))
    err = "header field op is " + std::to_string(h.op) + ", expected " +
          std::to_string(static_cast<int>(op)) + " (" + packed_op_name(op) + ")";
  if (!err.empty()) throw std::invalid_argument(std::string(name) + ": invalid packed weight: " + err);
  if (h.op != static_cast<uint16_t>(op))
    throw std::invalid_argument(std::string(name) + ": weight was packed for '" +
                                packed_op_name(static_cast<PackedOp>(h.op)) + "', not '" +
                                packed_op_name(op) + "'; prepack it with op='" +
                                packed_op_name(op) + "'");
  PackedHeader want;
  err = canonical_packed_header(h, &want);
  if (err.empty()) err = compare_packed_header(h, want, size);
  if (!err.empty())
    throw std::invalid_argument(std::string(name) + ": invalid packed weight (" +
                                packed_op_name(op) + "): " + err);
  return h;
}

// Load-time check of what a buffer holds beyond its header: regions derived from the weights
// must match them. Only the int8 layout (int8_gemm, sparq_gemm) has one, its column sums (aux);
// the other layouts hold codes only, and every code is a valid weight. One pass over the
// weights, so not per call: `h` is the header validate_packed_buffer returned for `data`.
inline void validate_packed_payload(const uint8_t* data, const PackedHeader& h,
                                    const char* name) {
  const PackedOp op = static_cast<PackedOp>(h.op);
  if (op != PackedOp::int8_gemm && op != PackedOp::sparq_gemm) return;
  const int32_t* sums = reinterpret_cast<const int32_t*>(data + h.aux_offset);
  size_t c = 0;
  int32_t want = 0;
  if (int8_col_sums_match(reinterpret_cast<const int8_t*>(data + h.data_offset), sums, h.n, h.k,
                          &c, &want))
    return;
  throw std::invalid_argument(std::string(name) + ": invalid packed weight (" +
                              packed_op_name(op) + "): column " + std::to_string(c) +
                              "'s sum in the aux area is " + std::to_string(sums[c]) +
                              ", expected " + std::to_string(want) +
                              " (the sum of its weights): the buffer was edited or damaged");
}

// The header of `buf` after full validation for `op`.
inline PackedHeader checked_header(const CArray<uint8_t>& buf, PackedOp op,
                                   const char* name = "w") {
  if (buf.ndim() != 1)
    throw std::invalid_argument(std::string(name) + ": a packed weight buffer must be 1-D uint8");
  return validate_packed_buffer(buf.data(), static_cast<size_t>(buf.size()), op, name);
}

// The shape limits every prepack enforces (the validator enforces the same ones on load).
inline void require_packable_shape(size_t n, size_t k, const char* name = "w") {
  require(n <= kPackedMaxN, std::string(name) + ": N = " + std::to_string(n) +
                                " exceeds the supported maximum " + std::to_string(kPackedMaxN));
  require(k <= kPackedMaxK, std::string(name) + ": K = " + std::to_string(k) +
                                " exceeds the supported maximum " + std::to_string(kPackedMaxK));
}

// A low-bit group size: a positive multiple of the kernels' k group, at most the packed K limit
// (one group covers any K; a larger size made div_round_up(K, group_size) wrap to 0 groups, and
// a side array of 0 groups passed the length checks).
inline void require_group_size(size_t group_size) {
  require(group_size > 0 && group_size % kLowbitGroupK == 0 && group_size <= kPackedMaxK,
          "group_size: expected a positive multiple of 4 up to " + std::to_string(kPackedMaxK) +
              " (the packed K limit), got " + std::to_string(group_size));
}

// The activations' K must equal the packed weight's K.
inline void require_k_matches(const PackedHeader& h, size_t k) {
  if (k != h.k)
    throw std::invalid_argument("a: expected K = " + std::to_string(h.k) +
                                " columns to match w, got " + std::to_string(k));
}

}  // namespace pq
