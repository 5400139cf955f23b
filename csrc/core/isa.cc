#include "core/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(PQ_HAVE_X86)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif
#if defined(PQ_HAVE_NEON) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace pq {
namespace {

constexpr const char* kFeatureNames[] = {
#define PQ_FEATURE_NAME(name) #name,
    PQ_CPU_FEATURES(PQ_FEATURE_NAME)
#undef PQ_FEATURE_NAME
};
static_assert(sizeof(kFeatureNames) / sizeof(kFeatureNames[0]) ==
                  static_cast<size_t>(Feature::count),
              "one name per feature");
static_assert(static_cast<int>(Feature::count) <= 32, "FeatureMask has 32 bits");

#if defined(PQ_HAVE_X86)
unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

// AMX tile data is a dynamically enabled state on Linux (5.16+): a process must ask for it once
// before its first tile instruction, or that instruction faults. The grant covers every thread.
bool request_amx_state() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned int a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned int max_leaf = a;
  char vendor[13] = {0};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;

  FeatureMask m = 0;
  auto set = [&m](Feature feature, bool on) {
    if (on) m |= feature_bit(feature);
  };
  __get_cpuid(1, &a, &b, &c, &d);
  const unsigned base_family = (a >> 8) & 0xf;
  f.family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
  const bool osxsave = c & (1u << 27);
  const bool avx = c & (1u << 28);
  if (osxsave && avx) {
    const unsigned long long xcr0 = read_xcr0();
    f.os_avx = (xcr0 & 0x6) == 0x6;                   // XMM and YMM state
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  }
  // VEX-encoded features count only when the OS saves the YMM state, EVEX ones the ZMM state.
  const bool y = f.os_avx, z = f.os_avx512;
  set(Feature::fma, (c & (1u << 12)) && y);
  set(Feature::f16c, (c & (1u << 29)) && y);
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned int max_subleaf = a;
    set(Feature::avx2, (b & (1u << 5)) && y);
    set(Feature::bmi2, b & (1u << 8));
    set(Feature::avx512f, (b & (1u << 16)) && z);
    set(Feature::avx512dq, (b & (1u << 17)) && z);
    set(Feature::avx512bw, (b & (1u << 30)) && z);
    set(Feature::avx512vl, (b & (1u << 31)) && z);
    set(Feature::avx512vbmi, (c & (1u << 1)) && z);
    set(Feature::avx512vnni, (c & (1u << 11)) && z);
    set(Feature::avx512bitalg, (c & (1u << 12)) && z);
    set(Feature::avx512vpopcntdq, (c & (1u << 14)) && z);
    set(Feature::gfni, c & (1u << 8));  // the kernels using it also declare their vector tier
    // AMX-TILE and AMX-INT8, the OS saving XTILECFG + XTILEDATA (XCR0 bits 17, 18), granted
    const bool amx = (d & (1u << 24)) && (d & (1u << 25)) && osxsave && avx &&
                     (read_xcr0() & 0x60000) == 0x60000;
    set(Feature::amx_int8, amx && z && request_amx_state());
    if (max_subleaf >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      set(Feature::avxvnni, (a & (1u << 4)) && y);  // VEX vpdpbusd (Alder Lake, Zen 5)
    }
  }
  f.mask = m;
  __get_cpuid(0x80000000, &a, &b, &c, &d);
  if (a >= 0x80000004) {
    char brand[49] = {0};
    for (unsigned int leaf = 0; leaf < 3; ++leaf) {
      __get_cpuid(0x80000002 + leaf, &a, &b, &c, &d);
      std::memcpy(brand + 16 * leaf, &a, 4);
      std::memcpy(brand + 16 * leaf + 4, &b, 4);
      std::memcpy(brand + 16 * leaf + 8, &c, 4);
      std::memcpy(brand + 16 * leaf + 12, &d, 4);
    }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  }
  return f;
}
#elif defined(PQ_HAVE_NEON)
CpuFeatures detect() {
  CpuFeatures f;
  f.mask = feature_bit(Feature::neon);  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  if (hwcap & (1ul << 20)) f.mask |= feature_bit(Feature::neon_dotprod);  // HWCAP_ASIMDDP
  if (hwcap2 & (1ul << 13)) f.mask |= feature_bit(Feature::neon_i8mm);    // HWCAP2_I8MM
#endif
  f.vendor = "arm";
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

std::atomic<int> g_active{-1};

}  // namespace

const char* feature_name(Feature f) {
  const int i = static_cast<int>(f);
  return i >= 0 && i < static_cast<int>(Feature::count) ? kFeatureNames[i] : "unknown";
}

bool parse_feature(const std::string& name, Feature* out) {
  for (int i = 0; i < static_cast<int>(Feature::count); ++i) {
    if (name == kFeatureNames[i]) {
      *out = static_cast<Feature>(i);
      return true;
    }
  }
  return false;
}

FeatureMask tier_baseline(Isa isa) {
  switch (isa) {
    case Isa::scalar: return 0;
    case Isa::avx2: return kAvx2Base;
    case Isa::avx512: return kAvx512Base;
    case Isa::neon: return kNeonBase;
  }
  return ~FeatureMask{0};
}

bool tier_within(Isa tier, Isa ceiling) {
  if (tier == Isa::scalar) return true;
  if (tier == Isa::neon || ceiling == Isa::neon) return tier == ceiling;
  return static_cast<int>(tier) <= static_cast<int>(ceiling);  // avx2 <= avx512
}

// PYQUANT_DISABLE=name[,name...]: CPU features treated as absent, so this CPU runs the kernels a
// lesser one would (e.g. avxvnni with PYQUANT_ISA=avx2: an AVX2-only CPU's kernels; amx_int8:
// an AVX-512 VNNI CPU's). Unknown names are skipped here; pyquant's loader refuses them.
FeatureMask disabled_features() {
  const char* env = std::getenv("PYQUANT_DISABLE");
  FeatureMask mask = 0;
  std::string name;
  for (const char* p = env ? env : ""; ; ++p) {
    if (*p == ',' || *p == '\0') {
      Feature f;
      if (parse_feature(name, &f)) mask |= feature_bit(f);
      name.clear();
      if (*p == '\0') break;
    } else if (*p != ' ') {
      name += *p;
    }
  }
  return mask;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f = detect();
    f.mask &= ~disabled_features();
    return f;
  }();
  return features;
}

bool isa_built(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
#if defined(PQ_HAVE_X86)
    case Isa::avx2:
    case Isa::avx512: return true;
#endif
#if defined(PQ_HAVE_NEON)
    case Isa::neon: return true;
#endif
    default: return false;
  }
}

bool isa_available(Isa isa) {
  const FeatureMask need = tier_baseline(isa);
  return isa_built(isa) && (cpu_features().mask & need) == need;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::avx2, Isa::avx512})
    if (isa_available(isa)) out.push_back(isa);
  return out;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(available_isas().back());
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) { g_active.store(static_cast<int>(isa), std::memory_order_relaxed); }

}  // namespace pq
