// Chunked im2col + fused forward for QuantConv2d (conv.h).
#include "forward/conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "core/isa.h"
#include "core/thread_pool.h"
#include "forward/conv_transpose.h"
#include "forward/scratch.h"

namespace pq {
namespace {

// The forwards use scratch slots 0-3 (forward_sparq all four; int8_gemm_run 2): scratch.h.
constexpr int kRowsSlot = 4, kOutSlot = 5, kNhwcSlot = 6;
constexpr size_t kChunkFloats = 64 * 1024;  // 256 KiB of patches + outputs per chunk: in L2
constexpr size_t kMinChunkRows = 32;        // enough rows for the GEMM tiles

// memcpy of a few dozen floats without a library call per kernel row or tap (an RGB stem
// conv copies 84 bytes at a time); fixed-size chunks compile to vector moves
inline void copy_floats(float* dst, const float* src, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) std::memcpy(dst + i, src + i, 8 * sizeof(float));
  for (; i < count; ++i) dst[i] = src[i];
}

inline void zero_floats(float* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = 0.0f;
}


// Writes im2col rows [r0, r1) (row = (b, oy, ox), columns (ky, kx, c), zeros outside the
// input) of channels [c0, c0 + cg) of the NHWC input x into rows [r1 - r0][K].
void im2col_nhwc_rows(const float* x, const ConvGeometry& g, size_t c0, size_t r0, size_t r1,
                      float* rows) {
  const size_t ho = g.out_h(), wo = g.out_w(), c = g.channels, cg = g.group_channels();
  const size_t k = g.k();
  const size_t row_span = g.kernel_w * cg;  // one kernel row, when its taps are contiguous
  for (size_t r = r0; r < r1; ++r) {
    const size_t b = r / (ho * wo), oy = r / wo % ho, ox = r % wo;
    float* dst = rows + (r - r0) * k;
    // input coordinates as signed: the top-left tap can lie in the padding
    const long iy0 = static_cast<long>(oy * g.stride_h) - static_cast<long>(g.pad_h);
    const long ix0 = static_cast<long>(ox * g.stride_w) - static_cast<long>(g.pad_w);
    const long ix_last = ix0 + static_cast<long>(g.dilation_w * (g.kernel_w - 1));
    const bool row_inside = ix0 >= 0 && ix_last < static_cast<long>(g.width);
    for (size_t ky = 0; ky < g.kernel_h; ++ky, dst += row_span) {
      const long iy = iy0 + static_cast<long>(ky * g.dilation_h);
      if (iy < 0 || iy >= static_cast<long>(g.height)) {
        zero_floats(dst, row_span);
        continue;
      }
      const float* src_row = x + (b * g.height + static_cast<size_t>(iy)) * g.width * c + c0;
      if (row_inside && g.dilation_w == 1 && cg == c) {  // the kernel row is one contiguous run
        copy_floats(dst, src_row + static_cast<size_t>(ix0) * c, row_span);
        continue;
      }
      for (size_t kx = 0; kx < g.kernel_w; ++kx) {
        const long ix = ix0 + static_cast<long>(kx * g.dilation_w);
        float* d = dst + kx * cg;
        if (ix < 0 || ix >= static_cast<long>(g.width))
          zero_floats(d, cg);
        else
          copy_floats(d, src_row + static_cast<size_t>(ix) * c, cg);
      }
    }
  }
}

}  // namespace

// (conv.h)
const float* nhwc_copy(const float* x, const ConvGeometry& g, int threads) {
  const Isa isa = active_isa();  // (exact copies on every tier)
  const size_t hw = g.height * g.width, c = g.channels;
  float* dst = static_cast<float*>(thread_scratch(g.batch * hw * c * sizeof(float), kNhwcSlot));
  // blocks of 64 channels (fewer passes over dst), 16 where that leaves a thread idle
  const size_t channel_block = c >= 64 * static_cast<size_t>(threads > 1 ? threads : 1) ? 64 : 16;
  const size_t blocks = (c + channel_block - 1) / channel_block;
  parallel_for(g.batch * blocks, threads, [&](size_t t) {
    const size_t b = t / blocks, c0 = t % blocks * channel_block;
    const size_t c1 = std::min(c, c0 + channel_block);
    transpose_floats(x + (b * c + c0) * hw, hw, c1 - c0, hw, dst + b * hw * c + c0, c, isa);
  });
  return dst;
}

bool conv_forward(const float* x, const ConvGeometry& g, size_t n, bool nchw, float* y,
                  int threads, const RowsForward* forwards) {
  const size_t m = g.rows(), k = g.k(), hw = g.out_h() * g.out_w();
  const size_t groups = g.groups, ng = n / groups;  // output channels per group
  if (m == 0 || n == 0) return false;
  // a 1x1 conv of stride 1 without padding: the NHWC pixels are the im2col rows already
  const bool pointwise = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 &&
                         g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0 && groups == 1;
  if (pointwise && !nchw) return forwards[0](x, m, y, threads);
  const Isa isa = active_isa();  // (the transposes' tier: exact copies on any)
  if (nchw) x = nhwc_copy(x, g, threads);
  const size_t chunk_rows = std::min(m, std::max(kMinChunkRows, kChunkFloats / (k + ng)));
  const size_t chunks = (m + chunk_rows - 1) / chunk_rows;
  const size_t tasks = groups * chunks;  // task t: group t / chunks, chunk t % chunks
  const size_t n_threads = static_cast<size_t>(threads > 1 ? threads : 1);
  // Enough tasks: one per worker, each forward single-threaded on its worker (every scratch
  // buffer is per thread). Few (a large-K layer on a small image): one after the other, each
  // forward using every thread.
  const bool across_tasks = tasks >= 2 * n_threads;
  const int inner_threads = across_tasks ? 1 : threads;
  // the forward writes y's rows in place (one group, NHWC), else a scratch block [rows][ng]
  const bool direct = groups == 1 && !nchw;
  std::atomic<bool> flag{false};
  auto run_task = [&](size_t t) {
    const size_t gi = t / chunks, ci = t % chunks;
    const size_t r0 = ci * chunk_rows, r1 = std::min(m, r0 + chunk_rows), rows = r1 - r0;
    const float* patches = x + r0 * k;
    if (!pointwise) {
      float* rows_buf = static_cast<float*>(thread_scratch(rows * k * sizeof(float), kRowsSlot));
      im2col_nhwc_rows(x, g, gi * g.group_channels(), r0, r1, rows_buf);
      patches = rows_buf;
    }
    float* out = direct ? y + r0 * n
                        : static_cast<float*>(thread_scratch(rows * ng * sizeof(float), kOutSlot));
    if (forwards[gi](patches, rows, out, inner_threads)) flag = true;
    if (direct) return;
    if (!nchw) {  // group gi's columns of y's rows
      for (size_t r = r0; r < r1; ++r) copy_floats(y + r * n + gi * ng, out + (r - r0) * ng, ng);
      return;
    }
    // [rows][ng] -> y[b][gi * ng + j][pixel]: runs of consecutive pixels within one image
    for (size_t r = r0; r < r1;) {
      const size_t b = r / hw, p0 = r % hw, run = std::min(r1 - r, hw - p0);
      transpose_floats(out + (r - r0) * ng, ng, run, ng, y + (b * n + gi * ng) * hw + p0, hw,
                       isa);
      r += run;
    }
  };
  if (across_tasks) {
    parallel_for(tasks, threads, run_task);
  } else {
    for (size_t t = 0; t < tasks; ++t) run_task(t);
  }
  return flag;
}

}  // namespace pq
