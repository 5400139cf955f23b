// Validation of packed-weight buffers at the binding layer.
#pragma once
#include <string>

#include "bindings/array_utils.h"
#include "core/packed_format.h"

namespace pq {

// Parses the header of `buf` and checks that it was packed for `op`; throws ValueError otherwise.
inline PackedHeader checked_header(const CArray<uint8_t>& buf, PackedOp op) {
  require(buf.ndim() == 1, "w: a packed weight buffer must be 1-D uint8");
  PackedHeader h;
  const std::string err = read_packed_header(buf.data(), buf.size(), &h);
  require(err.empty(), "w: invalid packed weight: " + err);
  require(h.op == static_cast<uint16_t>(op),
          std::string("w: weight was packed for '") + packed_op_name(static_cast<PackedOp>(h.op)) +
              "', not '" + packed_op_name(op) + "'; prepack it with op='" + packed_op_name(op) + "'");
  return h;
}

// The activations' K must equal the packed weight's K.
inline void require_k_matches(const PackedHeader& h, size_t k) {
  require(k == h.k, "a: expected K = " + std::to_string(h.k) + " columns to match w, got " +
                        std::to_string(k));
}

}  // namespace pq
