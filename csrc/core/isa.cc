#include "core/isa.h"

#include <atomic>
#include <cstring>

#if defined(PQ_HAVE_X86)
#include <cpuid.h>
#endif
#if defined(PQ_HAVE_NEON) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace pq {
namespace {

#if defined(PQ_HAVE_X86)
unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
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

  __get_cpuid(1, &a, &b, &c, &d);
  const bool osxsave = c & (1u << 27);
  const bool avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  if (osxsave && avx) {
    const unsigned long long xcr0 = read_xcr0();
    f.os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b & (1u << 5)) && f.os_avx;
    f.bmi2 = b & (1u << 8);
    f.avx512f = (b & (1u << 16)) && f.os_avx512;
    f.avx512dq = (b & (1u << 17)) && f.os_avx512;
    f.avx512bw = (b & (1u << 30)) && f.os_avx512;
    f.avx512vl = (b & (1u << 31)) && f.os_avx512;
    f.avx512vbmi = (c & (1u << 1)) && f.os_avx512;
    f.avx512vnni = (c & (1u << 11)) && f.os_avx512;
    f.avx512bitalg = (c & (1u << 12)) && f.os_avx512;
    f.avx512vpopcntdq = (c & (1u << 14)) && f.os_avx512;
  }
  f.fma = f.fma && f.os_avx;
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
  f.neon = true;  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
  f.neon_dotprod = (getauxval(AT_HWCAP) & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
#endif
  f.vendor = "arm";
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool isa_available(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::scalar: return true;
#if defined(PQ_HAVE_X86)
    case Isa::avx2: return f.avx2 && f.fma && f.bmi2;
    case Isa::avx512:
      return f.avx2 && f.fma && f.bmi2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl &&
             f.avx512vnni && f.avx512vbmi && f.avx512vpopcntdq && f.avx512bitalg;
#endif
#if defined(PQ_HAVE_NEON)
    case Isa::neon: return f.neon && f.neon_dotprod;  // the int8 kernels use sdot
#endif
    default: return false;
  }
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
