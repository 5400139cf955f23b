// int8 GEMM: C[m,n] = sum_k A[m,k] * W[n,k] (algorithms.md section 2), A uint8 or int8 [M, K],
// W int8 [N, K], C int32 [M, N]. Exact whenever the result fits int32; otherwise it wraps modulo
// 2^32 on every path alike (the +-128 offset trick relies on that).
//
// Packed weight layout (ISA-independent, so one prepack serves every path):
//   panels [N_pad/64][K_pad/4][64 columns][4 k]  int8, zero padded (N_pad = round_up(N, 64),
//   K_pad = round_up(K, 4)); aux = int32 column sums sum_k W[n,k], [N_pad].
// Activations are first "prepared" into the format a path multiplies (u8, s8 or s16), K padded
// to K_pad with zeros; the offset of that conversion is undone by a per-column bias.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "core/gemm_tasks.h"
#include "core/isa.h"
#include "core/packed_format.h"

namespace pq {

constexpr size_t kInt8PanelCols = 64;  // NR
constexpr size_t kInt8GroupK = 4;      // KR: k values interleaved per column
constexpr size_t kInt8PanelGroupBytes = kInt8PanelCols * kInt8GroupK;  // one k-group of a panel

#if defined(__SSE__)
// Prefetches (into L1) the four cache lines of the panel k group at p: for tiles whose loop
// issues too many operations per weight byte for the out-of-order window to keep the stream's
// loads in flight. static: each kernel file keeps its own copy.
static inline void prefetch_panel_group(const void* p) {
  const char* c = static_cast<const char*>(p);
  for (size_t i = 0; i < kInt8PanelGroupBytes; i += 64) _mm_prefetch(c + i, _MM_HINT_T0);
}
#endif

enum class Int8AFormat { u8, s8, s16 };

// Prepared problem handed to a path's compute function.
struct Int8GemmProblem {
  const void* a;            // prepared activations [M][lda], element type per Int8AFormat
  size_t lda;               // elements (>= K_pad)
  const int8_t* panels;     // packed weight panels
  size_t k_groups;          // K_pad / 4
  const int32_t* col_bias;  // [N_pad] added to every output row; nullptr for none
  int32_t* c;               // output [M][ldc]
  size_t ldc;
  size_t n;                 // valid output columns
  // compute_wide only: the second byte of each 9-bit activation ([M][lda]; Int8WideFormat)
  const uint8_t* a_low;
  // compute_wide with Int8WideFormat::sign_xor only: [M] added to every column of row m
  const int32_t* row_bias = nullptr;
  // Every row's pairs are known to sum to at most 255 (the caller split them all by the pair
  // route): the AVX2 1x64 row tile skips its per-block check.
  bool pair_safe = false;
};

// Computes rows [m0, m1) of the output columns in panels [p0, p1).
using Int8ComputeFn = void (*)(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);

// How compute_wide takes SPARQ's signed inputs v in [-255, 255] (9 bits) in one pass:
//   offset9:  u = v + 256 in [1, 511] as a = u >> 2 (top 7 bits) and a_low = u & 3:
//             C = sum_k (4 a + a_low) w, the 256 * colsum taken off by a column bias
//             (AVX2's vpmaddwd tile).
//   sign_xor: a = |v| (u8) and a_low = 0xff where v < 0, else 0: C = sum_k a (w ^ a_low) +
//             row_bias[m] with row_bias = sum of |v| over v < 0, because |v| * ~w + |v| =
//             -|v| * w for every int8 w: one vpdpbusd and one xor per product vector (VNNI).
//   split_u8: a = v > 0 ? v : 0 and a_low = v < 0 ? -v : 0 (both u8): C = sum_k a w - sum_k
//             a_low w, both products from each weight tile in one pass (AMX: a shared B tile
//             cannot be xor-ed per row).
enum class Int8WideFormat { offset9, sign_xor, split_u8 };

// A sign_xor row's row_bias: the sum of |v| over v < 0 (the xor's -1 per product), from the row
// as the tile reads it (after any pair split: the fixes carry the rest).
inline int32_t sign_xor_row_bias(const uint8_t* mags, const uint8_t* signs, size_t k) {
  uint32_t neg_sum = 0;
  for (size_t i = 0; i < k; ++i) neg_sum += mags[i] & signs[i];
  return static_cast<int32_t>(neg_sum);
}

// The AVX2 vpmaddubsw tile's fast route is exact on any row whose pairs (k, k + 1), k even, each
// sum to at most 255 (|a0 w0 + a1 w1| <= 255 * 128 < 32768), not only on 7-bit rows. An 8-bit row
// is split into such a row and a sparse remainder: where a pair sums past 255, the excess leaves
// its even member and becomes a fix (the k group and its 4 activation bytes, the excess at byte 0
// or 2), whose products are added to C after the tile. Post-ReLU rows need few (0.05-3% of the
// pairs of a U-Net's 3x3 convs, SPARQ-trimmed or not), so they run at the 7-bit rows' speed.
// Signed rows (Int8WideFormat::sign_xor: row = |v|, signs = 0xff where v < 0) split the same way
// on |v|; a fix whose bytes belong to negative values has kFixNegative set in `group` and its
// products are subtracted (a k group with excesses of both signs gives two fixes).
struct Int8GroupFix {
  uint32_t group;  // k group (4 k), | kFixNegative for a negative fix
  uint32_t bytes;  // its 4 activation bytes (little-endian: byte i multiplies k = 4 group + i)
};
constexpr uint32_t kFixNegative = uint32_t{1} << 31;  // k groups < kPackedMaxK / 4
// Splits row[0, k_pad) in place into a pair-safe row, writing its fixes; returns their count, or
// SIZE_MAX with the row unchanged if more than `cap` would be needed (the tile then takes its
// split route for the row's blocks). signs: the row's sign bytes (sign_xor rows), or nullptr.
using Int8PairSplitFn = size_t (*)(uint8_t* row, const uint8_t* signs, size_t k_pad,
                                   Int8GroupFix* fixes, size_t cap);
// c[0, nc) += the fixes' products with one panel's columns (panel_b: the panel's k group 0).
using Int8AddFixesFn = void (*)(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                                int32_t* c, size_t nc);

struct Int8GemmKernels {
  Int8AFormat a_format;
  size_t mr;  // rows per micro-tile (the driver splits M in multiples of it; a kernel may tile
              // a range in smaller steps, e.g. the ymm VNNI compute_wide's 4 rows)
  Int8ComputeFn compute;
  // widest uint8 activations it runs at full speed on any data: 7 for the AVX2 vpmaddubsw tile
  // (8-bit rows take its exact split route at about half speed, or the pair route near full
  // speed where few of their pairs pass 255, as after a ReLU), 8 elsewhere.
  // Int8Config(act_bits="auto").
  int full_speed_act_bits;
  // 9-bit activations (SPARQ's signed inputs) in one pass, in `wide_format`. nullptr: the path
  // has none and callers run a positive and a negative pass (formats that hold +-255 directly,
  // like s16, need neither).
  Int8ComputeFn compute_wide = nullptr;
  Int8WideFormat wide_format = Int8WideFormat::offset9;
  // Row ranges from this size on run compute_wide faster than compute runs 8-bit uint8 rows
  // (AVX2: the int16 tile against vpmaddubsw's split route, measured with the tile's prefetch:
  // faster from 8 rows, in cache and from DRAM; at 4-6 rows slower from DRAM), so callers holding
  // 8-bit rows write them in the wide format even without negative values; 0: never.
  size_t wide_faster_from_rows = 0;
  // Nonzero: the most activation bytes (rows x K_pad) one task's rows should span, for tiles so
  // fast that re-reading all of A per panel from L3 would bound them (AMX): the driver splits M
  // into chunks that fit and runs every panel of a chunk before the next chunk.
  size_t a_chunk_bytes = 0;
  // Nonzero: activation rows must start on this byte boundary (AMX tile rows that straddle cache
  // lines ran at half speed): the driver copies A into aligned rows otherwise.
  size_t a_row_align = 0;
  // Nonzero: SPARQ's fused forward runs these kernels for fewer than `small_rows_below` rows (AMX:
  // its split 9-bit rows there slower than the zmm sign-xor tile). (The AMX compute itself hands
  // row ranges under 8 rows to the zmm kernel.)
  const Int8GemmKernels* small_rows = nullptr;
  size_t small_rows_below = 0;
  // The pair route (Int8GroupFix above; null: the path's compute is exact at full speed on any
  // uint8 row, or it has none): callers holding 8-bit uint8 rows may split them and add the fixes.
  Int8PairSplitFn pair_split = nullptr;
  // Adds fixes' products after the tile: the pair route's, or (set without pair_split, on the
  // VNNI kernels) those of SPARQ's offset rows, whose excess bytes any fix here must take exactly.
  Int8AddFixesFn add_fixes = nullptr;
  // Rows in Int8WideFormat::sign_xor on a path whose compute_wide takes another format (AVX2:
  // the u8 tile with each row's sign bytes xor-ed into the weights, its fast route where the
  // |v| rows are pair-safe, so split by pair_split with their signs): SPARQ's signed rows at
  // about the 7-bit rows' speed where the int16 tile runs 1.45x their time. nullptr: none.
  Int8ComputeFn compute_sign_xor = nullptr;
  // With add_fixes but no pair route (the VNNI kernels): SPARQ's signed blocks take offset rows
  // through `compute` (no sign xor) where the block's probed rows need fixes in at most this
  // share of their k groups; 0: never. Per tile, as measured on MiniLM's layers (Zen 4): the zmm
  // 6x64 tile's xor costs ~12% of it and a fix about twice its k group's share, so only rows with
  // almost no excess gain (GELU outputs); the ymm tile drops to 4 rows with the xor (~30%).
  float offset_fix_share_max = 0.0f;
};
const Int8GemmKernels& int8_gemm_kernels(Isa isa);

// The shared task split's shape (core/gemm_tasks.h) for m rows of `a_row_bytes` each against
// int8 panels of n columns and k_pad depth (int8_gemm_run, SPARQ's row blocks).
inline TaskShape int8_task_shape(const Int8GemmKernels& kern, size_t m, size_t n, size_t k_pad,
                                 size_t a_row_bytes) {
  const size_t n_pad = round_up(n, kInt8PanelCols);
  TaskShape shape;
  shape.m = m;
  shape.n_panels = n_pad / kInt8PanelCols;
  shape.mr = kern.mr;
  shape.a_row_bytes = a_row_bytes;
  shape.a_chunk_bytes = kern.a_chunk_bytes;
  shape.out_row_bytes = n * sizeof(int32_t);
  shape.weight_bytes = n_pad * k_pad;
  return shape;
}

void int8_compute_scalar(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
#if defined(PQ_HAVE_X86)
void int8_compute_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
size_t int8_pair_split_avx2(uint8_t* row, const uint8_t* signs, size_t k_pad,
                            Int8GroupFix* fixes, size_t cap);
void int8_add_fixes_avx2(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                         int32_t* c, size_t nc);
void int8_compute_avx2_strips(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                              size_t p1);
void int8_compute_wide_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                            size_t p1);
// compute_sign_xor: the two loop orders above on |v| rows with sign bytes (p.a_low, p.row_bias)
void int8_compute_sign_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void int8_compute_sign_avx2_strips(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                   size_t p1);
// compute_wide's int16 vpmaddwd tile (int8_gemm_wide_avx2.cc): rows [m0, m1) x one panel
void int8_wide_rows_tiled_avx2(const Int8GemmProblem& p, size_t m0, size_t m1, size_t panel);
void int8_compute_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void int8_compute_wide_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                              size_t p1);
// AMX tiles (int8_gemm_avx512amx.cc); row ranges below kAmxMinRows run int8_compute_avx512
void int8_compute_amx(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void int8_compute_wide_amx(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
// the ymm VNNI kernel (int8_gemm_vnni256.inc): VEX (AVX-VNNI) and EVEX (AVX-512 VNNI + VL) builds
void int8_compute_avxvnni(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void int8_compute_vnni256_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                 size_t p1);
void int8_compute_wide_avxvnni(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                               size_t p1);
void int8_compute_wide_vnni256_avx512(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                      size_t p1);
// add_fixes of the VNNI kernels (SPARQ's offset rows; exact on any fix bytes)
void int8_add_fixes_avx512(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                           int32_t* c, size_t nc);
void int8_add_fixes_avxvnni(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                            int32_t* c, size_t nc);
void int8_add_fixes_vnni256_avx512(const int8_t* panel_b, const Int8GroupFix* fixes, size_t count,
                                   int32_t* c, size_t nc);
#endif
#if defined(PQ_HAVE_NEON)
void int8_compute_neon(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void int8_compute_neon_i8mm(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0, size_t p1);
#endif

// --- packing (int8_pack.cc) ---
// The header (layout: padding, offsets, size) of an [n, k] weight; the packer writes it and the
// bindings validate loaded buffers against it. flags: 0 for int8_gemm, sparq_flags for SPARQ.
PackedHeader int8_packed_header(size_t n, size_t k, PackedOp op, uint16_t flags);
// Bytes of the packed buffer for an [n, k] weight.
size_t int8_packed_bytes(size_t n, size_t k);
// Writes header + panels + column sums. `op` lets SPARQ reuse the int8 format under its own name.
void int8_pack_weights(const int8_t* w, size_t n, size_t k, PackedOp op, uint16_t flags,
                       uint8_t* out);
// Panels [N_pad/64][K_pad/4][64][4] from rows of W (used by other packers too).
void int8_pack_panels(const int8_t* w, size_t n, size_t k, int8_t* panels, int32_t* col_sums);
// Whether each column c < n's aux sum is the sum of its k panel values; if not, the first column
// that differs and the sum its values give. The signed-activation paths read the sums (the
// +-128 offset correction), so a loaded buffer's must match its panels (K padding and columns
// past n never reach an output). One pass over the panels.
bool int8_col_sums_match(const int8_t* panels, const int32_t* col_sums, size_t n, size_t k,
                         size_t* bad_col, int32_t* want);

// The optional float epilogue is the shared one of every fused forward (forward/epilogue.h),
// applied to each panel's rows while they are still in cache; the output buffer then holds
// float32 (it doubles as the int32 scratch of the accumulation).
struct Epilogue;

// --- driver (int8_gemm_driver.cc) ---
// Runs the whole GEMM on the active path: prepares A, threads over (panel, M-range) tiles.
// `a` is [m][lda_in] bytes, uint8 if !a_signed else int8. Releases nothing: call without the GIL.
void int8_gemm_run(const uint8_t* a, size_t m, size_t k, size_t lda_in, bool a_signed,
                   const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                   int threads, Isa isa, const Epilogue* epilogue = nullptr);
// The same work prepared as a task set (its converted rows its own), to run beside other calls'
// (run_task_sets); a, col_sums, the epilogue's arrays and c must outlive it.
std::unique_ptr<TaskSet> int8_gemm_tasks(const uint8_t* a, size_t m, size_t k, size_t lda_in,
                                         bool a_signed, const int8_t* panels,
                                         const int32_t* col_sums, size_t n, int32_t* c,
                                         int threads, Isa isa, const Epilogue* epilogue);

}  // namespace pq
