// Stand-alone C++ test driver: every compiled SIMD path against the scalar path and an int64
// oracle, without Python. Built by scripts/neon-qemu.sh for aarch64 (run under qemu-aarch64) and
// usable natively. Prints one line per failure and a closing "N passed, N failed" line.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bitpack/bitpack.h"
#include "core/isa.h"
#include "core/kernel_table.h"
#include "core/macros.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "tools/test_registry.h"

namespace pq {
#if defined(PQ_HAVE_X86)
// csrc/tools/int8_vnni256_emu_avx2.cc: the ymm VNNI kernel with vpdpbusd emulated in AVX2
void int8_compute_vnni256_emulated(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                   size_t p1);
void int8_compute_wide_vnni256_emulated(const Int8GemmProblem& p, size_t m0, size_t m1, size_t p0,
                                        size_t p1);
void int8_add_fixes_vnni256_emulated(const int8_t* panel_b, const Int8GroupFix* fixes,
                                     size_t count, int32_t* c, size_t nc);
// csrc/tools/lowbit_vnni256_emu_avx2.cc: the ymm VNNI low-bit kernel, vpdpbusd emulated
PQ_LOWBIT_TILES_DECLARE(vnni256_emulated)
PQ_LOWBIT_GEMV_PANEL_DECLARE(vnni256_emulated)
#endif
// csrc/tools/int8_wide_native_test.cc: compute_wide of the active int8 kernel vs an oracle
void int8_wide_sweep(Isa isa, TestCounter& t);
// csrc/tools/lowbit_native_test.cc: lowbit_gemm of the active kernel vs an oracle and scalar
void lowbit_sweep(Isa isa, TestCounter& t);
namespace {

std::mt19937_64 rng(20261121);

void test_bitpack(Isa isa, TestCounter& t) {
  const BitpackKernels& k = bitpack_kernels(isa);
  const BitpackKernels& ref = bitpack_kernels(Isa::scalar);
  for (int bits : {1, 2, 4})
    for (bool sign : {false, true})
      for (size_t n : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000}) {
        const size_t rows = 3, bytes = packed_row_bytes(n, bits);
        std::vector<uint8_t> codes(rows * n), p1(rows * bytes), p2(rows * bytes);
        for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
        k.pack(codes.data(), p1.data(), rows, n, bits);
        ref.pack(codes.data(), p2.data(), rows, n, bits);
        t.check(p1 == p2, "pack bits=" + std::to_string(bits) + " n=" + std::to_string(n));
        std::vector<uint8_t> u1(rows * n), u2(rows * n);
        k.unpack(p1.data(), u1.data(), rows, n, bits, sign);
        ref.unpack(p1.data(), u2.data(), rows, n, bits, sign);
        t.check(u1 == u2, "unpack bits=" + std::to_string(bits) + " n=" + std::to_string(n));
      }
}

// int8_gemm on `isa` (whatever int8 kernel is active or forced) against an int64 oracle.
// `m_values`: the row counts swept (every micro-tile edge of the kernels under test).
void int8_sweep(Isa isa, TestCounter& t, const std::vector<size_t>& m_values) {
  struct Shape { size_t m, n, k; };
  std::vector<Shape> shapes;
  for (size_t m : m_values)
    for (Shape s : {Shape{0, 1, 1}, Shape{0, 17, 3}, Shape{0, 64, 64}, Shape{0, 65, 1025}, Shape{0, 130, 7}})
      shapes.push_back({m, s.n, s.k});
  shapes.push_back({9, 200, 4096});
  shapes.push_back({17, 130, 2100});  // K blocks of 256 groups (ymm VNNI, NEON) + a tail of 13
  shapes.push_back({7, 70, 8200});    // K blocks of 1024 groups + a tail of 2
  shapes.push_back({150, 70, 8200});  // AMX: rows split into chunks that fit L2
  for (const Shape& s : shapes)
    for (bool a_signed : {false, true})
      for (int extreme = 0; extreme < 2; ++extreme) {
        std::vector<uint8_t> a(s.m * s.k);
        std::vector<int8_t> w(s.n * s.k);
        for (auto& x : a) x = extreme ? (a_signed ? 0x80 : 0xff) : static_cast<uint8_t>(rng());
        for (auto& x : w) x = extreme ? -128 : static_cast<int8_t>(rng());
        std::vector<uint8_t> packed(int8_packed_bytes(s.n, s.k));
        int8_pack_weights(w.data(), s.n, s.k, PackedOp::int8_gemm, 0, packed.data());
        PackedHeader h;
        std::memcpy(&h, packed.data(), sizeof h);
        std::vector<int32_t> c(s.m * s.n, 12345);
        int8_gemm_run(a.data(), s.m, s.k, s.k, a_signed,
                      reinterpret_cast<const int8_t*>(packed.data() + h.data_offset),
                      reinterpret_cast<const int32_t*>(packed.data() + h.aux_offset), s.n,
                      c.data(), 2, isa);
        bool ok = true;
        for (size_t i = 0; i < s.m && ok; ++i)
          for (size_t j = 0; j < s.n && ok; ++j) {
            int64_t acc = 0;
            for (size_t kk = 0; kk < s.k; ++kk) {
              const int64_t av = a_signed ? static_cast<int8_t>(a[i * s.k + kk]) : a[i * s.k + kk];
              acc += av * w[j * s.k + kk];
            }
            ok = static_cast<int32_t>(acc) == c[i * s.n + j];
          }
        t.check(ok, "int8_gemm " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                        std::to_string(s.k) + (a_signed ? " s8" : " u8") + (extreme ? " extreme" : ""));
      }
}

void test_int8_gemm(Isa isa, TestCounter& t) { int8_sweep(isa, t, {1, 2, 3, 4, 5, 7}); }

#if defined(PQ_HAVE_X86)
const Int8GemmKernels kVnni256Emulated{Int8AFormat::u8, 6, int8_compute_vnni256_emulated, 8,
                                       int8_compute_wide_vnni256_emulated,
                                       Int8WideFormat::sign_xor, 0, 0, 0, nullptr, 0, nullptr,
                                       int8_add_fixes_vnni256_emulated, nullptr, 0.035f};
const KernelEntry kVnni256EmulatedEntry{
    KernelFamily::int8_gemm, "vnni256_emulated_avx2", Isa::avx2, kAvx2Base, 6, 16,
    Verified::native, "test only: the ymm VNNI kernel source, vpdpbusd emulated in AVX2", true,
    &kVnni256Emulated};
const LowbitGemmKernels kLowbitVnni256Emulated{
    6, lowbit_tile4_vnni256_emulated, lowbit_tile2_vnni256_emulated, lowbit_epilogue_avx2,
    nullptr, nullptr, lowbit_gemv_grouped_panel4_vnni256_emulated,
    lowbit_gemv_grouped_panel2_vnni256_emulated, lowbit_tile_grouped4_vnni256_emulated,
    lowbit_tile_grouped2_vnni256_emulated, kLowbitVnni256GroupedRows};
const KernelEntry kLowbitVnni256EmulatedEntry{
    KernelFamily::lowbit_gemm, "vnni256_emulated_avx2", Isa::avx2, kAvx2Base, 6, 16,
    Verified::native, "test only: the ymm VNNI low-bit kernel source, vpdpbusd emulated in AVX2",
    true, &kLowbitVnni256Emulated};
#endif

// Kernels built only into this driver (not dispatched): sources whose real instruction this CPU
// or qemu cannot run, with that instruction emulated.
std::vector<const KernelEntry*> test_only_kernels() {
#if defined(PQ_HAVE_X86)
  if ((cpu_features().mask & kAvx2Base) == kAvx2Base)
    return {&kVnni256EmulatedEntry, &kLowbitVnni256EmulatedEntry};
#endif
  return {};
}

// The per-kernel checks of a family whose every kernel is forced in turn.
void sweep_forced(KernelFamily family, Isa tier, TestCounter& t) {
  if (family == KernelFamily::int8_gemm) {
    int8_sweep(tier, t, {1, 2, 3, 5, 6, 7, 8, 9, 13, 16, 17, 31, 33, 48});
    int8_wide_sweep(tier, t);
  } else {
    lowbit_sweep(tier, t);
  }
}

PQ_REGISTER_NATIVE_TEST(bitpack, test_bitpack);
PQ_REGISTER_NATIVE_TEST(int8_gemm, test_int8_gemm);

}  // namespace
}  // namespace pq

int main(int argc, char** argv) {
  using namespace pq;
  std::vector<Isa> isas = available_isas();
  if (argc > 1) {
    Isa only;
    if (!parse_isa(argv[1], &only) || !isa_available(only)) {
      std::fprintf(stderr, "unknown or unavailable ISA '%s'\n", argv[1]);
      return 2;
    }
    isas = {only};
  }
  TestCounter total;
  for (Isa isa : isas) {
    for (const NativeTest& test : native_tests()) {
      TestCounter t;
      t.prefix = std::string(isa_name(isa)) + "/" + test.name + ": ";
      test.fn(isa, t);
      std::printf("%-8s %-16s %zu passed, %zu failed\n", isa_name(isa), test.name, t.passed, t.failed);
      total.passed += t.passed;
      total.failed += t.failed;
    }
  }
  // Every int8 and lowbit kernel of the table this CPU runs (not only each tier's best), forced
  // in turn, plus test-only builds; M covers every tile edge (MR 2, 3, 4, 6, 8).
  for (KernelFamily family : {KernelFamily::int8_gemm, KernelFamily::lowbit_gemm}) {
    std::vector<const KernelEntry*> kernels;
    for (const KernelEntry& e : kernel_table())
      if (e.family == family && e.built && (cpu_features().mask & e.features) == e.features)
        kernels.push_back(&e);
    for (const KernelEntry* e : test_only_kernels())
      if (e->family == family) kernels.push_back(e);
    for (const KernelEntry& e : kernel_table())
      if (e.family == family && e.built && (cpu_features().mask & e.features) != e.features)
        std::printf("kernel   %-34s skipped (this CPU lacks its features)\n", e.name);
    for (const KernelEntry* e : kernels) {
      if (argc > 1 && !tier_within(e->tier, isas.front())) continue;
      TestCounter t;
      const std::string name = std::string(family_name(family)) + "/" + e->name;
      t.prefix = "kernel " + name + ": ";
      force_kernel(family, e);
      sweep_forced(family, e->tier, t);
      force_kernel(family, nullptr);
      std::printf("kernel   %-34s %zu passed, %zu failed\n", name.c_str(), t.passed, t.failed);
      total.passed += t.passed;
      total.failed += t.failed;
    }
  }
  std::printf("%zu passed, %zu failed\n", total.passed, total.failed);
  return total.failed == 0 ? 0 : 1;
}
