// Dependent-add clock measurement (see clock.h). The chain is inline asm so that the compiler
// can neither fold it into a multiply nor reorder it; register-register adds, because some cores
// execute small add-immediates at rename, in zero cycles.
#include "core/clock.h"

#include <chrono>
#include <cstdint>

#define PQ_X4(s) s s s s
#define PQ_X64(s) PQ_X4(PQ_X4(PQ_X4(s)))

namespace pq {
namespace {

constexpr int kAddsPerIteration = 64;  // the loop's own counter and branch run alongside

#if defined(__x86_64__) || defined(__aarch64__)
constexpr bool kHaveChain = true;

uint64_t add_chain(uint64_t iterations) {
  uint64_t x = 0;
  const uint64_t one = 1;
  for (uint64_t i = 0; i < iterations; ++i) {
#if defined(__x86_64__)
    asm volatile(PQ_X64("add %1, %0\n\t") : "+r"(x) : "r"(one));
#else
    asm volatile(PQ_X64("add %0, %0, %1\n\t") : "+r"(x) : "r"(one));
#endif
  }
  return x;
}
#else
constexpr bool kHaveChain = false;
uint64_t add_chain(uint64_t) { return 0; }
#endif

double seconds_for(uint64_t iterations) {
  auto t0 = std::chrono::steady_clock::now();
  volatile uint64_t sink = add_chain(iterations);
  (void)sink;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measure_clock_ghz() {
  if (!kHaveChain) return 0.0;
  // Calibrate to ~4 ms per sample (short enough to dodge most scheduler preemptions), after
  // ~20 ms of spinning so that a power-saving core has ramped up.
  uint64_t iterations = 1000;
  double t = seconds_for(iterations);
  while (t < 1e-3) {
    iterations *= 2;
    t = seconds_for(iterations);
  }
  iterations = static_cast<uint64_t>(iterations * (4e-3 / t)) + 1;
  seconds_for(iterations * 5);
  double best = seconds_for(iterations);
  for (int i = 0; i < 8; ++i) {
    double s = seconds_for(iterations);
    if (s < best) best = s;
  }
  return static_cast<double>(iterations) * kAddsPerIteration / best / 1e9;
}

}  // namespace pq
