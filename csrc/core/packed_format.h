// The self-describing header at the start of every packed weight buffer (PackedWeight.buffer).
// It is validated on every use, so a weight packed for another op, another bit width or another
// codebook, or a damaged buffer, is a ValueError and never reaches a kernel.
//
// Layout: [PackedHeader: 64 bytes][data: data_bytes][aux: aux_bytes], offsets from the start.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace pq {

enum class PackedOp : uint16_t { int8_gemm = 1, lut_gemm = 2, lowbit_gemm = 3, sparq_gemm = 4 };

inline const char* packed_op_name(PackedOp op) {
  switch (op) {
    case PackedOp::int8_gemm: return "int8_gemm";
    case PackedOp::lut_gemm: return "lut_gemm";
    case PackedOp::lowbit_gemm: return "lowbit_gemm";
    case PackedOp::sparq_gemm: return "sparq_gemm";
  }
  return "unknown";
}

constexpr char kPackedMagic[4] = {'P', 'Q', 'W', 'T'};
constexpr uint16_t kPackedVersion = 1;

struct PackedHeader {
  char magic[4];
  uint16_t version;
  uint16_t op;            // PackedOp
  uint32_t n, k;          // logical weight shape [N, K]
  uint32_t n_padded;      // N rounded up to the panel width
  uint32_t k_padded;      // K rounded up to the reduction block
  uint16_t bits;          // bits per weight in memory (8, 4, 2)
  uint16_t nr;            // panel width (output columns per panel)
  uint16_t kr;            // reduction elements interleaved per column
  uint16_t flags;         // op-specific
  int8_t w_levels[4];     // lut_gemm: the weight codebook
  uint32_t reserved;
  uint64_t data_offset;   // panels
  uint64_t aux_offset;    // per-column data (e.g. int32 column sums); 0 if none
  uint64_t total_bytes;   // whole buffer
};
static_assert(sizeof(PackedHeader) == 64, "PackedHeader must stay 64 bytes");

constexpr size_t kPackedAlign = 64;  // data and aux start on 64-byte offsets


// A header with the fields every packer sets; the caller fills flags, w_levels, aux_offset and
// total_bytes. Data starts right after the header block.
inline PackedHeader make_packed_header(PackedOp op, size_t n, size_t k, size_t n_padded,
                                       size_t k_padded, uint16_t bits, uint16_t nr, uint16_t kr) {
  PackedHeader h{};
  std::memcpy(h.magic, kPackedMagic, 4);
  h.version = kPackedVersion;
  h.op = static_cast<uint16_t>(op);
  h.n = static_cast<uint32_t>(n);
  h.k = static_cast<uint32_t>(k);
  h.n_padded = static_cast<uint32_t>(n_padded);
  h.k_padded = static_cast<uint32_t>(k_padded);
  h.bits = bits;
  h.nr = nr;
  h.kr = kr;
  h.data_offset = kPackedAlign;
  return h;
}

// Reads and checks a header; returns an empty string if valid, else the reason.
inline std::string read_packed_header(const uint8_t* buf, size_t size, PackedHeader* out) {
  if (size < sizeof(PackedHeader)) return "buffer is smaller than a packed-weight header";
  std::memcpy(out, buf, sizeof(PackedHeader));
  if (std::memcmp(out->magic, kPackedMagic, 4) != 0) return "bad magic (not a pyquant packed weight)";
  if (out->version != kPackedVersion)
    return "format version " + std::to_string(out->version) + " is not supported (expected " +
           std::to_string(kPackedVersion) + ")";
  if (out->total_bytes != size) return "buffer size does not match its header";
  if (out->data_offset < sizeof(PackedHeader) || out->data_offset > size) return "bad data offset";
  if (out->aux_offset > size) return "bad aux offset";
  return "";
}

}  // namespace pq
