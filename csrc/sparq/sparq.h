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
#include <string>

#include "core/isa.h"
#include "core/packed_format.h"

namespace pq {

struct Int8GroupFix;  // int8_gemm/int8_gemm.h

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

// Everything a trimming kernel needs, made from the config (once per process: sparq_plan).
struct SparqPlan {
  SparqConfig cfg;
  alignas(64) uint8_t lut[2][256];  // [0]: bSPARQ value, [1]: value with a zero partner
  // Indexed by p | (partner_zero << 3), p = leading-one position (0 for a zero value):
  alignas(16) uint8_t one[16];      // 1 << s
  alignas(16) uint8_t half[16];     // 1 << (s-1); 0x7f when s == 0 (never rounds)
  alignas(16) uint8_t top[16];      // (2^nw - 1) << s: a window that would carry out
};
void sparq_make_plan(const SparqConfig& cfg, SparqPlan* plan);
// The plan of a valid configuration (sparq_config_valid), made once per process.
const SparqPlan& sparq_plan(const SparqConfig& cfg);

// Trims one row of k activations (pairs start at element 0). dst may equal src.
using SparqTrimRowFn = void (*)(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);

// ---- SPARQ with 2:4-sparse weights (sparq24.cc, sparq24_avx2.cc, sparq24_avx512vbmivnni.cc)
// K in aligned groups of 4; per output column and group at most two non-zero weights. The
// activations at the non-zero positions form the column's pair (vSPARQ pair rule, zero-partner
// rule included); a single non-zero keeps its activation as if the partner were zero (2n-bit
// window); pairs=false: plain bSPARQ per selected activation. The K tail is zero padded.
//
// Packed layout (PackedOp::sparq24_gemm, 5 bits per weight): panels of 32 columns,
// [N_pad/32][K_pad/4][80 bytes]; per (panel, group): 16 selector bytes then the 64 int8 values
// (v0 at the first selected position, v1 at the second, 0 for singles), placed for the AVX2
// kernel: dword i of 32-byte half r holds [v0 of col 16r+8+i, v0 of col 16r+i, v1 of col
// 16r+8+i, v1 of col 16r+i] (sparq24_value_offset), so masking (0xff00) and shifting (<< 8)
// the 16-bit words gives 256 * v for 8 columns each without a byte shuffle.
// Selector s (4 bits): 0..5 = the position pairs (0,1),(0,2),(0,3),(1,2),(1,3),(2,3); 6 + j =
// the single position j (an all-zero group is 6 with value 0); the packer never writes 10..15.
// Column c's selector is nibble (c / 4) % 2 of byte 4 * (c / 8) + c % 4, the order the AVX2
// kernel's byte unpacking produces.
// Per activation row and group the kernels read two 16-byte tables E0/E1 (32 bytes):
// E0[s], E1[s] = the trimmed activations selector s multiplies by v0, v1 (E1[6..15] = 0).
// E0[10..15] repeat E1[0..5], so E0 alone is a table of every trimmed activation of the group:
// a0 = E0[s], a1 = E0[10 + s] for pairs (the M > 1 ymm kernels read only E0). A forged selector
// 10..15 thus multiplies v0 by E1[s - 10] and v1 by 0, alike on every path.
constexpr size_t kS24PanelCols = 32;
constexpr size_t kS24SelBytes = 16;
constexpr size_t kS24GroupBytes = kS24SelBytes + 2 * kS24PanelCols;  // 80
constexpr size_t kS24TableBytes = 32;                                 // E0[16], E1[16]
extern const uint8_t kS24PairPos[6][2];
// Which activation positions (0-3; -1: none) byte b (0..31) of a group's E0 | E1 tables holds:
// its own value, and the partner whose zero picks the zero-partner trim (-1 for a single,
// whose partner is zero, and for the unused E1[6..15]).
struct S24TableByte {
  int own, partner;
};
inline S24TableByte sparq24_table_byte(size_t b) {
  const size_t e = b % 16;
  if (e < 6) return {kS24PairPos[e][b / 16], kS24PairPos[e][1 - b / 16]};  // pair e: E0 | E1
  if (b >= 16) return {-1, -1};
  if (e < 10) return {static_cast<int>(e) - 6, -1};                      // single e - 6
  return {kS24PairPos[e - 10][1], kS24PairPos[e - 10][0]};               // E0[10 + s] = E1[s]
}
// Byte offsets inside a panel group of column `lane`'s selector (byte, nibble shift) and values.
inline size_t sparq24_sel_byte(size_t lane) { return 4 * (lane / 8) + lane % 4; }
inline unsigned sparq24_sel_shift(size_t lane) { return 4 * ((lane / 4) % 2); }
inline size_t sparq24_value_offset(size_t lane, int which) {  // which: 0 = v0, 1 = v1
  const size_t q = lane / 8, i = lane % 8;
  return kS24SelBytes + 32 * (q / 2) + 4 * i + (q % 2 ? 0 : 1) + 2 * which;
}

struct Sparq24Problem {
  const uint8_t* tables;  // [rows][k_groups][32], rows table_stride bytes apart
  size_t table_stride;    // >= k_groups * 32
  size_t k_groups;
  const uint8_t* panels;  // [n_pad/32][k_groups][80]
  int32_t* c;             // [rows][ldc]
  size_t ldc;
  size_t n;               // valid output columns
  size_t neg_offset;      // compute24_signed only: a row's first -> second tables
  bool words;             // compute24_signed only: the tables hold words, not parts (below)
  bool narrow;            // compute24_signed only: the kernel's narrow tables (below)
  bool few_high;          // narrow only: at most a third of the groups have a high part
  const uint64_t* high;   // narrow only: per row, bit g = group g has a high part
  size_t high_stride;     // narrow only: uint64 words per row of `high`
};
// Rows [m0, m1) x panels [p0, p1) of C = (tables . weights).
using Sparq24ComputeFn = void (*)(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                  size_t p1);

// How the fused forward writes a prepared row for the int8 micro-kernel (t: trimmed magnitude,
// neg: x < 0): s16: int16 +-t; wide (Int8WideFormat::offset9, u = 256 +- t): dp = u >> 2, dn =
// u & 3; sign (Int8WideFormat::sign_xor): dp = t, dn = neg ? 0xff : 0; split: dp = (neg ? 0 : t)
// ^ flip, dn = (neg ? t : 0) ^ flip (flip 0x80 for the s8 format); magnitude (2:4, which trims
// per weight pair): dp = q, the quantized magnitude before any trim, dn = neg ? 0xff : 0.
enum class SparqRowFormat { s16, wide, sign, split, magnitude };

// One row of SparqConfig's forward: q = trunc(min(|x| * (1/s) + 0.5, 255.25)) with s = amax/255
// (amax = *fixed_amax, or the row's max |x|; s = 1 when amax is 0), trimmed by `plan` (pairs judged
// on magnitudes; not for `magnitude`), then written to dp/dn[0, k) in `fmt`. tq: k + 64 bytes of scratch. Returns s;
// *has_neg: whether any x < 0.
using SparqPrepRowFn = float (*)(const SparqPlan& plan, const float* x, size_t k,
                                 const float* fixed_amax, SparqRowFormat fmt, uint8_t flip,
                                 uint8_t* tq, uint8_t* dp, uint8_t* dn, bool* has_neg);

// One row's 2:4 selector tables: k activations -> ceil(k/4) x 32 bytes (sparq24_tables_row).
using Sparq24TablesRowFn = void (*)(const SparqPlan& plan, const uint8_t* a, size_t k,
                                    uint8_t* out);
// A signed row's tables in one pass: those of its magnitudes `a`, split by sign into out and neg
// as sparq24_split_tables(out, negative, k, neg) does; with `high` instead the narrow tables of
// the kernel (SparqKernels). Returns how many groups have a high part (0 without `high`).
using Sparq24TablesRowSignedFn = size_t (*)(const SparqPlan& plan, const uint8_t* a,
                                            const uint8_t* negative, size_t k, uint8_t* out,
                                            uint8_t* neg, uint64_t* high);

struct SparqKernels {
  SparqTrimRowFn trim_row;
  Sparq24ComputeFn compute24;
  SparqPrepRowFn prep_row;
  Sparq24TablesRowFn tables24;
  // Signed rows in one pass (null: the driver runs each row's two table rows as two parts and
  // subtracts): output row m has two table sets, at tables + m * table_stride and neg_offset
  // bytes further: its positive and negative parts (C = pos . W - neg . W), or with `words`
  // (calls of up to word_rows rows, or one-row blocks, without narrow_one_row: decode, small
  // batches) the low and high bytes of the int16 words
  // pos - neg (sparq24_parts_to_words), which the streaming tile widens with one unpack instead
  // of two. With `narrow` (the other blocks with a negative value) the tables
  // come from the kernel's tables24_signed with `high`: each signed table value t split as
  // t = l + 128 * h, l = sign * (|t| & 127), h = sign * (|t| >> 7), so the rows take one lookup
  // per product and a second pass only where a group has an h (the groups holding a magnitude
  // >= 128: 1-17% after MiniLM's LayerNorms).
  // The ymm kernels' format is sparq24_split_tables' with `high`; the zmm kernel's is
  // tables24_avx512's (l + 128 and h + 1 as unsigned bytes, for vpdpbusd).
  Sparq24ComputeFn compute24_signed;
  // A signed row's tables (and with `high` the narrow tables of compute24_signed) in one pass;
  // set exactly where compute24_signed is.
  Sparq24TablesRowSignedFn tables24_signed;
  // One-row blocks with a negative value take narrow tables too, not words (the zmm decode tile).
  bool narrow_one_row = false;
  // Without narrow_one_row: a call of up to this many rows with a negative value runs as words
  // through the streaming decode tile, two rows at a time (the panel from L2 after the first
  // pair); more rows as narrow tables.
  size_t word_rows = 1;
};
const SparqKernels& sparq_kernels(Isa isa);

void sparq_trim_row_scalar(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
float sparq_prep_row_scalar(const SparqPlan&, const float*, size_t, const float*, SparqRowFormat,
                            uint8_t, uint8_t*, uint8_t*, uint8_t*, bool*);
#if defined(PQ_HAVE_X86)
float sparq_prep_row_avx2(const SparqPlan&, const float*, size_t, const float*, SparqRowFormat,
                          uint8_t, uint8_t*, uint8_t*, uint8_t*, bool*);
void sparq_trim_row_avx2(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
void sparq24_tables_row_avx2(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out);
size_t sparq24_tables_row_signed_avx2(const SparqPlan& plan, const uint8_t* a,
                                      const uint8_t* negative, size_t k, uint8_t* out,
                                      uint8_t* neg, uint64_t* high);
size_t sparq24_tables_row_signed_avx512(const SparqPlan& plan, const uint8_t* a,
                                        const uint8_t* negative, size_t k, uint8_t* out,
                                        uint8_t* neg, uint64_t* high);
void sparq_trim_row_avx512(const SparqPlan& plan, const uint8_t* src, size_t k, uint8_t* dst);
float sparq_prep_row_avx512(const SparqPlan&, const float*, size_t, const float*, SparqRowFormat,
                            uint8_t, uint8_t*, uint8_t*, uint8_t*, bool*);
void sparq24_tables_row_avx512(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out);
// A signed row (dp = |t|, dn = 0xff where t < 0, k values) as SPARQ's offset row u = v + c in dp
// (sparq_gemm.cc), c = min(its largest negative magnitude, max_c), a u outside [0, 255] kept at
// the bound with its excess as a fix in pre (Int8GroupFix; negative ones below 0, at most cap).
// Returns c, or -1 if the largest negative magnitude passes max_c where !clamp_c (the row left
// as it was) or the excesses need more than cap fixes (the row then partly written).
int sparq_offset_row_avx2(uint8_t* dp, const uint8_t* dn, size_t k, int max_c, bool clamp_c,
                          Int8GroupFix* pre, size_t cap, size_t* n_pre);
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
// C = sign(A) * sparq(|A|) @ W.T for int16 sign-magnitude rows A [m, k], every value in
// [-255, 255] (the caller checks): forward_sparq's signed route on the rows as floats with an
// identity quantization (static range 255: scale 1), no epilogue. Call without the GIL.
void sparq_gemm_signed_run(const int16_t* a, size_t m, size_t k, const SparqConfig& cfg,
                           const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                           int threads, Isa isa);
// The same product from the compact format: rows of `payload` (sparq_encoded_row_bytes each)
// are decoded block by block instead of trimmed; the uint8 activations never exist in full.
void sparq_gemm_encoded_run(const uint8_t* payload, size_t m, size_t k, const SparqConfig& cfg,
                            const int8_t* panels, const int32_t* col_sums, size_t n, int32_t* c,
                            int threads, Isa isa);

void sparq24_compute_scalar(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1);
#if defined(PQ_HAVE_X86)
// The streaming decode tiles read a panel as several streams (faster on the Intel Xeons
// measured) or, in the _one_stream twins (the AMD entries), as one (faster on Zen 4; the zmm
// one-row tile also prefetches further ahead).
void sparq24_compute_avx2(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void sparq24_compute_avx2_one_stream(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                     size_t p1);
void sparq24_compute_avx512(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void sparq24_compute_avx512_one_stream(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                       size_t p1);
// Signed rows (its compute24_signed): narrow tables, one row included (narrow_one_row).
void sparq24_compute_signed_avx512(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                   size_t p1);
void sparq24_compute_signed_avx512_one_stream(const Sparq24Problem& p, size_t m0, size_t m1,
                                              size_t p0, size_t p1);
// More than two table rows: the ymm kernel over expanded weight blocks (sparq24_rows.inc), in its
// AVX2, AVX-VNNI and EVEX builds; one or two rows go to sparq24_compute_avx2 (or its one-stream
// twin: the _one_stream functions, AVX2 build only; the signed twins take any count of rows).
void sparq24_compute_rows_avx2(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0, size_t p1);
void sparq24_compute_rows_avx2_one_stream(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                          size_t p1);
void sparq24_compute_rows_avxvnni(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                  size_t p1);
void sparq24_compute_rows_vnni256_avx512(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                         size_t p1);
// Signed rows (SparqKernels::compute24_signed): the two parts' looked-up words are subtracted
// before one vpmaddwd (AVX2) or vpdpwssd (AVX-VNNI, and its EVEX twin), one group per lane.
void sparq24_compute_rows_signed_avx2(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                      size_t p1);
void sparq24_compute_rows_signed_avx2_one_stream(const Sparq24Problem& p, size_t m0, size_t m1,
                                                 size_t p0, size_t p1);
void sparq24_compute_rows_signed_avxvnni(const Sparq24Problem& p, size_t m0, size_t m1, size_t p0,
                                         size_t p1);
void sparq24_compute_rows_signed_vnni256_avx512(const Sparq24Problem& p, size_t m0, size_t m1,
                                                size_t p0, size_t p1);
#endif
// One row's tables: k activations -> ceil(k/4) x 32 bytes.
void sparq24_tables_row(const SparqPlan& plan, const uint8_t* a, size_t k, uint8_t* out);

// Packing: header; "" or the first group with more than two non-zeros ("row n, k group g ...");
// the packed buffer (call only on a validated weight).
PackedHeader sparq24_packed_header(size_t n, size_t k, uint16_t flags);
std::string sparq24_check_sparsity(const int8_t* w, size_t n, size_t k);
void sparq24_pack_weights(const int8_t* w, size_t n, size_t k, uint16_t flags, uint8_t* out);
// Magnitude 2:4 pruning of float32 rows (pyquant.prune_24's fast path): in every aligned group of
// 4 along k the two largest |w| are kept (ties: the lower index; a NaN neither beats nor is
// beaten by another value), the others set to 0; a partial last group keeps at most two.
void prune_24_f32(const float* w, size_t rows, size_t k, float* out, int threads);

// C = sparq24(A, W) in int32, A uint8 [m, k], panels as above. Call without the GIL.
void sparq24_gemm_run(const uint8_t* a, size_t m, size_t k, const SparqConfig& cfg,
                      const uint8_t* panels, size_t n, int32_t* c, int threads, Isa isa);

// Sign-magnitude rows: a value v in [-255, 255] is sign(v) * trim(|v|), pairs judged on the
// magnitudes (a zero partner is |v| == 0). Per row the magnitudes' tables are split by sign:
// sparq24_split_tables keeps in `tables` the bytes of non-negative positions and moves those of
// negative ones (negative[i] != 0 for activation i, k of them) to `neg` (zeroed elsewhere), so
// C = tables . W - neg . W: a kernel's signed twin takes both parts in one pass, else the
// unsigned kernel runs over both as two table rows (interleaved: the weights are read once).
// negative == nullptr: no activation is negative (neg gets zeros).
// With `high` (ceil(groups / 64) words) the E1 halves get the narrow tables of compute24_signed
// instead of E1's parts: per group the E0 value t = pos - neg in [-255, 255] is split as
// t = l + 128 * h, l = sign * (|t| & 127) (int8) in tables' E1 half, h = sign * (|t| >> 7) (-1, 0
// or 1) in neg's; bit g of `high` is set when group g has an h != 0. Returns how many groups do
// (0 without `high`). The ymm kernels then take one lookup per 8 columns and group (l, in the
// high byte of an int16 word: exact in int32 over a block of <= 128 groups) and a second pass
// over h for the high groups only, in place of two lookups and a subtraction everywhere.
size_t sparq24_split_tables(uint8_t* tables, const uint8_t* negative, size_t k, uint8_t* neg,
                            uint64_t* high = nullptr);
// A row's two parts (`bytes` each) in place -> the int16 words pos - neg as low bytes (in pos)
// and high bytes (in neg: 0xff where neg != 0; the parts never overlap).
void sparq24_parts_to_words(uint8_t* pos, uint8_t* neg, size_t bytes);
// C = sparq24(A, W) with A int16 [m, k] in [-255, 255] (the caller checks the range).
void sparq24_gemm_signed_run(const int16_t* a, size_t m, size_t k, const SparqConfig& cfg,
                             const uint8_t* panels, size_t n, int32_t* c, int threads, Isa isa);

}  // namespace pq
