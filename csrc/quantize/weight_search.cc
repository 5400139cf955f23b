#include "quantize/weight_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/thread_pool.h"

namespace pq {
namespace {

constexpr size_t kLanes = 8;            // the error sum's fixed order (see the header)
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: x + it - it rounds |x| < 2^22 half-even

// 16-byte GCC / Clang vector types (SSE2 and NEON registers): the same code and bits on every
// ISA, vectorized whatever the compiler's cost model would decide for plain loops.
typedef float F4 __attribute__((vector_size(16)));

inline F4 splat(float x) { return F4{x, x, x, x}; }
inline F4 load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Nearest of the integers qmin..qmax: clamping first equals rounding first (integer bounds).
struct Uniform {
  float lo, hi;
  float value(float v) const {
    v = v > lo ? v : lo;  // (NaN -> lo: codes stay in range whatever the input)
    v = v < hi ? v : hi;
    return (v + kRoundMagic) - kRoundMagic;
  }
  F4 value(F4 v) const {
    v = v > lo ? v : splat(lo);
    v = v < hi ? v : splat(hi);
    return (v + kRoundMagic) - kRoundMagic;
  }
};

// Nearest of 4 levels: the lowest plus the step past each midpoint v exceeds (exact: small
// integer levels).
struct Levels {
  float base, m0, m1, m2, d0, d1, d2;
  explicit Levels(const LevelQuantizer& q)
      : base(q.sorted[0]), m0(q.mids[0]), m1(q.mids[1]), m2(q.mids[2]),
        d0(q.sorted[1] - q.sorted[0]), d1(q.sorted[2] - q.sorted[1]),
        d2(q.sorted[3] - q.sorted[2]) {}
  float value(float v) const {
    float y = base;
    y += v > m0 ? d0 : 0.0f;
    y += v > m1 ? d1 : 0.0f;
    y += v > m2 ? d2 : 0.0f;
    return y;
  }
  F4 value(F4 v) const {
    const F4 zero = splat(0.0f);
    return ((splat(base) + (v > m0 ? splat(d0) : zero)) + (v > m1 ? splat(d1) : zero)) +
           (v > m2 ? splat(d2) : zero);
  }
  int index(float v) const { return (v > m0) + (v > m1) + (v > m2); }
};

// The group's squared error at scale s (inv = 1 / s), summed in float32 in 8 lanes (lane =
// column mod 8), the lanes then added pairwise.
template <class Q>
__attribute__((always_inline)) inline float group_error(const float* w, size_t len, float s,
                                                        float inv, const Q& q) {
  F4 acc0 = splat(0.0f), acc1 = acc0;  // lanes 0-3, 4-7
  size_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const F4 x0 = load4(w + i), x1 = load4(w + i + 4);
    const F4 e0 = q.value(x0 * inv) * s - x0, e1 = q.value(x1 * inv) * s - x1;
    acc0 += e0 * e0;
    acc1 += e1 * e1;
  }
  float lane[kLanes] = {acc0[0], acc0[1], acc0[2], acc0[3], acc1[0], acc1[1], acc1[2], acc1[3]};
  for (size_t l = 0; i + l < len; ++l) {
    const float e = q.value(w[i + l] * inv) * s - w[i + l];
    lane[l] += e * e;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// fn(row) for every row, ~256 KB of input per task.
template <class Fn>
void for_rows(size_t n, size_t row_bytes, int threads, const Fn& fn) {
  if (n == 0) return;
  const size_t rows_per_task = std::max<size_t>(1, (size_t{1} << 18) / std::max<size_t>(row_bytes, 1));
  parallel_for((n + rows_per_task - 1) / rows_per_task, threads, [&](size_t t) {
    for (size_t r = t * rows_per_task; r < std::min(n, (t + 1) * rows_per_task); ++r) fn(r);
  });
}

// max |x| over len floats (0 for none).
inline float absmax(const float* x, size_t len) {
  F4 top = splat(0.0f);
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    const F4 v = load4(x + i), a = v < 0.0f ? -v : v;
    top = a > top ? a : top;
  }
  float m = std::max(std::max(top[0], top[1]), std::max(top[2], top[3]));
  for (; i < len; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Every group of one row: the best candidate's scale into best, then its codes.
template <class Q, class WriteCodes>
void search_row(const float* w, size_t n, size_t k, size_t gs, const float* scales,
                size_t candidates, const Q& q, float* best, size_t row,
                const WriteCodes& write_codes) {
  const size_t groups = (k + gs - 1) / gs;
  for (size_t g = 0; g < groups; ++g) {
    const float* wg = w + row * k + g * gs;
    const size_t len = std::min(gs, k - g * gs);
    const float* cand = scales + row * groups + g;  // candidate r at cand[r * n * groups]
    float best_s = cand[0];
    float best_err = group_error(wg, len, best_s, 1.0f / best_s, q);
    for (size_t r = 1; r < candidates; ++r) {
      const float s = cand[r * n * groups];
      const float err = group_error(wg, len, s, 1.0f / s, q);
      if (err < best_err) {
        best_err = err;
        best_s = s;
      }
    }
    best[row * groups + g] = best_s;
    write_codes(row * k + g * gs, wg, len, best_s);
  }
}

template <class Q, class WriteCodes>
void search(const float* w, size_t n, size_t k, size_t gs, const float* scales,
            size_t candidates, const Q& q, float* best, int threads,
            const WriteCodes& write_codes) {
  if (k == 0) return;
  for_rows(n, k * sizeof(float), threads, [&](size_t row) {
    search_row(w, n, k, gs, scales, candidates, q, best, row, write_codes);
  });
}

}  // namespace

void clip_search_uniform(const float* w, size_t n, size_t k, size_t group_size,
                         const float* scales, size_t candidates, int qmin, int qmax,
                         int8_t* codes, float* best, int threads) {
  const Uniform q{static_cast<float>(qmin), static_cast<float>(qmax)};
  search(w, n, k, group_size, scales, candidates, q, best, threads,
         [&](size_t at, const float* wg, size_t len, float s) {
           const float inv = 1.0f / s;
           for (size_t i = 0; i < len; ++i) codes[at + i] = static_cast<int8_t>(q.value(wg[i] * inv));
         });
}

void clip_search_levels(const float* w, size_t n, size_t k, const float* scales,
                        size_t candidates, const LevelQuantizer& lq, uint8_t* codes, float* best,
                        int threads) {
  const Levels q(lq);
  search(w, n, k, k, scales, candidates, q, best, threads,
         [&](size_t at, const float* wg, size_t len, float s) {
           const float inv = 1.0f / s;
           for (size_t i = 0; i < len; ++i) codes[at + i] = lq.code[q.index(wg[i] * inv)];
         });
}

void group_absmax(const float* w, size_t n, size_t k, size_t gs, float* out, int threads) {
  const size_t groups = (k + gs - 1) / gs;
  for_rows(n, k * sizeof(float), threads, [&](size_t r) {
    for (size_t g = 0; g < groups; ++g)
      out[r * groups + g] = absmax(w + r * k + g * gs, std::min(gs, k - g * gs));
  });
}

void group_sums(const int8_t* codes, size_t n, size_t k, size_t gs, int32_t* out, int threads) {
  const size_t groups = (k + gs - 1) / gs;
  for_rows(n, k, threads, [&](size_t r) {
    for (size_t g = 0; g < groups; ++g) {
      const int8_t* x = codes + r * k + g * gs;
      int32_t sum = 0;
      for (size_t i = 0; i < std::min(gs, k - g * gs); ++i) sum += x[i];
      out[r * groups + g] = sum;
    }
  });
}

void level_counts(const uint8_t* codes, size_t n, size_t k, int32_t* out, int threads) {
  for_rows(n, k, threads, [&](size_t r) {
    const uint8_t* x = codes + r * k;
    int32_t c[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < k; ++i) {
      c[0] += x[i] == 0;
      c[1] += x[i] == 1;
      c[2] += x[i] == 2;
      c[3] += x[i] == 3;
    }
    std::memcpy(out + 4 * r, c, sizeof(c));
  });
}

void quantize_rows_int8(const float* w, size_t n, size_t k, int8_t* codes, float* scales,
                        int threads) {
  const Uniform q{-127.0f, 127.0f};
  for_rows(n, k * sizeof(float), threads, [&](size_t row) {
    const float* x = w + row * k;
    int8_t* out = codes + row * k;
    const float s = std::max(absmax(x, k), 1e-12f) / 127.0f;
    scales[row] = s;
    const F4 sv = splat(s);
    size_t i = 0;
    for (; i + 4 <= k; i += 4) {
      const F4 y = q.value(load4(x + i) / sv);
      for (int l = 0; l < 4; ++l) out[i + l] = static_cast<int8_t>(y[l]);
    }
    for (; i < k; ++i) out[i] = static_cast<int8_t>(q.value(x[i] / s));
  });
}

}  // namespace pq
