// The kernel table (see kernel_table.h). Each family's entries are listed best first; a kernel's
// `features` must match the compiler flags of its file's suffix (csrc/core/isa_flags.txt), so
// the compiler cannot emit an instruction the entry does not declare.
#include "core/kernel_table.h"

#include <algorithm>
#include <array>

#include "bitpack/bitpack.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "lut_gemm/lut_gemm.h"
#include "quantize/row_quantize.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

// A kernel compiled only for one architecture: its function there, nullptr elsewhere (the entry
// then stays in the table, with built = false, for `pyquant info` and the tests).
#if defined(PQ_HAVE_X86)
#define PQ_X86(fn) fn
#else
#define PQ_X86(fn) nullptr
#endif
#if defined(PQ_HAVE_NEON)
#define PQ_ARM(fn) fn
#else
#define PQ_ARM(fn) nullptr
#endif

// ---- the families' kernel structs (what the drivers call) ----
// {a_format, mr, compute, full_speed_act_bits, compute_wide, wide_format, wide_faster_from_rows,
//  a_chunk_bytes, a_row_align, small_rows, small_rows_below, pair_split, add_fixes,
//  compute_sign_xor, offset_fix_share_max}
const Int8GemmKernels kInt8Avx512{Int8AFormat::u8, 6, PQ_X86(int8_compute_avx512), 8,
                                  PQ_X86(int8_compute_wide_avx512), Int8WideFormat::sign_xor,
                                  0, 0, 0, nullptr, 0, nullptr, PQ_X86(int8_add_fixes_avx512),
                                  nullptr, 0.01f};
const Int8GemmKernels kInt8Amx{Int8AFormat::u8, 32, PQ_X86(int8_compute_amx), 8,
                               PQ_X86(int8_compute_wide_amx), Int8WideFormat::split_u8, 0,
                               size_t{1} << 20,  // half of a Sapphire Rapids core's L2
                               64, &kInt8Avx512, 16};
const Int8GemmKernels kInt8Vnni256Evex{Int8AFormat::u8, 6, PQ_X86(int8_compute_vnni256_avx512), 8,
                                       PQ_X86(int8_compute_wide_vnni256_avx512),
                                       Int8WideFormat::sign_xor, 0, 0, 0, nullptr, 0, nullptr,
                                       PQ_X86(int8_add_fixes_vnni256_avx512), nullptr, 0.035f};
const Int8GemmKernels kInt8AvxVnni{Int8AFormat::u8, 6, PQ_X86(int8_compute_avxvnni), 8,
                                   PQ_X86(int8_compute_wide_avxvnni), Int8WideFormat::sign_xor,
                                   0, 0, 0, nullptr, 0, nullptr, PQ_X86(int8_add_fixes_avxvnni),
                                   nullptr, 0.035f};
const Int8GemmKernels kInt8Avx2{Int8AFormat::u8, 1, PQ_X86(int8_compute_avx2), 7,
                                PQ_X86(int8_compute_wide_avx2),
                                Int8WideFormat::offset9, 8, 0, 0, nullptr, 0,
                                PQ_X86(int8_pair_split_avx2), PQ_X86(int8_add_fixes_avx2),
                                PQ_X86(int8_compute_sign_avx2)};
const Int8GemmKernels kInt8Avx2Strips{Int8AFormat::u8, 4, PQ_X86(int8_compute_avx2_strips), 7,
                                      PQ_X86(int8_compute_wide_avx2),
                                      Int8WideFormat::offset9, 8, 0, 0, nullptr, 0,
                                      PQ_X86(int8_pair_split_avx2),
                                      PQ_X86(int8_add_fixes_avx2),
                                      PQ_X86(int8_compute_sign_avx2_strips)};
const Int8GemmKernels kInt8NeonI8mm{Int8AFormat::s8, 8, PQ_ARM(int8_compute_neon_i8mm), 8};
const Int8GemmKernels kInt8Neon{Int8AFormat::s8, 4, PQ_ARM(int8_compute_neon), 8};
const Int8GemmKernels kInt8Scalar{Int8AFormat::u8, 4, int8_compute_scalar, 8};

const LutKernelImpl kLutVpermb{LutKernel::vpermb, {PQ_X86(lut_vpermb_avx512), 3, 2}, lut_vpermb_ok};
const LutKernelImpl kLutDeepAvx512{
    LutKernel::deepgemm, {PQ_X86(lut_deepgemm_avx512), 6, 1, PQ_X86(lut_prepare_deep_avx512)}, nullptr};
const LutKernelImpl kLutDeepAvx2{
    LutKernel::deepgemm, {PQ_X86(lut_deepgemm_avx2), 3, 1, PQ_X86(lut_prepare_deep_avx2)}, nullptr};
const LutKernelImpl kLutPair{LutKernel::pair, {PQ_X86(lut_pair_avx2), 1}, lut_pair_ok};
const LutKernelImpl kLutDeepNeon{LutKernel::deepgemm, {PQ_ARM(lut_deepgemm_neon), 4}, nullptr};
const LutKernelImpl kLutScalar{LutKernel::scalar, {lut_compute_scalar, 4}, nullptr};

constexpr LowbitGemmKernels kLowbitAvx512{6,
                                      PQ_X86(lowbit_tile4_avx512),
                                      PQ_X86(lowbit_tile2_avx512),
                                      PQ_X86(lowbit_epilogue_avx512),
                                      PQ_X86(lowbit_gemv_grouped4_avx512),
                                      PQ_X86(lowbit_gemv_grouped2_avx512),
                                      PQ_X86(lowbit_gemv_grouped_panel4_avx512),
                                      PQ_X86(lowbit_gemv_grouped_panel2_avx512),
                                      PQ_X86(lowbit_tile_grouped4_avx512),
                                      PQ_X86(lowbit_tile_grouped2_avx512)};
// A kernel set with one pair of its functions replaced (the twin entries below differ from
// another entry in one pair of kernels). FromMember keeps the functions out of the template
// argument deduction: their type comes from the members alone, so PQ_X86 / PQ_ARM may give
// nullptr on other architectures.
template <class T>
struct FromMember {
  using type = T;
};
template <class Kernels, class Fn>
constexpr Kernels with_pair(Kernels k, Fn Kernels::*first, typename FromMember<Fn>::type first_fn,
                            Fn Kernels::*second, typename FromMember<Fn>::type second_fn) {
  k.*first = first_fn;
  k.*second = second_fn;
  return k;
}
// the same kernels with the grouped tiles swapped
constexpr LowbitGemmKernels kLowbitAvx512Gfni =
    with_pair(kLowbitAvx512, &LowbitGemmKernels::tile_grouped4,
              PQ_X86(lowbit_tile_grouped4_avx512vnnigfni), &LowbitGemmKernels::tile_grouped2,
              PQ_X86(lowbit_tile_grouped2_avx512vnnigfni));
const LowbitGemmKernels kLowbitAvx2{2,       PQ_X86(lowbit_tile4_avx2),
                                    PQ_X86(lowbit_tile2_avx2),
                                    PQ_X86(lowbit_epilogue_avx2),
                                    nullptr, nullptr,
                                    PQ_X86(lowbit_gemv_grouped_panel4_avx2),
                                    PQ_X86(lowbit_gemv_grouped_panel2_avx2),
                                    PQ_X86(lowbit_tile_grouped4_avx2),
                                    PQ_X86(lowbit_tile_grouped2_avx2),
                                    kLowbitAvx2GroupedRows};
// the AMD entry: the grouped decode GEMV prefetching into L1 only (lowbit_gemm_avx2.cc)
const LowbitGemmKernels kLowbitAvx2L1Prefetch =
    with_pair(kLowbitAvx2, &LowbitGemmKernels::gemv_panel4,
              PQ_X86(lowbit_gemv_grouped_panel4_avx2_l1_prefetch), &LowbitGemmKernels::gemv_panel2,
              PQ_X86(lowbit_gemv_grouped_panel2_avx2_l1_prefetch));
// the ymm VNNI kernel: its own 6x16 tiles and decode GEMVs
#define PQ_LOWBIT_VNNI256(suffix)                                                              \
  LowbitGemmKernels {                                                                          \
    6, PQ_X86(lowbit_tile4_##suffix), PQ_X86(lowbit_tile2_##suffix),                           \
        PQ_X86(lowbit_epilogue_avx2), nullptr, nullptr,                                        \
        PQ_X86(lowbit_gemv_grouped_panel4_##suffix),                                           \
        PQ_X86(lowbit_gemv_grouped_panel2_##suffix),                                           \
        PQ_X86(lowbit_tile_grouped4_##suffix), PQ_X86(lowbit_tile_grouped2_##suffix),          \
        kLowbitVnni256GroupedRows                                                              \
  }
const LowbitGemmKernels kLowbitAvxVnni = PQ_LOWBIT_VNNI256(avxvnni);
const LowbitGemmKernels kLowbitVnni256Evex = PQ_LOWBIT_VNNI256(vnni256_avx512);
const LowbitGemmKernels kLowbitAmx{64,
                                   PQ_X86(lowbit_tile4_amx),
                                   PQ_X86(lowbit_tile2_amx),
                                   PQ_X86(lowbit_epilogue_avx512),
                                   PQ_X86(lowbit_gemv_grouped4_avx512_2s),
                                   PQ_X86(lowbit_gemv_grouped2_avx512_2s),
                                   PQ_X86(lowbit_gemv_grouped_panel4_avx512_2s),
                                   PQ_X86(lowbit_gemv_grouped_panel2_avx512_2s),
                                   PQ_X86(lowbit_tile_grouped4_amx),
                                   PQ_X86(lowbit_tile_grouped2_amx)};
const LowbitGemmKernels kLowbitNeon{4, PQ_ARM(lowbit_tile4_neon), PQ_ARM(lowbit_tile2_neon),
                                    lowbit_epilogue_scalar, nullptr, nullptr, nullptr, nullptr,
                                    nullptr, nullptr};
const LowbitGemmKernels kLowbitScalar{4, lowbit_tile4_scalar, lowbit_tile2_scalar,
                                      lowbit_epilogue_scalar, nullptr, nullptr, nullptr, nullptr,
                                      nullptr, nullptr};

// (signed rows on AVX-512 VBMI: narrow tables, a one-row block included: the zmm decode tile)
const SparqKernels kSparqAvx512{PQ_X86(sparq_trim_row_avx512), PQ_X86(sparq24_compute_avx512),
                                PQ_X86(sparq_prep_row_avx512), PQ_X86(sparq24_tables_row_avx512),
                                PQ_X86(sparq24_compute_signed_avx512),
                                PQ_X86(sparq24_tables_row_signed_avx512), true};
// (AVX2: signed calls of 2-4 rows as words through the decode tile, two rows at a time: on Zen
// 4's AVX2 tier, QuantLinear 4096 -> 14336, 1.3-1.9x faster than the narrow rows tile there)
const SparqKernels kSparqAvx2{PQ_X86(sparq_trim_row_avx2), PQ_X86(sparq24_compute_rows_avx2),
                              PQ_X86(sparq_prep_row_avx2), PQ_X86(sparq24_tables_row_avx2),
                              PQ_X86(sparq24_compute_rows_signed_avx2),
                              PQ_X86(sparq24_tables_row_signed_avx2), false, 4};
// The AMD entries: a kernel set with the one-stream decode tiles (sparq.h) in place of its own
const SparqKernels kSparqAvx512OneStream =
    with_pair(kSparqAvx512, &SparqKernels::compute24, PQ_X86(sparq24_compute_avx512_one_stream),
              &SparqKernels::compute24_signed, PQ_X86(sparq24_compute_signed_avx512_one_stream));
const SparqKernels kSparqAvx2OneStream = with_pair(
    kSparqAvx2, &SparqKernels::compute24, PQ_X86(sparq24_compute_rows_avx2_one_stream),
    &SparqKernels::compute24_signed, PQ_X86(sparq24_compute_rows_signed_avx2_one_stream));
const SparqKernels kSparqAvxVnni{PQ_X86(sparq_trim_row_avx2), PQ_X86(sparq24_compute_rows_avxvnni),
                                 PQ_X86(sparq_prep_row_avx2), PQ_X86(sparq24_tables_row_avx2),
                                 PQ_X86(sparq24_compute_rows_signed_avxvnni),
                                 PQ_X86(sparq24_tables_row_signed_avx2)};
const SparqKernels kSparqVnni256Evex{PQ_X86(sparq_trim_row_avx2),
                                     PQ_X86(sparq24_compute_rows_vnni256_avx512),
                                     PQ_X86(sparq_prep_row_avx2),
                                     PQ_X86(sparq24_tables_row_avx2),
                                     PQ_X86(sparq24_compute_rows_signed_vnni256_avx512),
                                     PQ_X86(sparq24_tables_row_signed_avx2)};
const SparqKernels kSparqNeon{PQ_ARM(sparq_trim_row_neon), sparq24_compute_scalar,
                              sparq_prep_row_scalar, sparq24_tables_row, nullptr, nullptr};
const SparqKernels kSparqScalar{sparq_trim_row_scalar, sparq24_compute_scalar,
                                sparq_prep_row_scalar, sparq24_tables_row, nullptr, nullptr};

const BitpackKernels kPackAvx512{PQ_X86(pack_rows_avx512), PQ_X86(unpack_rows_avx512)};
const BitpackKernels kPackAvx2{PQ_X86(pack_rows_avx2), PQ_X86(unpack_rows_avx2)};
const BitpackKernels kPackNeon{PQ_ARM(pack_rows_neon), PQ_ARM(unpack_rows_neon)};
const BitpackKernels kPackScalar{pack_rows_scalar, unpack_rows_scalar};

const QuantizeRowsFn kQuantAvx512 = PQ_X86(quantize_rows_u8_avx512);
const QuantizeRowsFn kQuantAvx2 = PQ_X86(quantize_rows_u8_avx2);
const QuantizeRowsFn kQuantScalar = quantize_rows_u8_scalar;

// Rows per micro-tile, read from the struct the driver uses (one definition of each MR).
size_t mr_of(const Int8GemmKernels& k) { return k.mr; }
size_t mr_of(const LutKernelImpl& k) { return k.info.mr; }
size_t mr_of(const LowbitGemmKernels& k) { return k.mr; }
size_t mr_of(const SparqKernels&) { return 1; }
size_t mr_of(const BitpackKernels&) { return 1; }
size_t mr_of(const QuantizeRowsFn&) { return 1; }

template <class K>
KernelEntry entry(KernelFamily f, const char* name, Isa tier, FeatureMask features, size_t nr,
                  const K& impl, Verified verified, const char* description) {
  return {f, name, tier, features, mr_of(impl), nr, verified, description, isa_built(tier), &impl};
}

KernelEntry preferred_on(const char* vendor, KernelEntry e) {
  e.preferred_vendor = vendor;
  return e;
}

KernelEntry slower_on(const char* vendor, unsigned family, KernelEntry e) {
  e.slower_vendor = vendor;
  e.slower_family = family;
  return e;
}

using F = KernelFamily;
using V = Verified;
constexpr FeatureMask kVnni512 = kAvx512Base | feat::avx512vnni;
constexpr FeatureMask kVbmi = kAvx512Base | feat::avx512vbmi;

std::vector<KernelEntry> build_table() {
  return {
      // ---- int8_gemm: u8/s8 x s8 -> s32 on the shared [K/4][64][4] panels ----
      entry(F::int8_gemm, "amx_32x32", Isa::avx512, kVnni512 | feat::amx_int8, 32, kInt8Amx,
            V::native,
            "AMX tdpbusd: 2x2 tiles of 16 rows x 16 columns (weights loaded in place from the "
            "panels); 9-bit rows as positive and negative parts against each weight tile; "
            "row ranges under 8 rows: the zmm 6x64 kernel"),
      entry(F::int8_gemm, "avx512vnni_6x64", Isa::avx512, kVnni512, 64, kInt8Avx512, V::native,
            "6x64 zmm vpdpbusd register tile, K blocked; vectorized float epilogue; 9-bit "
            "rows (SPARQ's signs): the same tile with weights xor-ed by the rows' sign bytes"),
      entry(F::int8_gemm, "vnni256_evex_6x16", Isa::avx512, kVnni512, 16, kInt8Vnni256Evex,
            V::native,
            "the AVX-VNNI kernel's source in EVEX form (ymm vpdpbusd, AVX-512 VNNI + VL): "
            "6x16 tile + 1x64 GEMV (9-bit rows: 4x16 with sign-xor-ed weights); below the zmm "
            "kernel, here to test that source natively"),
      entry(F::int8_gemm, "avxvnni_6x16", Isa::avx2, kAvx2Base | feat::avxvnni, 16, kInt8AvxVnni,
            V::native,
            "6x16 ymm VEX vpdpbusd tile (exact, no int16 step) + 1x64 streaming GEMV; 9-bit "
            "rows: 4x16 with sign-xor-ed weights"),
      preferred_on("GenuineIntel",
                   entry(F::int8_gemm, "avx2_4x16", Isa::avx2, kAvx2Base, 16, kInt8Avx2Strips,
                         V::native,
                         "avx2_1x64's kernels with M > 16 in 16-row blocks of its M = 2-16 "
                         "schedule (4-row x 16-column vpmaddubsw tiles over 4 KiB L1 chunks), "
                         "the next chunk prefetched at every row count (2-3 rows: also to L2, "
                         "36 KiB ahead): ranked first on Intel CPUs, where it measured faster")),
      entry(F::int8_gemm, "avx2_1x64", Isa::avx2, kAvx2Base, 64, kInt8Avx2, V::native,
            "1x64 vpmaddubsw row tile streaming whole panels (K blocks kept in L2 for M > 16); "
            "M = 2-16: 4 KiB chunks x 16-column strips x 4-row tiles, every row beside the "
            "stream; exact: row blocks whose pairs (k, k+1) sum to <= 255 fast (7-bit rows, "
            "and SPARQ's 8-bit rows split into such rows + sparse fixes), others split a = "
            "2(a>>1) + (a&1); SPARQ's signed rows: |v| with the sign bytes xor-ed into the "
            "weights through the same tiles (split by the pair route too), or where too dense in "
            "large pairs a vpmaddwd int16 4x8 tile"),
      entry(F::int8_gemm, "neon_i8mm_8x8", Isa::neon, kNeonBase | feat::neon_i8mm, 8,
            kInt8NeonI8mm, V::qemu,
            "8x8 smmla tile (2x2 blocks of 8 k, weights zipped from two panel groups); "
            "odd last row on the sdot kernel"),
      entry(F::int8_gemm, "neon_dotprod_4x16", Isa::neon, kNeonBase, 16, kInt8Neon, V::qemu,
            "4x16 sdot register tile (+-128 offset)"),
      entry(F::int8_gemm, "scalar", Isa::scalar, 0, 64, kInt8Scalar, V::native,
            "portable loops over the packed panels"),

      // ---- lut_gemm: W2A2 lookup tables; a kind runs only codebooks it holds exactly ----
      entry(F::lut_gemm, "avx512vbmi_vpermb", Isa::avx512, kVbmi, 128, kLutVpermb, V::native,
            "vpermb 64-entry tables indexed by 3 weights (4 KiB per codebook) when "
            "3*(max-min product) <= 255; 3x128 tile"),
      entry(F::lut_gemm, "avx512vbmi_deepgemm", Isa::avx512, kVbmi, 64, kLutDeepAvx512,
            V::native,
            "DeepGEMM 16-entry vpshufb tables, 6x64 tile (its file holds the vpermb kernel too, "
            "so it needs VBMI)"),
      entry(F::lut_gemm, "avx2_pair", Isa::avx2, kAvx2Base, 64, kLutPair, V::native,
            "16-entry vpshufb tables indexed by two weights (2 products per byte) when the "
            "product spread is <= 127; weights unpacked once per K chunk into L1; 1 row x 64"),
      entry(F::lut_gemm, "avx2_deepgemm", Isa::avx2, kAvx2Base, 64, kLutDeepAvx2, V::native,
            "DeepGEMM 16-entry vpshufb tables, int8 -> int16 -> int32; 3x64 tile"),
      entry(F::lut_gemm, "neon_deepgemm", Isa::neon, kNeonBase, 64, kLutDeepNeon, V::qemu,
            "DeepGEMM 16-entry tbl (vqtbl1q_u8) tables; 4x64 tile"),
      entry(F::lut_gemm, "scalar", Isa::scalar, 0, 64, kLutScalar, V::native,
            "portable loops over the packed 2-bit panels"),

      // ---- lowbit_gemm: W4A8 / W2A8 ----
      entry(F::lowbit_gemm, "amx_64x64", Isa::avx512, kVnni512 | feat::amx_int8, 64, kLowbitAmx,
            V::native,
            "16+ rows: codes unpacked to int8 B tiles per K block, AMX tdpbusd (tdpbsud for "
            "int8 rows) per 16x16 C tile; grouped: signed codes, each group folded into "
            "registers; fewer rows and decode: the zmm 6x64 kernel"),
      // Zen 4 (family 25): the grouped tile ran 1.08-1.14x slower than the plain one there
      // (4096 -> 14336, M = 8-512; 48th session): there GF2P8AFFINEQB takes a vpdpbusd slot
      // each (49th session, docs/notes/lowbit_gemm.md)
      slower_on("AuthenticAMD", 25,
                entry(F::lowbit_gemm, "avx512vnni_gfni_6x64", Isa::avx512,
                      kVnni512 | feat::gfni, 64, kLowbitAvx512Gfni, V::native,
                      "the 6x64 kernel below with its grouped tile's codes unpacked signed by "
                      "GFNI (one affine per operand, no offset subtract per group); ranked "
                      "after it on AMD family 25 (Zen 4), where it measured slower")),
      entry(F::lowbit_gemm, "avx512vnni_6x64", Isa::avx512, kVnni512, 64, kLowbitAvx512,
            V::native,
            "6x64 vpdpbusd tile (grouped: group scales folded from registers) + 1-row grouped "
            "GEMV, codes unpacked in registers"),
      entry(F::lowbit_gemm, "vnni256_evex_6x16", Isa::avx512, kVnni512, 16, kLowbitVnni256Evex,
            V::native,
            "the AVX-VNNI kernel's source in EVEX form (ymm vpdpbusd, AVX-512 VNNI + VL); below "
            "the zmm kernel, here to test that source natively"),
      entry(F::lowbit_gemm, "avxvnni_6x16", Isa::avx2, kAvx2Base | feat::avxvnni, 16,
            kLowbitAvxVnni, V::native,
            "6x16 ymm VEX vpdpbusd tile per 16-column quarter (grouped: scales folded per "
            "group); decode GEMVs of its own (W2 codes masked in place, two K streams; int8 "
            "rows of the grouped GEMV: the AVX2 kernel's); codes unpacked in registers"),
      preferred_on("AuthenticAMD",
                   entry(F::lowbit_gemm, "avx2_2x64_l1_prefetch", Isa::avx2, kAvx2Base, 64,
                         kLowbitAvx2L1Prefetch, V::native,
                         "avx2_2x64's kernels with its grouped decode GEMV prefetching the codes "
                         "into L1 only: ranked first on AMD CPUs, where it measured faster (the "
                         "L2 prefetch is for Intel's)")),
      entry(F::lowbit_gemm, "avx2_2x64", Isa::avx2, kAvx2Base, 64, kLowbitAvx2, V::native,
            "2x32 (x2) vpmaddubsw tile (exact: one operand <= 15), codes unpacked in registers; "
            "grouped forward at 3+ rows: codes unpacked once per 24 rows, 3 rows per pass"),
      entry(F::lowbit_gemm, "neon_dotprod_4x64", Isa::neon, kNeonBase, 64, kLowbitNeon, V::qemu,
            "udot/sdot 1x64 rows (4 per call), codes unpacked in registers"),
      entry(F::lowbit_gemm, "scalar", Isa::scalar, 0, 64, kLowbitScalar, V::native,
            "portable loops over the packed panels"),

      // ---- sparq_gemm: SPARQ activation trimming (the GEMM runs the int8_gemm kernel) ----
      preferred_on("AuthenticAMD",
                   entry(F::sparq_gemm, "avx512vbmi_one_stream", Isa::avx512,
                         kVbmi | feat::avx512vnni, 64, kSparqAvx512OneStream, V::native,
                         "avx512vbmi's kernels with its 2:4 decode tiles (one row, and batches "
                         "up to 8 rows) reading a panel as one stream, the one-row tile "
                         "prefetching into L2 at two distances (a signed row with few high "
                         "groups: its low pass, then those groups' pairs): ranked first on AMD "
                         "CPUs, where it measured faster")),
      entry(F::sparq_gemm, "avx512vbmi", Isa::avx512, kVbmi | feat::avx512vnni, 64, kSparqAvx512,
            V::native,
            "256-entry vpermi2b trim tables, zero-partner select by mask; 64 values per step "
            "(the forward's row preparation too); "
            "2:4 (sparse24): vpermb of two k groups' selector tables + vpdpbusd, 8x32 tile "
            "(signed rows: narrow tables, l + 128 through that tile less 128 x the column sums, "
            "then the high groups' pairs); one row: a decode tile, two masked vpermb straight into "
            "the values' byte layout + two vpdpbusd per group (signed: narrow, high part in the "
            "same pass); the selector tables (sign split "
            "and narrow tables in the same pass) by VBMI lookups + vpermb"),
      entry(F::sparq_gemm, "vnni256_evex", Isa::avx512, kVnni512, 32, kSparqVnni256Evex,
            V::native,
            "the AVX-VNNI entry in EVEX form (ymm vpdpbusd, AVX-512 VNNI + VL): the kernel of "
            "AVX-512 VNNI CPUs without VBMI (Cascade Lake); below the zmm kernel elsewhere, "
            "here to test that source natively; its signed rows: EVEX ymm vpdpwssd"),
      entry(F::sparq_gemm, "avxvnni", Isa::avx2, kAvx2Base | feat::avxvnni, 32, kSparqAvxVnni,
            V::native,
            "the AVX2 trim; 2:4 (sparse24): decode as AVX2, more rows: 2x32 tile over expanded "
            "weight blocks, per 8 columns and two k groups two vpshufb of the rows' tables + one "
            "VEX vpdpbusd; signed rows in one pass, VEX vpdpwssd: narrow tables (one vpshufb of "
            "the low 7 bits, then the high groups), or the parts' words subtracted"),
      preferred_on("AuthenticAMD",
                   entry(F::sparq_gemm, "avx2_one_stream", Isa::avx2, kAvx2Base, 32,
                         kSparqAvx2OneStream, V::native,
                         "avx2's kernels with its 2:4 decode tiles (one and two rows) reading a "
                         "panel as one stream: ranked first on AMD CPUs, where it measured "
                         "faster (on AMD CPUs with AVX-VNNI, Zen 5, the avxvnni entry ranks "
                         "above it, its decode tile multi-stream: not measured there)")),
      entry(F::sparq_gemm, "avx2", Isa::avx2, kAvx2Base, 32, kSparqAvx2, V::native,
            "nibble-vpshufb leading one + 16-entry window tables; 32 values per step; "
            "2:4 (sparse24): decode: 1x32 streaming tile, vpshufb of per-row selector tables, "
            "vpmaddwd (signed rows, up to 4 per call, as int16 words: low and high bytes looked "
            "up); more rows: 2x32 tile over expanded weight blocks (vpshufb + vpmaddwd; "
            "signed rows in one pass: narrow tables (one vpshufb of the low 7 bits in the word's "
            "high byte, then the high groups), or the parts' words subtracted); selector tables "
            "(and a signed row's sign split and narrow tables): 32 activations' two trims, placed "
            "by vpshufb + blend"),
      entry(F::sparq_gemm, "neon", Isa::neon, kNeonBase, 16, kSparqNeon, V::qemu,
            "tbl leading one + window tables; 16 values per step; 2:4 (sparse24): scalar loops"),
      entry(F::sparq_gemm, "scalar", Isa::scalar, 0, 1, kSparqScalar, V::native,
            "arithmetic reference trim; 2:4 (sparse24): loops over the selector tables"),

      // ---- pack: canonical 1/2/4-bit pack and unpack ----
      entry(F::pack, "avx512", Isa::avx512, kAvx512Base, 64, kPackAvx512, V::native,
            "64 codes per step (vpmaddubsw/vpmovwb, mask registers for 1-bit)"),
      entry(F::pack, "avx2", Isa::avx2, kAvx2Base, 32, kPackAvx2, V::native, "32 codes per step"),
      entry(F::pack, "neon", Isa::neon, kNeonBase, 16, kPackNeon, V::qemu, "16 codes per step"),
      entry(F::pack, "scalar", Isa::scalar, 0, 1, kPackScalar, V::native, "bit loops"),

      // ---- quantize: dynamic per-row float -> uint8 (Int8Config's activations) ----
      entry(F::quantize, "avx512", Isa::avx512, kAvx512Base, 16, kQuantAvx512, V::native,
            "16 floats per step, masked tails"),
      entry(F::quantize, "avx2", Isa::avx2, kAvx2Base, 8, kQuantAvx2, V::native,
            "two passes (min/max, quantize) over each row, 8 floats per step"),
      entry(F::quantize, "scalar", Isa::scalar, 0, 1, kQuantScalar, V::native,
            "portable loop (the same float operations)"),
  };
}

// Per family and tier: the candidates for this CPU, computed once.
struct Selection {
  std::array<std::array<std::vector<const KernelEntry*>, 4>, kNumFamilies> lists;
  Selection() {
    for (size_t f = 0; f < kNumFamilies; ++f)
      for (int t = 0; t < 4; ++t)
        lists[f][t] = select_kernels(static_cast<KernelFamily>(f), cpu_features().mask,
                                     static_cast<Isa>(t), cpu_features().vendor,
                                     cpu_features().family);
  }
};
const Selection& selection() {
  static const Selection s;
  return s;
}

const KernelEntry* g_forced[kNumFamilies] = {};

}  // namespace

const char* family_name(KernelFamily f) {
  switch (f) {
    case KernelFamily::int8_gemm: return "int8_gemm";
    case KernelFamily::lut_gemm: return "lut_gemm";
    case KernelFamily::lowbit_gemm: return "lowbit_gemm";
    case KernelFamily::sparq_gemm: return "sparq_gemm";
    case KernelFamily::pack: return "pack";
    case KernelFamily::quantize: return "quantize";
    case KernelFamily::count: break;
  }
  return "unknown";
}

const char* verified_name(Verified v) {
  switch (v) {
    case Verified::native: return "native";
    case Verified::qemu: return "qemu";
    case Verified::not_run: return "not run";
  }
  return "unknown";
}

const std::vector<KernelEntry>& kernel_table() {
  static const std::vector<KernelEntry> table = build_table();
  return table;
}

bool kernel_runs(const KernelEntry& e, FeatureMask cpu, Isa ceiling, bool require_built) {
  return (e.built || !require_built) && (cpu & e.features) == e.features &&
         tier_within(e.tier, ceiling);
}

std::vector<const KernelEntry*> select_kernels(KernelFamily f, FeatureMask cpu, Isa ceiling,
                                               const std::string& vendor, unsigned cpu_family,
                                               bool require_built) {
  std::vector<const KernelEntry*> out;
  for (const KernelEntry& e : kernel_table())
    if (e.family == f && kernel_runs(e, cpu, ceiling, require_built)) out.push_back(&e);
  // another vendor's tuned entries, and entries measured slower on this CPU family, after the
  // rest, but before the scalar entry (last in order)
  if (out.size() > 1)
    std::stable_partition(out.begin(), out.end() - 1, [&](const KernelEntry* e) {
      const bool other_vendors = e->preferred_vendor && vendor != e->preferred_vendor;
      const bool slower_here = e->slower_vendor && vendor == e->slower_vendor &&
                               cpu_family == e->slower_family;
      return !other_vendors && !slower_here;
    });
  return out;
}

KernelList active_kernels(KernelFamily f, Isa isa) {
  const size_t i = static_cast<size_t>(f);
  if (g_forced[i]) return {&g_forced[i], 1};
  const std::vector<const KernelEntry*>& list = selection().lists[i][static_cast<int>(isa)];
  return {list.data(), list.size()};
}

const KernelEntry& active_kernel(KernelFamily f, Isa isa) {
  return **active_kernels(f, isa).begin();
}

void force_kernel(KernelFamily f, const KernelEntry* e) { g_forced[static_cast<size_t>(f)] = e; }

const KernelEntry* forced_kernel(KernelFamily f) { return g_forced[static_cast<size_t>(f)]; }

}  // namespace pq
