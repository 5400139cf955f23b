// SPARQ configs, their plans (tables for the SIMD paths, made once per configuration),
// dispatch and sparq_quantize.
#include <algorithm>
#include <cstdlib>
#include <memory>

#include "core/kernel_table.h"
#include "core/thread_pool.h"
#include "sparq/sparq.h"

namespace pq {

uint32_t sparq_shift_mask(int bits, int options) {
  if (bits == 4) {
    if (options == 5) return 0x1f;  // {4,3,2,1,0}
    if (options == 3) return 0x15;  // {4,2,0}
    if (options == 2) return 0x11;  // {4,0}
  }
  if (bits == 3 && options == 6) return 0x3f;  // {5..0}
  if (bits == 2 && options == 7) return 0x7f;  // {6..0}
  return 0;
}

bool sparq_config_valid(const SparqConfig& cfg) { return sparq_shift_mask(cfg.bits, cfg.options) != 0; }

uint16_t sparq_flags(const SparqConfig& cfg) {
  return static_cast<uint16_t>(cfg.bits | (cfg.options << 4) | (cfg.round ? 1 << 8 : 0) |
                               (cfg.pairs ? 1 << 9 : 0));
}

void sparq_make_plan(const SparqConfig& cfg, SparqPlan* plan) {
  plan->cfg = cfg;
  const uint32_t shifts = sparq_shift_mask(cfg.bits, cfg.options);
  // Without pairing the "zero partner" case never applies: both halves hold the bSPARQ table.
  const int nw[2] = {cfg.bits, cfg.pairs ? 2 * cfg.bits : cfg.bits};
  const uint32_t masks[2] = {shifts, cfg.pairs ? sparq_zero_partner_mask(cfg.bits) : shifts};
  for (int z = 0; z < 2; ++z) {
    for (int v = 0; v < 256; ++v)
      plan->lut[z][v] = sparq_trim_value(static_cast<uint8_t>(v), nw[z], masks[z], cfg.round);
    for (int p = 0; p < 8; ++p) {
      int s = 0;
      for (int t = 0; t < 8; ++t)
        if (((masks[z] >> t) & 1u) && t + nw[z] - 1 >= p) {
          s = t;
          break;
        }
      const int idx = p | (z << 3);
      plan->one[idx] = static_cast<uint8_t>(1u << s);
      plan->half[idx] = static_cast<uint8_t>(s > 0 ? 1u << (s - 1) : 0x7fu);
      plan->top[idx] = static_cast<uint8_t>(((1u << nw[z]) - 1) << s);
    }
  }
}

const SparqPlan& sparq_plan(const SparqConfig& cfg) {
  // every valid configuration's plan, made once: a plan is 512 trims, a few microseconds that a
  // small layer's forward (a recurrent step) paid per call
  struct Plans {
    SparqPlan p[3][8][2][2];  // [bits - 2][options][round][pairs]
  };
  static const std::unique_ptr<Plans> plans = [] {
    auto t = std::make_unique<Plans>();
    for (int bits = 2; bits <= 4; ++bits)
      for (int options = 0; options < 8; ++options)
        for (int round = 0; round < 2; ++round)
          for (int pairs = 0; pairs < 2; ++pairs) {
            const SparqConfig c{bits, options, round == 1, pairs == 1};
            if (sparq_config_valid(c)) sparq_make_plan(c, &t->p[bits - 2][options][round][pairs]);
          }
    return t;
  }();
  if (!sparq_config_valid(cfg)) std::abort();  // (every binding validates the config first)
  return plans->p[cfg.bits - 2][cfg.options][cfg.round][cfg.pairs];
}

const SparqKernels& sparq_kernels(Isa isa) {
  return active_impl<SparqKernels>(KernelFamily::sparq_gemm, isa);  // core/kernel_table.cc
}

void sparq_quantize_run(const uint8_t* a, size_t rows, size_t k, const SparqConfig& cfg,
                        uint8_t* out, int threads, Isa isa) {
  if (rows == 0 || k == 0) return;
  const SparqPlan& plan = sparq_plan(cfg);
  const SparqTrimRowFn trim = sparq_kernels(isa).trim_row;
  const size_t per_task = std::max<size_t>(1, (size_t{1} << 16) / k);  // ~64 KiB per task
  const size_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, threads, [&](size_t t) {
    const size_t r1 = std::min(rows, (t + 1) * per_task);
    for (size_t r = t * per_task; r < r1; ++r) trim(plan, a + r * k, k, out + r * k);
  });
}

}  // namespace pq
