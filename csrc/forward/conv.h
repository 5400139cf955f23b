// Quantized Conv2d as im2col + a fused linear forward, without materializing the im2col matrix:
// the output pixels are taken in chunks of rows whose float patches fit in L2; each chunk is
// gathered from the NHWC input (an NCHW input is transposed once first), run through the
// family's fused forward (forward.h: per-row quantization, GEMM, epilogue) and, for an NCHW
// output, transposed while still in cache.
// Per-row quantization makes the chunks independent, so the bits equal the whole-matrix forward.
// A grouped conv (groups > 1: QuantGroupedConv2d/1d) is `groups` such convs on consecutive
// channel slices, each with its own weight, into consecutive slices of the output channels; every
// (group, chunk) pair is a task.
#pragma once
#include <cstddef>
#include <functional>

namespace pq {

struct ConvGeometry {
  size_t batch, height, width, channels;  // input, NHWC
  size_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  size_t groups = 1;  // channel groups: each group's GEMM sees channels / groups of them

  // 0 when the (padded) input is smaller than the dilated kernel
  size_t out_h() const { return out_size(height, pad_h, dilation_h, kernel_h, stride_h); }
  size_t out_w() const { return out_size(width, pad_w, dilation_w, kernel_w, stride_w); }
  size_t group_channels() const { return channels / groups; }
  // one group's K, order (ky, kx, c)
  size_t k() const { return kernel_h * kernel_w * group_channels(); }
  size_t rows() const { return batch * out_h() * out_w(); }

 private:
  static size_t out_size(size_t in, size_t pad, size_t dil, size_t ker, size_t stride) {
    const size_t span = dil * (ker - 1) + 1;
    return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / stride + 1;
  }
};

// The fused linear forward of one layer on rows [m][K] (stride K) into y [m][n] (stride n);
// returns the forward's flag (SPARQ: a negative input was seen), false otherwise.
using RowsForward = std::function<bool(const float* rows, size_t m, float* y, int threads)>;

// x [B][C][H][W] and y [B][n][Ho][Wo] when nchw (x is copied to NHWC first), else x NHWC and
// y [B][Ho][Wo][n]; n output channels in all, n / g.groups per group. forwards[i]: group i's
// layer (g.groups of them). Returns the OR of the chunks' flags.
bool conv_forward(const float* x, const ConvGeometry& g, size_t n, bool nchw, float* y,
                  int threads, const RowsForward* forwards);

// x [B][C][H][W] (g's batch, channels, height, width) -> [B][H][W][C] in the calling thread's
// scratch slot 6 (scratch.h), in parallel over images and channel blocks.
const float* nhwc_copy(const float* x, const ConvGeometry& g, int threads);

}  // namespace pq
