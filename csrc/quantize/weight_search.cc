// The weight searches in the baseline build (16-byte vectors), and the dispatch by tier.
#include "quantize/weight_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/isa.h"
#include "core/thread_pool.h"

namespace pq {

#define PQ_WS_BYTES 16
#define PQ_WS_NS ws_base
#include "quantize/weight_search.inc"
#undef PQ_WS_NS
#undef PQ_WS_BYTES

namespace {

const WeightSearchFns& active_fns() {
#if defined(PQ_HAVE_X86)
  const Isa isa = active_isa();
  if (isa == Isa::avx2 || isa == Isa::avx512) return ws_avx2::fns();
#endif
  return ws_base::fns();
}

}  // namespace

void clip_search_uniform(const float* w, size_t n, size_t k, size_t group_size,
                         const float* scales, size_t candidates, int qmin, int qmax,
                         int8_t* codes, float* best, int threads) {
  active_fns().search_uniform(w, n, k, group_size, scales, candidates, qmin, qmax, codes, best,
                              threads);
}

void clip_search_levels(const float* w, size_t n, size_t k, const float* scales,
                        size_t candidates, const LevelQuantizer& q, uint8_t* codes, float* best,
                        int threads) {
  active_fns().search_levels(w, n, k, scales, candidates, q, codes, best, threads);
}

void group_absmax(const float* w, size_t n, size_t k, size_t group_size, float* out, int threads) {
  active_fns().absmax(w, n, k, group_size, out, threads);
}

void group_sums(const int8_t* codes, size_t n, size_t k, size_t group_size, int32_t* out,
                int threads) {
  active_fns().sums(codes, n, k, group_size, out, threads);
}

void level_counts(const uint8_t* codes, size_t n, size_t k, int32_t* out, int threads) {
  active_fns().counts(codes, n, k, out, threads);
}

void quantize_rows_int8(const float* w, size_t n, size_t k, int8_t* codes, float* scales,
                        int threads) {
  active_fns().int8_rows(w, n, k, codes, scales, threads);
}

void gptq_block(const float* w, size_t n, size_t b, const float* h, size_t group_size,
                const float* ratios, size_t nratios, int qmin, int qmax, int8_t* codes,
                float* scales, float* err, int threads) {
  active_fns().gptq(w, n, b, h, group_size, ratios, nratios, qmin, qmax, codes, scales, err,
                    threads);
}

void sparsegpt24_block(const float* w, size_t n, size_t b, const float* h, float* values,
                       float* err, int threads) {
  active_fns().sparsegpt24(w, n, b, h, values, err, threads);
}

}  // namespace pq
