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

enum class PackedOp : uint16_t { int8_gemm = 1, lut_gemm = 2, lowbit_gemm = 3, sparq_gemm = 4,
                                  sparq24_gemm = 5 };

inline const char* packed_op_name(PackedOp op) {
  switch (op) {
    case PackedOp::int8_gemm: return "int8_gemm";
    case PackedOp::lut_gemm: return "lut_gemm";
    case PackedOp::lowbit_gemm: return "lowbit_gemm";
    case PackedOp::sparq_gemm: return "sparq_gemm";
    case PackedOp::sparq24_gemm: return "sparq24_gemm";
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

// Shape limits of every packed weight (one definition: prepack, the validator and the Python
// wrappers all read these). N fits the uint32 field with room for padding; K < 2^24 keeps an
// int8 column sum (|sum| <= 128 * K) inside int32, and every padded size far below 2^63.
constexpr size_t kPackedMaxN = (size_t{1} << 31) - 1;
constexpr size_t kPackedMaxK = (size_t{1} << 24) - 1;

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

// First stage of validation: the fields that say what the buffer is. Returns "" or the reason.
inline std::string read_packed_header(const uint8_t* buf, size_t size, PackedHeader* out) {
  if (size < sizeof(PackedHeader))
    return "buffer size " + std::to_string(size) + " bytes is smaller than the " +
           std::to_string(sizeof(PackedHeader)) + "-byte packed-weight header";
  std::memcpy(out, buf, sizeof(PackedHeader));
  if (std::memcmp(out->magic, kPackedMagic, 4) != 0) return "bad magic (not a pyquant packed weight)";
  if (out->version != kPackedVersion)
    return "format version " + std::to_string(out->version) + " is not supported (expected " +
           std::to_string(kPackedVersion) + ")";
  if (out->n > kPackedMaxN)
    return "header field n is " + std::to_string(out->n) + ", expected at most " +
           std::to_string(kPackedMaxN);
  if (out->k > kPackedMaxK)
    return "header field k is " + std::to_string(out->k) + ", expected at most " +
           std::to_string(kPackedMaxK);
  return "";
}

// Second stage: `got` (from a buffer of `size` bytes) against `want`, the header the op's packer
// writes for the same op, shape and parameters. Every field must match and the buffer must be
// exactly total_bytes long, so the offsets and sizes a kernel derives stay inside the buffer.
// Returns "" or the first mismatch, naming the field and the expected value.
inline std::string compare_packed_header(const PackedHeader& got, const PackedHeader& want,
                                         size_t size) {
  struct Field {
    const char* name;
    uint64_t got, want;
  };
  const Field fields[] = {
      {"n_padded", got.n_padded, want.n_padded},       {"k_padded", got.k_padded, want.k_padded},
      {"bits", got.bits, want.bits},                   {"nr (tile width)", got.nr, want.nr},
      {"kr (tile depth)", got.kr, want.kr},            {"flags", got.flags, want.flags},
      {"reserved", got.reserved, want.reserved},       {"data_offset", got.data_offset, want.data_offset},
      {"aux_offset", got.aux_offset, want.aux_offset}, {"total_bytes", got.total_bytes, want.total_bytes},
  };
  for (const Field& f : fields)  // (strings only on a mismatch: this runs on every GEMM call)
    if (f.got != f.want)
      return std::string("header field ") + f.name + " is " + std::to_string(f.got) +
             ", expected " + std::to_string(f.want);
  for (int i = 0; i < 4; ++i)
    if (got.w_levels[i] != want.w_levels[i])
      return "header field w_levels[" + std::to_string(i) + "] (codebook) is " +
             std::to_string(got.w_levels[i]) + ", expected " + std::to_string(want.w_levels[i]);
  if (size != want.total_bytes)
    return "buffer size " + std::to_string(size) + " bytes does not match its header (expected " +
           std::to_string(want.total_bytes) + " bytes: truncated or extended)";
  return "";
}

}  // namespace pq
