// col2im for QuantConvTranspose2d/1d: the GEMM of a transposed conv gives, per input pixel, the
// contributions of every kernel tap to the output pixels it reaches; this sums them into the
// output image (the scatter-add of a transposed conv, computed as a gather per output pixel so
// that each output is written by one thread, with its terms in a fixed order).
#pragma once
#include <cstddef>

#include "core/isa.h"
#include "forward/conv.h"

namespace pq {

struct Col2imGeometry {
  size_t batch, height, width;  // the transposed conv's input image
  size_t channels;              // output channels (N per kernel tap)
  size_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  size_t out_h, out_w;  // the output image (output_padding included)
  size_t taps() const { return kernel_h * kernel_w; }
};

// cols [batch * height * width][kernel_h * kernel_w * channels], columns ordered (ky, kx, c);
// y [batch][channels][out_h][out_w] if nchw else [batch][out_h][out_w][channels]:
//   y[b, c, oy, ox] = bias[c] (0 without one) + sum over (ky, kx) ascending of
//   cols[(b, iy, ix), (ky, kx, c)] for every iy * stride_h + ky * dilation_h = oy + pad_h (and
//   likewise x) with iy, ix inside the input, added one term at a time in that order.
// Parallel over (image, output row) tasks; every tier gives the same bits (elementwise adds).
void col2im(const float* cols, const Col2imGeometry& g, const float* bias, bool nchw, float* y,
            int threads, Isa isa);

// The output size of a transposed conv along one dimension (PyTorch's; 0 is an empty output),
// or -1 if none: the padding is larger than the output, or output_padding is not below the
// stride or the dilation.
long transposed_out_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation,
                         size_t output_padding);

// QuantConvTranspose2d's whole forward: x [B][K][H][W] (nchw; copied to NHWC first) or
// [B][H][W][K]; its pixels as GEMM rows [B * H * W][K] through `forward` (no bias) into the
// calling thread's scratch slot 4, then col2im into y (g.channels = n / taps, the bias added
// there). Returns the forward's flag.
bool conv_transpose_forward(const float* x, const Col2imGeometry& g, size_t k, size_t n,
                            bool nchw, const float* bias, float* y, int threads,
                            const RowsForward& forward);

}  // namespace pq
