// The weight searches with 32-byte vectors (weight_search.inc; the AVX2 and AVX-512 tiers).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "quantize/weight_search.h"

namespace pq {

#define PQ_WS_BYTES 32
#define PQ_WS_NS ws_avx2
#include "quantize/weight_search.inc"
#undef PQ_WS_NS
#undef PQ_WS_BYTES

}  // namespace pq
