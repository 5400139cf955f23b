// W2A2 lookup-table GEMM (algorithms.md section 3): a, w are 2-bit codes, each side has a 4-level
// integer codebook, C[m,n] = sum_k a_levels[a[m,k]] * w_levels[w[n,k]] exactly in int32. Every
// pairwise product fits int8 (checked by the caller).
//
// Packed weight layout (one layout for every path and every kernel, 2 bits per weight):
//   panels [N_pad/64][K_pad/4][64 columns] bytes, N_pad = round_up(N, 64), K_pad = round_up(K, 12).
//   Byte (panel p, group g, lane c) holds the 4 codes of column 64p+c at k = 4g..4g+3,
//   "pre-shifted" for the DeepGEMM index (w code next to where the activation code goes):
//     bits 3:2 = w[4g+0]   (index w<<2|a, table P)      bits 1:0 = w[4g+1]   (index a<<2|w, table Q)
//     bits 7:6 = w[4g+2]   (table P after one >>4)      bits 5:4 = w[4g+3]   (table Q after >>4)
//   Pad codes are 0; the pad positions' product p[0][0] is subtracted by a constant correction.
//   The vpermb kernel reads the same bytes: the low 6 bits are a 3-code index (k1, k0, k3), and
//   the top 2 bits of three consecutive groups form a fourth index (k2 of each).
//   The pair kernel reads each nibble as one 4-bit index of a weight pair: low nibble =
//   w[4g] << 2 | w[4g+1], high nibble = w[4g+2] << 2 | w[4g+3].
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/isa.h"
#include "core/packed_format.h"

namespace pq {

constexpr size_t kLutPanelCols = 64;
constexpr size_t kLutKAlign = 12;  // K_pad multiple: 3 groups of 4 codes = one vpermb block

enum class LutKernel : int { automatic = 0, scalar = 1, deepgemm = 2, vpermb = 3, pair = 4 };

// The codebook, its product table and the derived accumulation schedules.
struct LutCodebook {
  int32_t a_levels[4], w_levels[4];
  int8_t prod[4][4];    // prod[a][w]
  int32_t pmin, pmax;   // over all 16 products
  // How many products a signed int8 lane may sum without overflow (>= 1): the classic DeepGEMM
  // count, reported for reference.
  int int8_products;
  // DeepGEMM: products biased by -pmin to [0, pmax - pmin] sum in uint8 lanes this many times
  // (floor(255 / (pmax - pmin)) >= int8_products).
  int u8_products;
  // vpermb: table entries are 3-product sums biased by -3*pmin to [0, umax]; usable if umax<=255.
  int umax;
  int u8_lookups;       // lookups an uint8 lane may sum: floor(255 / umax)
  // pair: table entries are 2-product sums biased by -2*pmin to [0, 2 (pmax - pmin)]; usable if
  // that is <= 255 (product range <= 127).
  int pair_lookups;     // lookups an uint8 lane may sum: floor(255 / (2 (pmax - pmin)))
};
LutCodebook lut_codebook(const int32_t a_levels[4], const int32_t w_levels[4]);
bool lut_vpermb_ok(const LutCodebook& cb);
bool lut_pair_ok(const LutCodebook& cb);
// pair: the 256 x 32-byte table set (one entry per activation quad), see lut_pair_avx2.cc.
constexpr size_t kLutPairTableBytes = 256 * 32;
void lut_pair_tables(const LutCodebook& cb, uint8_t* out);

// Prepared problem handed to a kernel: rows [m0, m1) x one panel.
struct LutProblem {
  size_t m, n, k, k_pad;
  const uint8_t* panels;      // [N_pad/64][K_pad/4][64]
  const LutCodebook* cb;
  const uint8_t* a_codes;     // scalar: original codes [M][lda_codes]
  size_t lda_codes;
  const uint32_t* a_deep;     // deepgemm: [M][K_pad] dword = code replicated, <<2 on odd k
  alignas(16) uint8_t tab_p[16], tab_q[16];  // deepgemm: P[w<<2|a], Q[a<<2|w], prod - pmin
  const uint8_t* tables;      // vpermb: 64 tables x 64 bytes, biased 3-product sums;
                              // pair: 256 x 32 bytes, biased 2-product sums
  const uint16_t* a_offs;     // vpermb: [M][K_pad/3] byte offsets (64 * activation index);
                              // pair: [M][K_pad/4] byte offsets (32 * activation quad)
  int32_t corr;               // added to every output (pad products, vpermb bias)
  int32_t* c;
  size_t ldc;
};

using LutComputeFn = void (*)(const LutProblem& p, size_t m0, size_t m1, size_t panel);

void lut_compute_scalar(const LutProblem& p, size_t m0, size_t m1, size_t panel);
#if defined(PQ_HAVE_X86)
void lut_deepgemm_avx2(const LutProblem& p, size_t m0, size_t m1, size_t panel);
void lut_deepgemm_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel);
void lut_vpermb_avx512(const LutProblem& p, size_t m0, size_t m1, size_t panel);
void lut_prepare_deep_avx2(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint32_t* out,
                           size_t m0, size_t m1);
void lut_prepare_deep_avx512(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint32_t* out,
                             size_t m0, size_t m1);
void lut_pair_avx2(const LutProblem& p, size_t m0, size_t m1, size_t panel);
void lut_prepare_pair_avx2(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint16_t* out,
                           size_t m0, size_t m1);
void lut_prepare_vpermb_avx512(const uint8_t* a, size_t lda, size_t k, size_t k_pad,
                               uint16_t* out, size_t m0, size_t m1);
#endif
#if defined(PQ_HAVE_NEON)
void lut_deepgemm_neon(const LutProblem& p, size_t m0, size_t m1, size_t panel);
#endif

using LutPrepareDeepFn = void (*)(const uint8_t* a, size_t lda, size_t k, size_t k_pad,
                                 uint32_t* out, size_t m0, size_t m1);
// Rows per task for each kernel (the driver splits M in multiples of it).
struct LutKernelInfo {
  LutComputeFn fn;
  size_t mr;
  size_t panels = 1;  // panels per call: fn covers [panel, min(panel + panels, n_panels))
  LutPrepareDeepFn prepare_deep = nullptr;  // deepgemm activations; nullptr: the portable loop
};
// A lut_gemm entry of the kernel table: its kind (the `kernel=` name) and whether it can run a
// codebook exactly (nullptr: any codebook).
struct LutKernelImpl {
  LutKernel kind;
  LutKernelInfo info;
  bool (*usable)(const LutCodebook& cb);
};
// The kernel `want` on `isa` (automatic: the fastest exact one for `cb`); fn == nullptr if that
// kernel does not exist on `isa` or cannot run `cb` exactly.
LutKernelInfo lut_select(Isa isa, LutKernel want, const LutCodebook& cb, LutKernel* chosen);
const char* lut_kernel_name(LutKernel k);

// --- packing (lut_pack.cc) ---
// The header (layout and codebook) of an [n, k] weight; written by the packer, checked by the
// bindings.
PackedHeader lut_packed_header(size_t n, size_t k, const int8_t w_levels[4]);
size_t lut_packed_bytes(size_t n, size_t k);
// w: codes [n][k] (values 0..3, checked by the caller).
void lut_pack_weights(const uint8_t* w, size_t n, size_t k, const int8_t w_levels[4],
                      uint8_t* out);
// Shift of code k%4 inside its packed byte.
constexpr int kLutSlotShift[4] = {2, 0, 6, 4};

// --- driver (lut_gemm_driver.cc) ---
void lut_gemm_run(const uint8_t* a, size_t m, size_t k, size_t lda, const uint8_t* panels,
                  size_t n, const LutCodebook& cb, int32_t* c, int threads, Isa isa,
                  LutKernel kernel);

}  // namespace pq
