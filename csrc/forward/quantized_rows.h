// The quantized activation rows the int8 and low-bit forwards hand their kernels in place
// (forward_int8.cc, forward_lowbit.cc, forward_grouped.cc): one quantizer, one row stride each.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/macros.h"
#include "forward/forward.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {

// Quantizes rows of x into q [m][ldq] (K zero-padded to ldq); sa / ro get the per-row scale and
// scale * zero point, or the static pair when act is static (forward_int8.cc).
void quantize_asym_u8_rows(const float* x, size_t m, size_t k, size_t ldq, ActRange act,
                           uint8_t* q, float* sa, float* ro, int threads, Isa isa);

// int8: K zero-padded to the kernel's k group (K = 27 or 30 otherwise took a copy of every row
// into a fresh buffer), rows 64-byte aligned (AMX tile rows that straddle cache lines run at
// half speed, and the GEMM would copy misaligned rows first).
inline size_t int8_rows_stride(size_t k) { return round_up(round_up(k, kInt8GroupK), 64); }

// low-bit: rows 64-byte aligned and not a multiple of 1 KiB apart (such rows share a few L1
// sets, and an AMX tile loads 16 at once).
inline size_t lowbit_rows_stride(size_t k) {
  const size_t row = round_up(round_up(k, kLowbitGroupK), 64);
  return row % 1024 == 0 ? row + 64 : row;
}

}  // namespace pq
