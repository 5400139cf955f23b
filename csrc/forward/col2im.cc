// col2im of QuantConvTranspose2d/1d (col2im.h).
#include "forward/col2im.h"

#include <vector>

#include "core/thread_pool.h"
#include "forward/conv_transpose.h"
#include "forward/scratch.h"

namespace pq {
namespace {

constexpr int kRowSlot = 0;   // (the forward that made cols has returned: its slots are free)
constexpr int kColsSlot = 4;  // the GEMM's output (the conv driver's slot: never in one call)

// The input coordinate i with i * stride + tap * dilation = o + pad, or -1 if none.
inline long source_of(size_t o, size_t tap, size_t stride, size_t pad, size_t dilation,
                      size_t size) {
  const long num = static_cast<long>(o + pad) - static_cast<long>(tap * dilation);
  if (num < 0 || num % static_cast<long>(stride) != 0) return -1;
  const long i = num / static_cast<long>(stride);
  return i < static_cast<long>(size) ? i : -1;
}

// One output row [out_w][channels] of image b: bias, then the taps in (ky, kx) order. The input
// row of each ky is found once per output row and the input column of each kx once per output
// pixel (a division each: kept out of the channel loops).
void output_row(const float* cols, const Col2imGeometry& g, const float* bias, size_t b,
                size_t oy, float* row) {
  const size_t c = g.channels, ld = g.taps() * c;
  const size_t kh = g.kernel_h, kw = g.kernel_w;
  std::vector<long> iy(kh), ix(kw);  // (once per output row)
  for (size_t ky = 0; ky < kh; ++ky)
    iy[ky] = source_of(oy, ky, g.stride_h, g.pad_h, g.dilation_h, g.height);
  for (size_t ox = 0; ox < g.out_w; ++ox) {
    float* acc = row + ox * c;
    if (bias) {
      for (size_t j = 0; j < c; ++j) acc[j] = bias[j];
    } else {
      for (size_t j = 0; j < c; ++j) acc[j] = 0.0f;
    }
    for (size_t kx = 0; kx < kw; ++kx)
      ix[kx] = source_of(ox, kx, g.stride_w, g.pad_w, g.dilation_w, g.width);
    for (size_t ky = 0; ky < kh; ++ky) {
      if (iy[ky] < 0) continue;
      const float* src_row = cols + (b * g.height + iy[ky]) * g.width * ld + ky * g.kernel_w * c;
      for (size_t kx = 0; kx < kw; ++kx) {
        if (ix[kx] < 0) continue;
        const float* src = src_row + ix[kx] * ld + kx * c;
        for (size_t j = 0; j < c; ++j) acc[j] += src[j];
      }
    }
  }
}

}  // namespace

void col2im(const float* cols, const Col2imGeometry& g, const float* bias, bool nchw, float* y,
            int threads, Isa isa) {
  const size_t row_floats = g.out_w * g.channels, plane = g.out_h * g.out_w;
  parallel_for(g.batch * g.out_h, threads, [&](size_t t) {
    const size_t b = t / g.out_h, oy = t % g.out_h;
    if (!nchw) {
      output_row(cols, g, bias, b, oy, y + t * row_floats);
      return;
    }
    // NCHW: the row in scratch, then its transpose into the channel planes
    float* row = static_cast<float*>(thread_scratch(row_floats * sizeof(float), kRowSlot));
    output_row(cols, g, bias, b, oy, row);
    float* dst = y + b * g.channels * plane + oy * g.out_w;
    transpose_floats(row, g.channels, g.out_w, g.channels, dst, plane, isa);
  });
}

long transposed_out_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation,
                         size_t output_padding) {
  if (output_padding >= stride && output_padding >= dilation) return -1;
  const long full =
      in == 0 ? 0 : static_cast<long>((in - 1) * stride + dilation * (kernel - 1) + 1);
  const long out = full - 2 * static_cast<long>(pad) + static_cast<long>(output_padding);
  return out < 0 ? -1 : out;  // (0: an empty output, as PyTorch gives)
}

bool conv_transpose_forward(const float* x, const Col2imGeometry& g, size_t k, size_t n,
                            bool nchw, const float* bias, float* y, int threads,
                            const RowsForward& forward) {
  const size_t m = g.batch * g.height * g.width;
  // (an empty output: nothing to compute, and no out_h tasks that write nothing)
  if (m == 0 || n == 0 || g.out_h == 0 || g.out_w == 0) return false;
  if (nchw) {
    ConvGeometry image{};
    image.batch = g.batch, image.height = g.height, image.width = g.width, image.channels = k;
    x = nhwc_copy(x, image, threads);
  }
  float* cols = static_cast<float*>(thread_scratch(m * n * sizeof(float), kColsSlot));
  const bool flag = forward(x, m, cols, threads);
  col2im(cols, g, bias, nchw, y, threads, active_isa());
  return flag;
}

}  // namespace pq
