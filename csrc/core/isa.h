// Instruction-set paths and the process-wide choice among them.
//
// The active path is chosen once, at module import, from CPUID + XGETBV and the PYQUANT_ISA
// environment variable. Tests may switch it with set_active_isa() (only to a path the CPU runs).
#pragma once
#include <string>
#include <vector>

namespace pq {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512vbmi = false, avx512vpopcntdq = false, avx512bitalg = false;
  bool os_avx = false, os_avx512 = false;  // XGETBV: the OS saves the register state
  bool neon = false, neon_dotprod = false;
  std::string vendor, brand;
};

const CpuFeatures& cpu_features();
// Paths this CPU (and this build) can run, best last.
std::vector<Isa> available_isas();
bool isa_available(Isa isa);
const char* isa_name(Isa isa);
// Parses "scalar" | "avx2" | "avx512" | "neon"; returns false for an unknown name.
bool parse_isa(const std::string& name, Isa* out);

Isa active_isa();
void set_active_isa(Isa isa);  // precondition: isa_available(isa)

}  // namespace pq
