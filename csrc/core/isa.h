// CPU features, instruction-set tiers and the process-wide tier choice.
//
// A tier (scalar, avx2, avx512, neon) is a ceiling, not a kernel: each kernel declares the CPU
// features it needs in csrc/core/kernel_table.cc and dispatch picks, per kernel family, the best
// kernel whose features the CPU has and whose tier is at or below the active one. A tier is
// available when the CPU has its baseline features (e.g. avx512 = F/BW/DQ/VL, not VNNI or VBMI).
// The active tier is chosen once, at module import, from CPUID + XGETBV (or HWCAP on AArch64) and
// the PYQUANT_ISA environment variable. Tests may switch it with set_active_isa(). Features named
// in PYQUANT_DISABLE (comma-separated) count as absent.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pq {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

// Every CPU feature a kernel may require, one bit each (the names are the keys of
// _C.cpu_features() and of the kernel table's "features" lists).
#define PQ_CPU_FEATURES(X)                                                                  \
  X(avx2) X(fma) X(bmi2) X(f16c) X(avx512f) X(avx512bw) X(avx512dq) X(avx512vl) X(avx512vnni) \
  X(avx512vbmi) X(avx512vpopcntdq) X(avx512bitalg) X(gfni) X(avxvnni) X(amx_int8) X(neon)     \
  X(neon_dotprod) X(neon_i8mm)

enum class Feature : int {
#define PQ_FEATURE_ENUM(name) name,
  PQ_CPU_FEATURES(PQ_FEATURE_ENUM)
#undef PQ_FEATURE_ENUM
  count
};
using FeatureMask = uint32_t;
constexpr FeatureMask feature_bit(Feature f) { return FeatureMask{1} << static_cast<int>(f); }
const char* feature_name(Feature f);
// Parses a feature name; false for an unknown one.
bool parse_feature(const std::string& name, Feature* out);

// Short names for kernel-table lines: feat::avx512vnni etc.
namespace feat {
#define PQ_FEATURE_CONST(name) constexpr FeatureMask name = feature_bit(Feature::name);
PQ_CPU_FEATURES(PQ_FEATURE_CONST)
#undef PQ_FEATURE_CONST
}  // namespace feat

// What every kernel of a tier may use (the flags of its plain suffix, csrc/core/isa_flags.txt).
constexpr FeatureMask kAvx2Base = feat::avx2 | feat::fma | feat::bmi2 | feat::f16c;
constexpr FeatureMask kAvx512Base =
    kAvx2Base | feat::avx512f | feat::avx512bw | feat::avx512dq | feat::avx512vl;
constexpr FeatureMask kNeonBase = feat::neon | feat::neon_dotprod;
FeatureMask tier_baseline(Isa isa);
// True if kernels of `tier` may run when `ceiling` is the active tier (scalar < avx2 < avx512;
// scalar < neon).
bool tier_within(Isa tier, Isa ceiling);

struct CpuFeatures {
  FeatureMask mask = 0;  // detected features whose register state the OS saves
  bool os_avx = false, os_avx512 = false;  // XGETBV: the OS saves the YMM / ZMM state
  std::string vendor, brand;
  unsigned family = 0;  // x86 display family (base + extended): 25 = AMD Zen 3/4, 26 = Zen 5
  bool has(Feature f) const { return (mask & feature_bit(f)) != 0; }
};

const CpuFeatures& cpu_features();
// True if this build contains code for `isa` (x86 tiers on x86-64, neon on AArch64).
bool isa_built(Isa isa);
// Tiers this CPU (and this build) can run, best last.
std::vector<Isa> available_isas();
bool isa_available(Isa isa);
const char* isa_name(Isa isa);
// Parses "scalar" | "avx2" | "avx512" | "neon"; returns false for an unknown name.
bool parse_isa(const std::string& name, Isa* out);

Isa active_isa();
void set_active_isa(Isa isa);  // precondition: isa_available(isa)

}  // namespace pq
