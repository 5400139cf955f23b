// Instruction throughput probe (docs/notes/results.md, twenty-sixth session): each loop issues
// 12 independent instances of one instruction (or of a pair, to see whether two share pipes);
// printed per cycle at the clock a dependent-add chain measures. Not part of the build:
//   g++ -O2 -mavx512f -mavx512bw -mavx512vnni -mavx512vbmi -mavx512vpopcntdq -mavxvnni \
//       benchmarks/throughput_probe.cc -o /tmp/probe && taskset -c 1 /tmp/probe
// (needs a CPU with all of these; drop the lines of what yours lacks).
#include <immintrin.h>
#include <cstdio>
#include <chrono>
#include <cstdint>
static double ghz() {  // dependent add chain
  auto t0 = std::chrono::steady_clock::now();
  uint64_t n = 400000000, x = 0;
  asm volatile("1: add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n sub $4, %1\n jnz 1b" : "+r"(x), "+r"(n));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 400000000 / s / 1e9;
}
#define BODY12(ins) ins(0) ins(1) ins(2) ins(3) ins(4) ins(5) ins(6) ins(7) ins(8) ins(9) ins(10) ins(11)
template <class F> double run(F f, const char* name, double g) {
  const long n = 20000000;
  auto t0 = std::chrono::steady_clock::now();
  f(n);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double per = n * 12.0 / (s * g * 1e9);
  printf("%-28s %.2f per cycle\n", name, per);
  return per;
}
#define LOOP(asmins, reg) [](long n) { \
  asm volatile("vpxor %%xmm0,%%xmm0,%%xmm0\n" \
    "1:\n" \
    asmins(0) asmins(1) asmins(2) asmins(3) asmins(4) asmins(5) asmins(6) asmins(7) asmins(8) asmins(9) asmins(10) asmins(11) \
    "dec %0\n jnz 1b" : "+r"(n) :: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14","xmm15"); }
#define MADDUBS(i) "vpmaddubsw %%ymm14, %%ymm15, %%ymm" #i "\n"
#define MADDWD(i) "vpmaddwd %%ymm14, %%ymm15, %%ymm" #i "\n"
#define DPBUSDY(i) "%{vex%} vpdpbusd %%ymm14, %%ymm15, %%ymm" #i "\n"
#define DPBUSDZ(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n"
#define PSHUFBY(i) "vpshufb %%ymm14, %%ymm15, %%ymm" #i "\n"
#define PSHUFBZ(i) "vpshufb %%zmm14, %%zmm15, %%zmm" #i "\n"
#define SRLWY(i) "vpsrlw $2, %%ymm15, %%ymm" #i "\n"
#define SRLWZ(i) "vpsrlw $2, %%zmm15, %%zmm" #i "\n"
#define ANDY(i) "vpand %%ymm14, %%ymm15, %%ymm" #i "\n"
#define ADDWY(i) "vpaddw %%ymm14, %%ymm15, %%ymm" #i "\n"
#define PERMBZ(i) "vpermb %%zmm14, %%zmm15, %%zmm" #i "\n"
#define POPCNTZ(i) "vpopcntq %%zmm15, %%zmm" #i "\n"
#define FMAZ(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n"
#define CVTZ(i) "vcvtdq2ps %%zmm15, %%zmm" #i "\n"
#define MULZ(i) "vmulps %%zmm14, %%zmm15, %%zmm" #i "\n"
#define ADDPSZ(i) "vaddps %%zmm14, %%zmm15, %%zmm" #i "\n"
#define MADDUBSZ(i) "vpmaddubsw %%zmm14, %%zmm15, %%zmm" #i "\n"
// mixes
#define MIX_MADDUBS_SRL(i) "vpmaddubsw %%ymm14, %%ymm15, %%ymm" #i "\n vpsrlw $2, %%ymm15, %%ymm13\n"
#define MIX_DPB_CVT(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n vcvtdq2ps %%zmm15, %%zmm13\n"
#define MIX_DPB_MUL(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n vmulps %%zmm15, %%zmm15, %%zmm13\n"
#define MIX_DPB_ADDPS(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n vaddps %%zmm15, %%zmm15, %%zmm13\n"
#define MIX_DPB_PERMB(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n vpermb %%zmm15, %%zmm15, %%zmm13\n"
int main() {
  double g = ghz(); printf("clock %.2f GHz\n", g); g = ghz(); printf("clock %.2f GHz\n", g);
  run(LOOP(MADDUBS, y), "vpmaddubsw ymm", g);
  run(LOOP(MADDUBSZ, z), "vpmaddubsw zmm", g);
  run(LOOP(MADDWD, y), "vpmaddwd ymm", g);
  run(LOOP(DPBUSDY, y), "vpdpbusd ymm (VEX)", g);
  run(LOOP(DPBUSDZ, z), "vpdpbusd zmm", g);
  run(LOOP(PSHUFBY, y), "vpshufb ymm", g);
  run(LOOP(PSHUFBZ, z), "vpshufb zmm", g);
  run(LOOP(SRLWY, y), "vpsrlw imm ymm", g);
  run(LOOP(SRLWZ, z), "vpsrlw imm zmm", g);
  run(LOOP(ANDY, y), "vpand ymm", g);
  run(LOOP(ADDWY, y), "vpaddw ymm", g);
  run(LOOP(PERMBZ, z), "vpermb zmm", g);
  run(LOOP(POPCNTZ, z), "vpopcntq zmm", g);
  run(LOOP(FMAZ, z), "vfmadd231ps zmm", g);
  run(LOOP(CVTZ, z), "vcvtdq2ps zmm", g);
  run(LOOP(MULZ, z), "vmulps zmm", g);
  run(LOOP(ADDPSZ, z), "vaddps zmm", g);
  run(LOOP(MIX_MADDUBS_SRL, y), "pairs maddubs+srlw ymm", g);
  run(LOOP(MIX_DPB_CVT, z), "pairs dpbusd+cvtdq2ps zmm", g);
  run(LOOP(MIX_DPB_MUL, z), "pairs dpbusd+mulps zmm", g);
  run(LOOP(MIX_DPB_ADDPS, z), "pairs dpbusd+addps zmm", g);
  run(LOOP(MIX_DPB_PERMB, z), "pairs dpbusd+vpermb zmm", g);
}
