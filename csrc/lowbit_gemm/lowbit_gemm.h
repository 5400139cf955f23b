// Low-bit weights x 8-bit activations (algorithms.md section 4):
//   C[m,n] = sum_k A[m,k] * W[n,k],  A uint8 or int8 [M, K],  W signed `bits`-bit codes [N, K],
//   bits in {2, 4}, C int32 (wraps modulo 2^32 like int8_gemm; exact whenever it fits).
//
// Packed weight layout (ISA-independent, one prepack serves every path). Codes are stored
// offset to unsigned, u = w + 2^(bits-1) in [0, 2^bits), so unpacking is AND (+ one shift):
//   panels [N_pad/64][K_pad/4][G bytes], G = 32 * bits bytes per k-group (4 k x 64 columns).
// Within a k-group, think of the int8 panel order of int8_gemm: index i = col*4 + kk in
// [0, 256), split into quarters q = i / 64 of 64 bytes (16 columns x 4 k each). Quarter q
// lives in byte block (q / per_byte) at bit offset (q % per_byte) * bits, per_byte = 8 / bits:
//   bits 4: byte j of block 0 holds quarter 0 (low nibble) and quarter 1 (high nibble), block 1
//           holds quarters 2 and 3;  bits 2: one 64-byte block holds all four quarters.
// So one 64-byte load + (AND, shift+AND) gives two (W4) or four (W2) vpdpbusd operands of 16
// columns x 4 k. Padding codes (k >= K) store w = 0; activations are zero padded too.
//
// Offset correction: the kernels multiply u (never w; the AMX grouped tile is the exception, see
// LowbitTileGroupedFn), in the operand order vpdpbusd needs
// (u8 first): uint8 A -> dot(a_u8, u_as_s8); int8 A -> dot(u_u8, a_s8). Both are exact
// (|product pair| <= 2*255*15, no int16 saturation either). Then
//   sum_k a*w = sum_k a*u - 2^(bits-1) * sum_k a,
// a per-row (per-group for the grouped variant) activation sum: no weight sums needed.
//
// Group epilogue: any K block made of whole k-groups (multiples of 4) can be computed on its
// own, so group sizes 32/64/128 along K are natural block boundaries (lowbit_gemm_grouped).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/isa.h"
#include "core/packed_format.h"

namespace pq {

// W2 GEMVs that mask quarter 1 and 2 codes in place (values 4c and 16c, no shift) sum 4x and 16x
// the true products and shift back at the end: exact while 16 * 3 * 255 * K < 2^31 (uint8 rows;
// int8 rows' products are smaller), so K (or a group) of at most this many k suffices.
constexpr size_t kLowbitScaledMaxK = 131072;

// The zmm kernels' software prefetch distance: far enough ahead for DRAM latency on the decode
// stream (about 4 KiB in flight per panel).
constexpr size_t kLowbitZmmPrefetchBytes = 4096;
// The ymm kernels' (AVX2, AVX-VNNI) distances for a streamed panel: 3 KiB ahead to L1, 12 KiB to
// L2 (lowbit_gemm_avx2.cc, chunk_sums: measured on Zen 5 and an SPR-class Xeon).
constexpr size_t kLowbitYmmPrefetchBytes = 3072;
constexpr size_t kLowbitYmmPrefetchL2Bytes = 4 * kLowbitYmmPrefetchBytes;

constexpr size_t kLowbitPanelCols = 64;  // NR
constexpr size_t kLowbitGroupK = 4;      // KR
inline constexpr size_t lowbit_group_bytes(int bits) { return 32 * static_cast<size_t>(bits); }

// Raw sums of one tile: sums[r][64] = sum over `kgroups` k-groups of a row r x panel block,
// u codes (no offset correction). `a` points at the tile's first row at the block's first k
// (prepared: K padded to K_pad with zeros), `b` at the panel's first k-group of the block.
using LowbitTileFn = void (*)(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                              size_t kgroups, bool a_signed, int32_t* sums);

// Group epilogue: out[r][j] += sc[j] * float(sums[r][j] - corr[r]) for r < mr, j < 64, with a
// separate multiply and add (no FMA) so every path rounds alike. corr[r] = offset * activation
// sum of row r over the group (wrapping uint32).
using LowbitEpilogueFn = void (*)(const int32_t* sums, size_t mr, const uint32_t* corr,
                                  const float* sc, float* out);

// Optional fused grouped GEMV (one activation row, one panel): out[64] = sum_g scales[j][g] *
// float(raw sum over group g - corr[g]), in group order, bit-identical to tile + epilogue.
// scales points at the panel's first column of the caller's [N][n_groups] array; nc <= 64
// valid columns; prefetch_next: a full next panel's scales follow (64 * n_groups floats);
// scratch: round_up(n_groups, 16) * 64 floats, 64-byte aligned.
using LowbitGemvGroupedFn = void (*)(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                     size_t group_kgroups, bool a_signed, const uint32_t* corr,
                                     const float* scales, size_t n_groups, size_t nc,
                                     bool prefetch_next, float* scratch, float* out);

// The same GEMV with this panel's bfloat16 scales in the panel layout (panel_scales.h; zero
// for padding columns), as the fused forward stores them (computed once at conversion). The
// panels' scale blocks are consecutive, so the hardware prefetcher streams them: no software
// prefetch of the next block (on Zen 4 it made the cold W4 g32 GEMV 12% slower).
// (kgroups >= 1: the forward handles K = 0 before the driver.)
using LowbitGemvGroupedPanelFn = void (*)(const uint8_t* a, const uint8_t* b, size_t kgroups,
                                          size_t group_kgroups, bool a_signed,
                                          const uint32_t* corr, const uint16_t* sc,
                                          size_t n_groups, float* out);

// Optional fused grouped tile for M > 1 (unsigned activations): out[r][j] (r < mr, j < 64) =
// 0 + the sum over groups g, in order, of sc[g][j] * float(sum over group g of row r -
// corr[r * n_groups + g]), bit-identical to tile + epilogue per group on zeroed rows (the
// kernel writes out on the first group; n_groups >= 1). sc: the panel's bfloat16 scales in the
// panel layout (panel_scales.h). corr must be what the driver passes (offset * the group's
// activation sum): the AMX kernel multiplies signed codes and never reads it.
using LowbitTileGroupedFn = void (*)(const uint8_t* a, size_t lda, size_t mr, const uint8_t* b,
                                     size_t kgroups, size_t group_kgroups, const uint32_t* corr,
                                     size_t n_groups, const uint16_t* sc, float* out);

struct LowbitGemmKernels {
  size_t mr;  // rows per tile call (at most 64)
  LowbitTileFn tile4, tile2;
  LowbitEpilogueFn group_epilogue;
  LowbitGemvGroupedFn gemv_grouped4, gemv_grouped2;  // nullptr: tile + epilogue per group
  LowbitGemvGroupedPanelFn gemv_panel4, gemv_panel2;  // nullptr: tile + epilogue per group
  LowbitTileGroupedFn tile_grouped4, tile_grouped2;   // nullptr: tile + epilogue per group
  size_t grouped_mr = 0;  // rows per tile_grouped call (0: mr)
};
// Rows per grouped-tile call: the AVX2 tile unpacks the codes once per call, the ymm VNNI tile
// prefetches the panel in its first 6-row tile (lowbit_gemm_avx2.cc, lowbit_gemm_vnni256.inc)
inline constexpr size_t kLowbitAvx2GroupedRows = 24;
inline constexpr size_t kLowbitVnni256GroupedRows = 24;
const LowbitGemmKernels& lowbit_gemm_kernels(Isa isa);

void lowbit_tile4_scalar(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_tile2_scalar(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_epilogue_scalar(const int32_t*, size_t, const uint32_t*, const float*, float*);
#if defined(PQ_HAVE_X86)
void lowbit_epilogue_avx2(const int32_t*, size_t, const uint32_t*, const float*, float*);
void lowbit_epilogue_avx512(const int32_t*, size_t, const uint32_t*, const float*, float*);
void lowbit_gemv_grouped4_avx512(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                 const uint32_t*, const float*, size_t, size_t, bool, float*,
                                 float*);
void lowbit_gemv_grouped2_avx512(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                 const uint32_t*, const float*, size_t, size_t, bool, float*,
                                 float*);
void lowbit_gemv_grouped4_avx512_2s(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                    const uint32_t*, const float*, size_t, size_t, bool, float*,
                                    float*);
void lowbit_gemv_grouped2_avx512_2s(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                    const uint32_t*, const float*, size_t, size_t, bool, float*,
                                    float*);
void lowbit_gemv_grouped_panel4_avx512(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                       const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel2_avx512(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                       const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel4_avx512_2s(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                          const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel2_avx512_2s(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                          const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel4_avx2(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                     const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel2_avx2(const uint8_t*, const uint8_t*, size_t, size_t, bool,
                                     const uint32_t*, const uint16_t*, size_t, float*);
void lowbit_gemv_grouped_panel4_avx2_l1_prefetch(const uint8_t*, const uint8_t*, size_t, size_t,
                                                 bool, const uint32_t*, const uint16_t*, size_t,
                                                 float*);
void lowbit_gemv_grouped_panel2_avx2_l1_prefetch(const uint8_t*, const uint8_t*, size_t, size_t,
                                                 bool, const uint32_t*, const uint16_t*, size_t,
                                                 float*);
void lowbit_tile_grouped4_avx2(const uint8_t*, size_t, size_t, const uint8_t*, size_t, size_t,
                               const uint32_t*, size_t, const uint16_t*, float*);
void lowbit_tile_grouped2_avx2(const uint8_t*, size_t, size_t, const uint8_t*, size_t, size_t,
                               const uint32_t*, size_t, const uint16_t*, float*);
void lowbit_tile_grouped4_avx512(const uint8_t*, size_t, size_t, const uint8_t*, size_t, size_t,
                                 const uint32_t*, size_t, const uint16_t*, float*);
void lowbit_tile_grouped2_avx512(const uint8_t*, size_t, size_t, const uint8_t*, size_t, size_t,
                                 const uint32_t*, size_t, const uint16_t*, float*);
// the same tile with codes unpacked signed by GFNI (lowbit_tile_grouped_avx512vnnigfni.cc)
void lowbit_tile_grouped4_avx512vnnigfni(const uint8_t*, size_t, size_t, const uint8_t*, size_t,
                                         size_t, const uint32_t*, size_t, const uint16_t*, float*);
void lowbit_tile_grouped2_avx512vnnigfni(const uint8_t*, size_t, size_t, const uint8_t*, size_t,
                                         size_t, const uint32_t*, size_t, const uint16_t*, float*);
// A kernel's raw and grouped tiles by suffix: the ymm VNNI kernel (lowbit_gemm_vnni256.inc) in
// its VEX (AVX-VNNI) and EVEX (AVX-512 VNNI + VL) builds, and AMX
#define PQ_LOWBIT_TILES_DECLARE(suffix)                                                          \
  void lowbit_tile4_##suffix(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool,       \
                             int32_t*);                                                          \
  void lowbit_tile2_##suffix(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool,       \
                             int32_t*);                                                          \
  void lowbit_tile_grouped4_##suffix(const uint8_t*, size_t, size_t, const uint8_t*, size_t,     \
                                     size_t, const uint32_t*, size_t, const uint16_t*, float*);  \
  void lowbit_tile_grouped2_##suffix(const uint8_t*, size_t, size_t, const uint8_t*, size_t,     \
                                     size_t, const uint32_t*, size_t, const uint16_t*, float*);
// AMX (lowbit_gemm_avx512amx.cc): grouped and raw tiles for 16+ rows; fewer: the AVX-512 tiles
PQ_LOWBIT_TILES_DECLARE(amx)
// the ymm VNNI kernel's decode GEMVs (its raw one is reached through its tiles at one row)
#define PQ_LOWBIT_GEMV_PANEL_DECLARE(suffix)                                                     \
  void lowbit_gemv_grouped_panel4_##suffix(const uint8_t*, const uint8_t*, size_t, size_t, bool, \
                                           const uint32_t*, const uint16_t*, size_t, float*);    \
  void lowbit_gemv_grouped_panel2_##suffix(const uint8_t*, const uint8_t*, size_t, size_t, bool, \
                                           const uint32_t*, const uint16_t*, size_t, float*);
PQ_LOWBIT_TILES_DECLARE(avxvnni)
PQ_LOWBIT_TILES_DECLARE(vnni256_avx512)
PQ_LOWBIT_GEMV_PANEL_DECLARE(avxvnni)
PQ_LOWBIT_GEMV_PANEL_DECLARE(vnni256_avx512)
void lowbit_tile4_avx2(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_tile2_avx2(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_tile4_avx512(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_tile2_avx512(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
#endif
#if defined(PQ_HAVE_NEON)
void lowbit_tile4_neon(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
void lowbit_tile2_neon(const uint8_t*, size_t, size_t, const uint8_t*, size_t, bool, int32_t*);
#endif

// --- packing (lowbit_pack.cc) ---
// The header (layout) of an [n, k] weight of `bits` (2 or 4) bits; written by the packer,
// checked by the bindings.
PackedHeader lowbit_packed_header(size_t n, size_t k, int bits);
size_t lowbit_packed_bytes(size_t n, size_t k, int bits);
// w: signed codes in [-2^(bits-1), 2^(bits-1)) (caller validates). Writes header + panels.
void lowbit_pack_weights(const int8_t* w, size_t n, size_t k, int bits, uint8_t* out);

// --- driver (lowbit_gemm_driver.cc); call without the GIL ---
// a: [m][k] bytes (int8 viewed as uint8 when a_signed). c: int32 [m][n].
void lowbit_gemm_run(const uint8_t* a, size_t m, size_t k, bool a_signed, const uint8_t* panels,
                     size_t n, int bits, int32_t* c, int threads, Isa isa);
// c: float32 [m][n] = sum_g scales[n][g] * (integer partial sum over k in group g);
// group_size a multiple of 4, scales [n][ceil(k / group_size)].
void lowbit_gemm_grouped_run(const uint8_t* a, size_t m, size_t k, bool a_signed,
                             const uint8_t* panels, size_t n, int bits, size_t group_size,
                             const float* scales, float* c, int threads, Isa isa);

// --- fused forward (lowbit_gemm_driver.cc) ---
struct Epilogue;
class TaskSet;  // core/gemm_tasks.h
// Panel-layout bfloat16 scales [N_pad / 64][n_groups][64 slots] (panel_scales.h) from float32
// [n][n_groups] (padding columns zero). False (out unspecified) if a scale is not a bfloat16
// value (its low 16 bits not zero): the caller raises, nothing is rounded silently.
bool lowbit_panel_scales(const float* scales, size_t n, size_t n_groups, uint16_t* out);
// y float32 [m][n] = ep(sum_g sc[n][g] * (exact integer sum over group g)), a: uint8 [m][lda]
// with columns [k, round_up(k, 4)) zero; panel_scales from lowbit_panel_scales; the epilogue is
// applied to each tile while it is in cache.
void lowbit_grouped_forward_run(const uint8_t* a, size_t lda, size_t m, size_t k,
                                const uint8_t* panels, size_t n, int bits, size_t group_size,
                                const uint16_t* panel_scales, const Epilogue& ep, float* y,
                                int threads, Isa isa);
// The same work prepared as a task set, to run beside other calls' (run_task_sets); a, the
// scales, ep's arrays and y must outlive it.
std::unique_ptr<TaskSet> lowbit_forward_tasks(const uint8_t* a, size_t lda, size_t m, size_t k,
                                              const uint8_t* panels, size_t n, int bits,
                                              size_t group_size, const uint16_t* panel_scales,
                                              const Epilogue& ep, float* y, int threads, Isa isa);

}  // namespace pq
