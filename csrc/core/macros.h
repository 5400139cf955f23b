// Small portable macros shared by every translation unit (declarations only: nothing here may
// contain code that an ISA-specific translation unit could compile with wider instructions).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#define PQ_RESTRICT __restrict__
#define PQ_INLINE inline __attribute__((always_inline))

namespace pq {

// Unaligned little loads. `static` gives each translation unit its own copy, so a copy compiled
// with AVX-512 flags can never be picked by the linker for baseline code.
static inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
static inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
static inline long long load_i64(const void* p) {
  long long v;
  std::memcpy(&v, p, 8);
  return v;
}

static inline constexpr size_t div_round_up(size_t a, size_t b) { return (a + b - 1) / b; }
static inline constexpr size_t round_up(size_t a, size_t b) { return div_round_up(a, b) * b; }

}  // namespace pq
