// Small portable macros shared by every translation unit (declarations only: nothing here may
// contain code that an ISA-specific translation unit could compile with wider instructions).
#pragma once
#include <cstddef>
#include <cstdint>

#define PQ_RESTRICT __restrict__
#define PQ_INLINE inline __attribute__((always_inline))

namespace pq {

inline constexpr size_t div_round_up(size_t a, size_t b) { return (a + b - 1) / b; }
inline constexpr size_t round_up(size_t a, size_t b) { return div_round_up(a, b) * b; }

}  // namespace pq
