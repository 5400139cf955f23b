// The kernel table: one entry per micro-kernel variant, the only place that says which kernels
// exist, what CPU features each needs, its tile shape and how it was verified. Dispatch (once per
// tier, cached), `python -m pyquant info`, the tests and the benchmarks all read it
// (_C.kernel_table()).
//
// Selection: for a family, the first entry in table order (entries are listed best first) that
// is compiled into this build, whose required features the CPU has and whose tier is at or below
// the active tier (PYQUANT_ISA). A kernel whose extra features are missing falls back to the next
// entry of its family, down to the scalar one every family has. An entry tuned for one CPU
// vendor (`preferred_vendor`, measured faster there only) runs everywhere (tests, forcing) but
// is ranked after the others on other vendors' CPUs; one measured slower on one CPU family
// (`slower_vendor`, `slower_family`) is ranked after the others there.
//
// Adding an ISA path: one kernel file (its suffix picks the compiler flags, csrc/core/
// isa_flags.txt), its declaration in the family header and one entry in kernel_table.cc.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/isa.h"

namespace pq {

enum class KernelFamily : int { int8_gemm, lut_gemm, lowbit_gemm, sparq_gemm, pack, quantize, count };
constexpr size_t kNumFamilies = static_cast<size_t>(KernelFamily::count);
const char* family_name(KernelFamily f);

// How the kernel's bit-exact tests have been run (by the people who wrote it, on any machine).
enum class Verified : int {
  native,   // on a CPU that has the features
  qemu,     // only under emulation (qemu-aarch64 -cpu max)
  not_run,  // written and compiled, never executed
};
const char* verified_name(Verified v);

struct KernelEntry {
  KernelFamily family;
  const char* name;       // unique within the family
  Isa tier;               // the PYQUANT_ISA level it belongs to
  FeatureMask features;   // every CPU feature its code may use (its file's compiler flags)
  size_t mr, nr;          // micro-tile rows x columns (mr is what the driver splits M by)
  Verified verified;
  const char* description;
  bool built;             // compiled into this build (x86 kernels on x86-64, NEON on AArch64)
  const void* impl;       // the family's kernel struct (Int8GemmKernels, LutKernelImpl, ...)
  const char* preferred_vendor = nullptr;  // CPUID vendor it is ranked first on; nullptr: any
  const char* slower_vendor = nullptr;     // with slower_family: the CPUs it is ranked last on
  unsigned slower_family = 0;
};

const std::vector<KernelEntry>& kernel_table();

// Pure: can `e` run on a CPU with features `cpu` under the tier ceiling `ceiling`?
// (require_built = false: as if this build held every architecture's kernels, to show what a
// CPU of another architecture would select.)
bool kernel_runs(const KernelEntry& e, FeatureMask cpu, Isa ceiling, bool require_built = true);
// Pure: the family's entries that run on (`cpu`, `ceiling`), best first for a CPU of `vendor`
// and x86 `cpu_family` (never empty: the scalar entry always runs).
std::vector<const KernelEntry*> select_kernels(KernelFamily f, FeatureMask cpu, Isa ceiling,
                                               const std::string& vendor, unsigned cpu_family,
                                               bool require_built = true);

// This process: the candidates for `family` on tier `isa` with this CPU's features (computed
// once), or only the kernel forced by force_kernel().
struct KernelList {
  const KernelEntry* const* data;
  size_t size;
  const KernelEntry* const* begin() const { return data; }
  const KernelEntry* const* end() const { return data + size; }
};
KernelList active_kernels(KernelFamily f, Isa isa);
const KernelEntry& active_kernel(KernelFamily f, Isa isa);
template <class T>
const T& active_impl(KernelFamily f, Isa isa) {
  return *static_cast<const T*>(active_kernel(f, isa).impl);
}

// Tests and benchmarks: run `family` on `e` (which must be built and supported by this CPU, or be
// a test-only entry) whatever the tier, until force_kernel(f, nullptr). Not thread-safe: call it
// while no kernel runs, as set_active_isa().
void force_kernel(KernelFamily f, const KernelEntry* e);
const KernelEntry* forced_kernel(KernelFamily f);

}  // namespace pq
