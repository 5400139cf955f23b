// SPARQ activation trimming (algorithms.md section 5) and its GEMM.
//
// bSPARQ keeps an n-bit window of each uint8 activation at one of the allowed shifts S (the
// smallest shift whose window covers the leading one, chosen before rounding); round mode rounds
// the dropped bits half-to-even on the window LSB and saturates to 2^n-1 at the same shift on a
// carry-out. vSPARQ pairs (k, k+1) for even k: if either member is zero the other gets a 2n-bit
// window with every placement allowed (an odd tail is paired with an implicit zero).
//
// Paths: scalar computes each value arithmetically (the reference); the SIMD paths use tables
// derived from it (a 256-entry LUT per case on AVX-512 VBMI; on AVX2/NEON a nibble table for the
// leading one and 16-entry tables for window/rounding constants indexed by (p, partner_zero)).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"

namespace pq {

struct SparqConfig {
  int bits = 4;         // n: 4, 3 or 2
  int options = 5;      // |S|: 5/3/2 for n=4, 6 for n=3, 7 for n=2
  bool round = true;    // false: truncate
  bool pairs = true;    // vSPARQ
};

// Bitmask of allowed shifts (bit t set: shift t allowed); 0 for an invalid config.
uint32_t sparq_shift_mask(int bits, int options);
// Shifts of the 2n-bit window a zero partner grants (every placement of 2n bits in 8).
inline uint32_t sparq_zero_partner_mask(int bits) { return (1u << (9 - 2 * bits)) - 1; }
// Header flags identifying a config in a packed weight (so a mismatched weight is refused).
uint16_t sparq_flags(const SparqConfig& cfg);
bool sparq_config_valid(const SparqConfig& cfg);

// The reference: one value through an nw-bit window with allowed shifts `shifts`.
uint8_t sparq_trim_value(uint8_t a, int nw, uint32_t shifts, bool round);

// Everything a trimming kernel needs, built once per call from the config.
struct SparqPlan {
  SparqConfig cfg;
  alignas(64) uint8_t lut[2][256];  // [0]: bSPARQ value, [1]: value with a zero partner
  // Indexed by p | (partner_zero << 3), p = leading-one position (0 for a zero value):
  alignas(16) uint8_t one[16];      // 1 << s
  alignas(16) uint8_t half[16];     // 1 << (s-1); 0x7f when s == 0 (never rounds)
  alignas(16) uint8_t top[16];      // (2^nw - 1) << s: a window that would carry out
};
void sparq_make_plan(const SparqConfig& cfg, SparqPlan* plan);

// Trims one row of k activations (pairs start at element 0). dst may equal src.
using SparqTrimRowFn = void (*)(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
struct SparqKernels {
  SparqTrimRowFn trim_row;
};
const SparqKernels& sparq_kernels(Isa isa);

void sparq_trim_row_scalar(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
#if defined(PQ_HAVE_X86)
void sparq_trim_row_avx2(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
void sparq_trim_row_avx512(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
#endif
#if defined(PQ_HAVE_NEON)
void sparq_trim_row_neon(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
#endif

// Trims `rows` rows of `k` (threads over rows).
void sparq_quantize_run(const uint8_t* a, size_t rows, size_t k, const SparqConfig& cfg,
                        uint8_t* out, int threads, Isa isa);

// The compact format (sparq_codec.cc): bits per code (one code per activation, or per pair with
// pairs), bytes of one encoded row of k activations, and whole-array encode (trims, then packs)
// and decode (exact inverse of the trimmed values).
int sparq_code_bits(const SparqConfig& cfg);
size_t sparq_encoded_row_bytes(const SparqConfig& cfg, size_t k);
void sparq_encode_run(const uint8_t* a, size_t rows, size_t k, const SparqConfig& cfg,
                      uint8_t* out, int threads, Isa isa);
void sparq_decode_run(const uint8_t* payload, size_t rows, size_t k, const SparqConfig& cfg,
                      uint8_t* out, int threads);
// One encoded row (row_bytes = sparq_encoded_row_bytes) -> k trimmed values.
void sparq_decode_row(const SparqConfig& cfg, const uint8_t* in, size_t k, uint8_t* out);

// C = sparq(A) @ W.T, A uint8 [m, k], W packed in the int8 panel format (int8_gemm.h). Trims one
// block of rows at a time into a buffer in the int8 path's activation format, then runs the int8
// micro-kernel over every panel for that block. Call without the GIL.
void sparq_gemm_run(const uint8_t* a, size_t m, size_t k, const SparqConfig& cfg,
                    const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                    int threads, Isa isa);
// The same product from the compact format: rows of `payload` (sparq_encoded_row_bytes each)
// are decoded block by block instead of trimmed; the uint8 activations never exist in full.
void sparq_gemm_encoded_run(const uint8_t* payload, size_t m, size_t k, const SparqConfig& cfg,
                            const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                            int threads, Isa isa);

}  // namespace pq
