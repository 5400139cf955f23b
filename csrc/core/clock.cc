// Dependent-add clock measurement (see clock.h). The chain is inline asm so that the compiler
// can neither fold it into a multiply nor reorder it; register-register adds, because some cores
// execute small add-immediates at rename, in zero cycles. Samples are timed with the thread's CPU
// clock where there is one: on a loaded machine a wall-clock sample also counts the time slices
// other processes take (with 10 runnable tasks on 2 cores, nearly every sample loses some).
#include "core/clock.h"

#include <chrono>
#include <cstdint>
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
#endif

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

double now_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return ts.tv_sec + ts.tv_nsec * 1e-9;
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double seconds_for(uint64_t iterations) {
  double t0 = now_seconds();
  volatile uint64_t sink = add_chain(iterations);
  (void)sink;
  return now_seconds() - t0;
}

}  // namespace

double measure_clock_ghz() {
  if (!kHaveChain) return 0.0;
  // Calibrate to ~4 ms per sample, after ~20 ms of spinning so that a power-saving core has
  // ramped up; keep the best of 9 (a virtual CPU descheduled by its host still looks busy).
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
