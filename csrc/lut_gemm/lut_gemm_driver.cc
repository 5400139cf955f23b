// Kernel choice, activation preparation (part of the op's cost) and threading.
#include <cstring>
#include <memory>

#include "core/gemm_tasks.h"
#include "core/kernel_table.h"
#include "core/macros.h"
#include "core/thread_pool.h"
#include "lut_gemm/lut_gemm.h"

namespace pq {

const char* lut_kernel_name(LutKernel k) {
  switch (k) {
    case LutKernel::automatic: return "auto";
    case LutKernel::scalar: return "scalar";
    case LutKernel::deepgemm: return "deepgemm";
    case LutKernel::vpermb: return "vpermb";
    case LutKernel::pair: return "pair";
  }
  return "?";
}

LutKernelInfo lut_select(Isa isa, LutKernel want, const LutCodebook& cb, LutKernel* chosen) {
  // The kernel table lists the kernels best first (core/kernel_table.cc): automatic takes the
  // first that runs `cb` exactly, an explicit kind the best kernel of that kind.
  for (const KernelEntry* e : active_kernels(KernelFamily::lut_gemm, isa)) {
    const LutKernelImpl& k = *static_cast<const LutKernelImpl*>(e->impl);
    if ((want == LutKernel::automatic || want == k.kind) && (!k.usable || k.usable(cb))) {
      *chosen = k.kind;
      return k.info;
    }
  }
  *chosen = want;
  return {nullptr, 0};
}

namespace {

// DeepGEMM activations: one dword per k holding the code in every byte, at bits 1:0 for even k
// (table P, weight at 3:2) and at bits 3:2 for odd k (table Q, weight at 1:0). A dword lets the
// kernels broadcast it with a plain load (embedded broadcast on AVX-512). Pad codes are 0.
void prepare_deep(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint32_t* out, size_t m0,
                  size_t m1) {
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint32_t* d = out + m * k_pad;
    for (size_t i = 0; i < k; ++i) d[i] = (static_cast<uint32_t>(src[i]) << (2 * (i & 1))) * 0x01010101u;
    for (size_t i = k; i < k_pad; ++i) d[i] = 0;
  }
}

// vpermb activations: per block of 12 k (3 packed groups), the byte offsets (uint16) of the 4
// tables its 4 lookups use. The activation index mirrors the weight index bits: (k1, k0, k3) of
// each group, then (k2 of group 0, 1, 2). Word-at-a-time: codes are bytes 0..3 of a little-endian
// uint32 per group.
inline void offsets_of_block(uint32_t x0, uint32_t x1, uint32_t x2, uint16_t* d) {
  // (c1 | c0 << 2 | c3 << 4) * 64 for a word of codes c0..c3 (bytes 0..3)
  auto idx = [](uint32_t x) {
    return static_cast<uint16_t>((((x >> 8) & 3) | ((x & 3) << 2) | ((x >> 20) & 0x30)) << 6);
  };
  d[0] = idx(x0);
  d[1] = idx(x1);
  d[2] = idx(x2);
  d[3] = static_cast<uint16_t>((((x0 >> 16) & 3) | ((x1 >> 14) & 0xC) | ((x2 >> 12) & 0x30)) << 6);
}

[[maybe_unused]] void prepare_vpermb(const uint8_t* a, size_t lda, size_t k, size_t k_pad, uint16_t* out,
                    size_t m0, size_t m1) {
  const size_t per_row = k_pad / 3, full = k / 12;
  for (size_t m = m0; m < m1; ++m) {
    const uint8_t* src = a + m * lda;
    uint16_t* d = out + m * per_row;
    for (size_t b = 0; b < full; ++b) {
      const uint8_t* r = src + 12 * b;
      offsets_of_block(load_u32(r), load_u32(r + 4), load_u32(r + 8), d + 4 * b);
    }
    if (full * 12 < k_pad) {  // last block, zero padded
      uint8_t tail[12] = {0};
      std::memcpy(tail, src + 12 * full, k - 12 * full);
      offsets_of_block(load_u32(tail), load_u32(tail + 4), load_u32(tail + 8), d + 4 * full);
    }
  }
}

// The vpermb and pair kernels' tables follow from the codebook's 16 products alone. Building the
// 64 x 64 vpermb table took ~4 us, as long as the rest of a 64 x 64 layer's whole forward, so
// each thread keeps the last codebook's tables and rebuilds only when the products or the kernel
// change. The tables are read by the call's tasks while the calling thread waits in
// parallel_for, and rebuilt only by that thread between its calls.
constexpr size_t kLutTableBytes = 64 * 64 > kLutPairTableBytes ? 64 * 64 : kLutPairTableBytes;
struct LutTableCache {
  alignas(64) uint8_t t[kLutTableBytes];
  int8_t prod[4][4];
  int32_t pmin;  // (follows from prod for every codebook the bindings accept; keyed anyway)
  LutKernel kernel;
  bool valid = false;
};

const uint8_t* codebook_tables(const LutCodebook& cb, LutKernel kernel) {
  thread_local LutTableCache cache;
  if (cache.valid && cache.kernel == kernel && cache.pmin == cb.pmin &&
      std::memcmp(cache.prod, cb.prod, sizeof cb.prod) == 0)
    return cache.t;
  if (kernel == LutKernel::vpermb) {
    // 64 tables (one per activation triple) x 64 entries (weight triple): biased 3-product sums
    for (int ai = 0; ai < 64; ++ai)
      for (int wi = 0; wi < 64; ++wi) {
        int s = 0;
        for (int j = 0; j < 3; ++j) s += cb.prod[(ai >> (2 * j)) & 3][(wi >> (2 * j)) & 3];
        cache.t[ai * 64 + wi] = static_cast<uint8_t>(s - 3 * cb.pmin);
      }
  } else {
    lut_pair_tables(cb, cache.t);
  }
  std::memcpy(cache.prod, cb.prod, sizeof cb.prod);
  cache.pmin = cb.pmin;
  cache.kernel = kernel;
  cache.valid = true;
  return cache.t;
}

// The kernels sum in uint32 arithmetic (the biased sums may exceed 2^31 for K near 2^24); the
// true result fits int32, so everything is exact modulo 2^32.
int32_t wrap_i32(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v))); }

}  // namespace

void lut_gemm_run(const uint8_t* a, size_t m, size_t k, size_t lda, const uint8_t* panels,
                  size_t n, const LutCodebook& cb, int32_t* c, int threads, Isa isa,
                  LutKernel kernel) {
  if (m == 0 || n == 0) return;
  LutKernel chosen;
  const LutKernelInfo info = lut_select(isa, kernel, cb, &chosen);
  const size_t k_pad = round_up(k, kLutKAlign);
  const size_t n_panels = round_up(n, kLutPanelCols) / kLutPanelCols;
  const size_t n_steps = div_round_up(n_panels, info.panels);  // panel groups per call

  LutProblem prob{};
  prob.m = m;
  prob.n = n;
  prob.k = k;
  prob.k_pad = k_pad;
  prob.panels = panels;
  prob.cb = &cb;
  prob.a_codes = a;
  prob.lda_codes = lda;
  prob.c = c;
  prob.ldc = n;
  const int32_t npad = static_cast<int32_t>(k_pad - k);
  const int32_t p00 = cb.prod[0][0];

  std::unique_ptr<uint32_t[]> a_buf;
  std::unique_ptr<uint16_t[]> offs_buf;
  const size_t prep_chunks = m >= 16 && threads > 1 ? static_cast<size_t>(threads) : 1;
  if (chosen == LutKernel::deepgemm) {
    for (int w = 0; w < 4; ++w)
      for (int av = 0; av < 4; ++av) {
        prob.tab_p[w << 2 | av] = static_cast<uint8_t>(cb.prod[av][w] - cb.pmin);
        prob.tab_q[av << 2 | w] = static_cast<uint8_t>(cb.prod[av][w] - cb.pmin);
      }
    a_buf.reset(new uint32_t[m * k_pad]);
    const LutPrepareDeepFn prep = info.prepare_deep ? info.prepare_deep : prepare_deep;
    parallel_for(prep_chunks, threads, [&](size_t t) {
      prep(a, lda, k, k_pad, a_buf.get(), m * t / prep_chunks, m * (t + 1) / prep_chunks);
    });
    prob.a_deep = a_buf.get();
    // sum of (p - pmin) over K_pad positions, minus the pad positions' products
    prob.corr = wrap_i32(static_cast<int64_t>(k_pad) * cb.pmin - int64_t{npad} * p00);
  } else if (chosen == LutKernel::vpermb) {
    prob.tables = codebook_tables(cb, chosen);
    offs_buf.reset(new uint16_t[m * (k_pad / 3)]);
    parallel_for(prep_chunks, threads, [&](size_t t) {
#if defined(PQ_HAVE_X86)
      // vpermb only runs on the AVX-512 path
      lut_prepare_vpermb_avx512(a, lda, k, k_pad, offs_buf.get(), m * t / prep_chunks,
                                m * (t + 1) / prep_chunks);
#else
      prepare_vpermb(a, lda, k, k_pad, offs_buf.get(), m * t / prep_chunks,
                     m * (t + 1) / prep_chunks);
#endif
    });
    prob.a_offs = offs_buf.get();
    // sum of (s - 3 pmin) over K_pad/3 lookups, minus the pad positions' products
    prob.corr = wrap_i32(static_cast<int64_t>(k_pad) * cb.pmin - int64_t{npad} * p00);
  } else if (chosen == LutKernel::pair) {
    prob.tables = codebook_tables(cb, chosen);
    offs_buf.reset(new uint16_t[m * (k_pad / 4)]);
#if defined(PQ_HAVE_X86)
    parallel_for(prep_chunks, threads, [&](size_t t) {
      lut_prepare_pair_avx2(a, lda, k, k_pad, offs_buf.get(), m * t / prep_chunks,
                            m * (t + 1) / prep_chunks);
    });
#endif
    prob.a_offs = offs_buf.get();
    // sum of (s - 2 pmin) over K_pad/2 pairs, minus the pad positions' products
    prob.corr = wrap_i32(static_cast<int64_t>(k_pad) * cb.pmin - int64_t{npad} * p00);
  } else {
    prob.corr = 0;
  }

  // the shared task split (core/gemm_tasks.h), a "panel" there being one call's panel group
  TaskShape shape;
  shape.m = m;
  shape.n_panels = n_steps;
  shape.mr = info.mr;
  shape.out_row_bytes = n * sizeof(int32_t);
  shape.weight_bytes = n_panels * kLutPanelCols * k_pad / 4;  // 2-bit codes
  const TaskGrid grid(shape, threads);
  parallel_for(grid.tasks(), threads, [&](size_t t) {
    size_t step, r0, r1;
    grid.task(t, step, r0, r1);
    const size_t panel = step * info.panels;
    info.fn(prob, r0, r1, panel);
  });
}

}  // namespace pq
