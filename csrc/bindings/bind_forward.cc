// Fused forwards of pyquant.nn (csrc/forward/forward.h): float32 x in, float32 y out, one call.
// Every argument is an explicit array or scalar (the module's buffers), so the torch.library
// ops that wrap these need nothing else. The packed buffer passes the one validator
// (packed_utils.h: every header field, the exact size) and the other arguments are checked
// against its header before any kernel runs (ValueError naming the argument).
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bindings/array_utils.h"
#include "bindings/packed_utils.h"
#include "core/macros.h"
#include "forward/col2im.h"
#include "forward/conv.h"
#include "forward/forward.h"
#include "forward/recurrent.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"
#include "lut_gemm/lut_gemm.h"
#include "quantize/act_quantize.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

using Levels = std::array<int32_t, 4>;
using OptF = std::optional<CArray<float>>;

// (a template: a CArray<float> parameter would take any array through a converting copy)
template <class T>
void require_len(const CArray<T>& v, size_t len, const char* name) {
  const char* type = std::is_same_v<T, float> ? "float32" : "int16";
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, int16_t>);
  require(v.ndim() == 1 && static_cast<size_t>(v.shape(0)) == len,
          std::string(name) + ": expected a " + type + " vector of length " + std::to_string(len));
}

// A forward's input: rows x [M, K] (QuantLinear), or with `conv` the image x of a QuantConv2d,
// [B, C, H, W] if nchw else [B, H, W, C] (y the same layout), whose im2col rows (K = kh * kw * C) are made chunk by chunk (conv.h). The
// header does not record how K splits into kernel and channels: the caller's geometry is
// trusted for that (any split with kh * kw * C = K is memory-safe).
// conv = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, nchw).
// With two more entries, (..., nchw, output_padding_h, output_padding_w), x is the input of a
// QuantConvTranspose2d, [B, K, H, W] if nchw else [B, H, W, K], whose pixels are the GEMM's rows;
// N = kernel_h * kernel_w * C_out, y [B, C_out, Ho, Wo] (nchw) or [B, Ho, Wo, C_out], the bias
// [C_out] added by col2im (col2im.h).
using ConvArg = std::optional<std::vector<int64_t>>;
constexpr int64_t kConvMaxGeometry = 1 << 16;  // kernel, stride, padding, dilation (Python reads it)
struct Input {
  const float* x = nullptr;
  size_t m = 0;  // rows of the GEMM
  bool is_conv = false, nchw = false;
  ConvGeometry g{};
  bool transposed = false;
  Col2imGeometry tg{};  // (channels set from N by output_for)
  size_t k = 0;
  const float* col2im_bias = nullptr;
};

Input transposed_input_of(const CArray<float>& x, const std::vector<int64_t>& c, size_t k) {
  for (int i = 0; i < 11; ++i)
    require(c[i] >= (i == 4 || i == 5 || i >= 8 ? 0 : 1) && c[i] <= kConvMaxGeometry,
            "conv: kernel, stride and dilation must be in [1, 65536], padding and "
            "output_padding in [0, 65536]");
  require(c[8] == 0 || c[8] == 1, "conv: nchw must be 0 or 1");
  require_ndim(x, 4, "x");
  Input in;
  in.x = x.data();
  in.transposed = in.is_conv = true;
  in.nchw = c[8] == 1;
  in.k = k;
  const size_t channels = x.shape(in.nchw ? 1 : 3);
  require(k > 0 && channels == k,
          std::string("x: expected ") + (in.nchw ? "[B, C, H, W]" : "[B, H, W, C]") +
              " with C = K = " + std::to_string(k) + " (a transposed conv's input channels), "
              "got C = " + std::to_string(channels));
  Col2imGeometry& g = in.tg;
  g.batch = x.shape(0), g.height = x.shape(in.nchw ? 2 : 1), g.width = x.shape(in.nchw ? 3 : 2);
  g.kernel_h = c[0], g.kernel_w = c[1], g.stride_h = c[2], g.stride_w = c[3];
  g.pad_h = c[4], g.pad_w = c[5], g.dilation_h = c[6], g.dilation_w = c[7];
  const long oh =
      transposed_out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, c[9]);
  const long ow =
      transposed_out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, c[10]);
  require(oh >= 0 && ow >= 0,
          "conv: output_padding must be smaller than stride or dilation, and the padding no "
          "larger than the output");
  g.out_h = oh, g.out_w = ow;
  in.m = g.batch * g.height * g.width;
  return in;
}

Input input_of(const CArray<float>& x, const ConvArg& conv, size_t k,
               size_t groups = 1, bool transposed_ok = false) {
  Input in;
  in.x = x.data();
  if (!conv) {
    require_ndim(x, 2, "x");
    require(static_cast<size_t>(x.shape(1)) == k,
            "x: expected K = " + std::to_string(k) + " columns to match the weight, got " +
                std::to_string(x.shape(1)));
    in.m = x.shape(0);
    return in;
  }
  const std::vector<int64_t>& c = *conv;
  if (c.size() == 11 && transposed_ok) return transposed_input_of(x, c, k);
  require(c.size() == 9,
          "conv: expected (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, "
          "dilation_w, nchw)");
  for (int i = 0; i < 8; ++i)
    require(c[i] >= (i == 4 || i == 5 ? 0 : 1) && c[i] <= kConvMaxGeometry,
            "conv: kernel, stride and dilation must be in [1, 65536], padding in [0, 65536]");
  require(c[8] == 0 || c[8] == 1, "conv: nchw must be 0 or 1");
  require_ndim(x, 4, "x");
  const bool nchw = c[8] == 1;
  ConvGeometry& g = in.g;
  g = ConvGeometry{static_cast<size_t>(x.shape(0)), static_cast<size_t>(x.shape(nchw ? 2 : 1)),
                   static_cast<size_t>(x.shape(nchw ? 3 : 2)),
                   static_cast<size_t>(x.shape(nchw ? 1 : 3)),
                   static_cast<size_t>(c[0]), static_cast<size_t>(c[1]),
                   static_cast<size_t>(c[2]), static_cast<size_t>(c[3]),
                   static_cast<size_t>(c[4]), static_cast<size_t>(c[5]),
                   static_cast<size_t>(c[6]), static_cast<size_t>(c[7])};
  g.groups = groups;
  require(g.channels % groups == 0,
          "x: expected C a multiple of groups = " + std::to_string(groups) + ", got C = " +
              std::to_string(g.channels));
  // (divided, not multiplied: kh * kw * C of a zero-size image with a huge C could wrap to K)
  const size_t taps = g.kernel_h * g.kernel_w;  // <= 2^32
  require(k > 0 && k % taps == 0 && g.group_channels() == k / taps,
          std::string("x: expected ") + (nchw ? "[B, C, H, W]" : "[B, H, W, C]") + " with kernel_h" +
              " * kernel_w * C" + (groups > 1 ? " / groups" : "") + " = K = " +
              std::to_string(k) + ", got C = " + std::to_string(g.channels));
  in.is_conv = true;
  in.nchw = nchw;
  in.m = g.rows();
  return in;
}

// y [M, N], or the conv's [B, N, Ho, Wo] (nchw) / [B, Ho, Wo, N] (a transposed conv's: N / taps
// channels)
CArray<float> output_for(Input& in, size_t n) {
  if (!in.is_conv) return CArray<float>({in.m, n});
  if (in.transposed) {
    Col2imGeometry& g = in.tg;
    require(n % g.taps() == 0, "conv: the weight's N = " + std::to_string(n) +
                                   " is not kernel_h * kernel_w * output channels");
    g.channels = n / g.taps();
    return in.nchw ? CArray<float>({g.batch, g.channels, g.out_h, g.out_w})
                   : CArray<float>({g.batch, g.out_h, g.out_w, g.channels});
  }
  const size_t b = in.g.batch, ho = in.g.out_h(), wo = in.g.out_w();
  return in.nchw ? CArray<float>({b, n, ho, wo}) : CArray<float>({b, ho, wo, n});
}

// Runs `forward` on the input's rows (directly, or through the chunked conv driver); call
// without the GIL.
bool run_input(const Input& in, size_t n, float* y, int threads, const RowsForward& forward) {
  if (in.transposed)
    return conv_transpose_forward(in.x, in.tg, in.k, n, in.nchw, in.col2im_bias, y, threads,
                                  forward);
  if (in.is_conv) return conv_forward(in.x, in.g, n, in.nchw, y, threads, &forward);
  return forward(in.x, in.m, y, threads);
}

// y [m][n] = the bias in every row (0 without one): a layer with K = 0
void bias_rows(float* y, size_t m, size_t n, const float* bias) {
  for (size_t i = 0; i < m * n; ++i) y[i] = bias ? bias[i % n] : 0.0f;
}

// The bias the GEMM's epilogue adds, checked against N (a transposed conv's: [N / taps], kept
// for col2im; the GEMM then adds none).
const float* gemm_bias(Input& in, const OptF& bias, size_t n) {
  if (in.transposed) {
    require(n % in.tg.taps() == 0, "conv: the weight's N = " + std::to_string(n) +
                                       " is not kernel_h * kernel_w * output channels");
    if (bias) require_len(*bias, n / in.tg.taps(), "bias");
    in.col2im_bias = bias ? bias->data() : nullptr;
    return nullptr;
  }
  if (!bias) return nullptr;
  require_len(*bias, n, "bias");
  return bias->data();
}

// act_range [2]: NaN = dynamic per row, else the static (lo, hi) from calibration.
ActRange act_of(const CArray<float>& r) {
  require_len(r, 2, "act_range");
  ActRange a;
  const float lo = r.data()[0], hi = r.data()[1];
  a.is_static = !(std::isnan(lo) || std::isnan(hi));
  require(!a.is_static || (std::isfinite(lo) && std::isfinite(hi) && lo <= hi),
          "act_range: expected NaN (dynamic) or finite lo <= hi");
  a.lo = lo;
  a.hi = hi;
  return a;
}

CArray<float> forward_int8_py(const CArray<float>& x, const CArray<uint8_t>& packed,
                              const CArray<float>& w_scale, const CArray<float>& w_off,
                              const OptF& bias, const CArray<float>& act_range, int threads,
                              int act_bits, const ConvArg& conv) {
  const PackedHeader h = checked_header(packed, PackedOp::int8_gemm);
  Input in = input_of(x, conv, h.k, 1, true);
  const size_t k = h.k, n = h.n;
  require_len(w_scale, n, "w_scale");
  require_len(w_off, n, "w_off");
  const float* bp = gemm_bias(in, bias, n);
  require(act_bits == 7 || act_bits == 8,
          "act_bits: expected 7 or 8, got " + std::to_string(act_bits));
  ActRange act = act_of(act_range);
  act.qmax = static_cast<float>((1 << act_bits) - 1);
  CArray<float> y = output_for(in, n);
  const uint8_t* base = packed.data();
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  run_input(in, n, y.mutable_data(), threads, [&](const float* xp, size_t m, float* yp, int t) {
    forward_int8(xp, m, k, reinterpret_cast<const int8_t*>(base + h.data_offset),
                 reinterpret_cast<const int32_t*>(base + h.aux_offset), n, w_scale.data(),
                 w_off.data(), bp, act, yp, t, isa);
    return false;
  });
  return y;
}

CArray<float> forward_lowbit_py(const CArray<float>& x, const CArray<uint8_t>& packed, int bits,
                                size_t group_size, const CArray<int16_t>& panel_scales,
                                const CArray<float>& w_off, const OptF& bias,
                                const CArray<float>& act_range, int threads,
                                const ConvArg& conv) {
  require(bits == 2 || bits == 4, "bits: expected 2 or 4, got " + std::to_string(bits));
  require_group_size(group_size);
  const PackedHeader h = checked_header(packed, PackedOp::lowbit_gemm);
  require(h.bits == bits, "w: packed with bits=" + std::to_string(h.bits) +
                              " but called with bits=" + std::to_string(bits));
  Input in = input_of(x, conv, h.k, 1, true);
  const size_t m = in.m, k = h.k, n = h.n;
  const size_t n_groups = div_round_up(k, group_size);
  require_len(panel_scales, round_up(n, kLowbitPanelCols) * n_groups, "panel_scales");
  require_len(w_off, n, "w_off");
  const float* bp = gemm_bias(in, bias, n);
  const ActRange act = act_of(act_range);
  CArray<float> y = output_for(in, n);
  const uint8_t* panels = packed.data() + h.data_offset;
  float* yp = y.mutable_data();
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  if (k == 0) {  // (never a conv: input_of requires K > 0 there)
    bias_rows(yp, m, n, bp);
    return y;
  }
  run_input(in, n, yp, threads, [&](const float* xp, size_t rows, float* out, int t) {
    forward_lowbit(xp, rows, k, panels, n, bits, group_size,
                   reinterpret_cast<const uint16_t*>(panel_scales.data()), w_off.data(), bp, act,
                   out, t, isa);
    return false;
  });
  return y;
}

// WeightOnlyConfig's group scales [N, G] (bfloat16 values held as float32) as the fused
// forward's panel scales: bfloat16 bit patterns (int16) in the kernels' layout.
CArray<int16_t> lowbit_panel_scales_py(const CArray<float>& scales) {
  require_ndim(scales, 2, "scales");
  const size_t n = scales.shape(0), g = scales.shape(1);
  CArray<int16_t> out(static_cast<py::ssize_t>(round_up(n, kLowbitPanelCols) * g));
  require(lowbit_panel_scales(scales.data(), n, g, reinterpret_cast<uint16_t*>(out.mutable_data())),
          "scales: expected bfloat16 values (float32 with the low 16 bits zero)");
  return out;
}

LutCodebook checked_codebook(const Levels& a_levels, const Levels& w_levels) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t p = int64_t{a_levels[i]} * w_levels[j];
      require(p >= -128 && p <= 127, "a_levels/w_levels: every pairwise product must fit int8");
    }
  return lut_codebook(a_levels.data(), w_levels.data());
}

CArray<float> forward_lut_py(const CArray<float>& x, const CArray<uint8_t>& packed,
                             const Levels& a_levels, const Levels& w_levels, bool mse,
                             const CArray<float>& w_scale, const CArray<float>& w_off,
                             const OptF& bias, const CArray<float>& act_range, int threads,
                             const ConvArg& conv) {
  const PackedHeader h = checked_header(packed, PackedOp::lut_gemm);
  for (int i = 0; i < 4; ++i)
    require(h.w_levels[i] == w_levels[i], "w: weight was packed with other w_levels");
  const LutCodebook cb = checked_codebook(a_levels, w_levels);
  Input in = input_of(x, conv, h.k, 1, true);
  const size_t m = in.m, k = h.k, n = h.n;
  require_len(w_scale, n, "w_scale");
  require_len(w_off, n, "w_off");
  const float* bp = gemm_bias(in, bias, n);
  const ActRange act = act_of(act_range);
  CArray<float> y = output_for(in, n);
  float* yp = y.mutable_data();
  const uint8_t* panels = packed.data() + h.data_offset;
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  if (k == 0) {  // (never a conv)
    bias_rows(yp, m, n, bp);
    return y;
  }
  run_input(in, n, yp, threads, [&](const float* xp, size_t rows, float* out, int t) {
    forward_lut(xp, rows, k, panels, n, cb, a_levels.data(), mse, w_scale.data(), w_off.data(),
                bp, act, out, t, isa);
    return false;
  });
  return y;
}

// The two SPARQ forwards' binding: config, header and side-array checks, then `run(x, m, k, n,
// base, h, bias, act, y, threads)` on the input's rows without the GIL (k = 0 gives the bias);
// returns whether any input was negative.
template <class Run>
bool sparq_forward_checked(const CArray<float>& x, const ConvArg& conv,
                           const CArray<uint8_t>& packed, PackedOp op, const SparqConfig& cfg,
                           const CArray<float>& w_scale, const OptF& bias,
                           const CArray<float>& act_range, int threads, CArray<float>* y,
                           Run&& run) {
  require(sparq_config_valid(cfg), "bits/options: not a SPARQ configuration");
  const PackedHeader h = checked_header(packed, op);
  require(h.flags == sparq_flags(cfg),
          "w: packed for another SPARQ configuration (bits/options/rounding/pairs)");
  Input in = input_of(x, conv, h.k, 1, true);
  const size_t m = in.m, k = h.k, n = h.n;
  require_len(w_scale, n, "w_scale");
  const float* bp = gemm_bias(in, bias, n);
  const ActRange act = act_of(act_range);
  *y = output_for(in, n);
  float* yp = y->mutable_data();
  py::gil_scoped_release release;
  if (k == 0) {
    bias_rows(yp, m, n, bp);
    return false;
  }
  const uint8_t* base = packed.data();
  return run_input(in, n, yp, threads, [&](const float* xp, size_t rows, float* out, int t) {
    return run(xp, rows, k, n, base, h, bp, act, out, t);
  });
}

CArray<float> forward_sparq24_py(const CArray<float>& x, const CArray<uint8_t>& packed, int bits,
                                 int options, bool round, bool pairs, bool allow_negative,
                                 const CArray<float>& w_scale, const OptF& bias,
                                 const CArray<float>& act_range, int threads,
                                 const ConvArg& conv) {
  const SparqConfig cfg{bits, options, round, pairs};
  CArray<float> y;
  const Isa isa = active_isa();
  const bool negative = sparq_forward_checked(
      x, conv, packed, PackedOp::sparq24_gemm, cfg, w_scale, bias, act_range, threads, &y,
      [&](const float* xp, size_t m, size_t k, size_t n, const uint8_t* base,
          const PackedHeader& h, const float* bp, ActRange act, float* yp, int t) {
        return forward_sparq24(xp, m, k, cfg, base + h.data_offset, n, w_scale.data(), bp, act,
                               allow_negative, yp, t, isa);
      });
  require(!negative, "x: SparqConfig(negative='error') got negative inputs");
  return y;
}

CArray<float> forward_sparq_py(const CArray<float>& x, const CArray<uint8_t>& packed, int bits,
                               int options, bool round, bool pairs, bool allow_negative,
                               const CArray<float>& w_scale, const OptF& bias,
                               const CArray<float>& act_range, int threads, const ConvArg& conv) {
  const SparqConfig cfg{bits, options, round, pairs};
  CArray<float> y;
  const Isa isa = active_isa();
  const bool negative = sparq_forward_checked(
      x, conv, packed, PackedOp::sparq_gemm, cfg, w_scale, bias, act_range, threads, &y,
      [&](const float* xp, size_t m, size_t k, size_t n, const uint8_t* base,
          const PackedHeader& h, const float* bp, ActRange act, float* yp, int t) {
        return forward_sparq(xp, m, k, cfg, reinterpret_cast<const int8_t*>(base + h.data_offset),
                             reinterpret_cast<const int32_t*>(base + h.aux_offset), n,
                             w_scale.data(), bp, act, yp, t, isa);
      });
  require(allow_negative || !negative, "x: SparqConfig(negative='error') got negative inputs");
  return y;
}

// ---- grouped forwards (forward.h): a list of weights of one shape, and groups [G, 3] of
// (weight index, first input row, rows); y holds the groups' outputs in group order.
// The groups' rows in all are bounded by the bytes they need (output and quantized rows): groups
// may share input rows, so x's size does not bound them.
constexpr uint64_t kMaxGroupedBytes = uint64_t{1} << 40;

std::vector<RowGroup> row_groups_of(const CArray<int64_t>& groups, size_t n_weights,
                                    size_t x_rows, size_t n, size_t k, size_t* out_rows) {
  require(groups.ndim() == 2 && groups.shape(1) == 3,
          "groups: expected an int64 array [G, 3] of (weight index, first row, rows)");
  std::vector<RowGroup> out(groups.shape(0));
  const uint64_t row_bytes = 4 * uint64_t{n} + round_up(uint64_t{k}, uint64_t{64}) + 136;
  const uint64_t max_rows = kMaxGroupedBytes / row_bytes;
  size_t total = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t* g = groups.data() + 3 * i;
    const auto at = [i] { return "groups[" + std::to_string(i) + "]: "; };  // (on failure)
    if (!(g[0] >= 0 && static_cast<uint64_t>(g[0]) < n_weights))
      require(false, at() + "weight index must be in [0, " + std::to_string(n_weights) + ")");
    if (!(g[1] >= 0 && g[2] >= 0 && static_cast<uint64_t>(g[1]) <= x_rows &&
          static_cast<uint64_t>(g[2]) <= x_rows - static_cast<uint64_t>(g[1])))
      require(false, at() + "rows [first, first + rows) must lie in x's " +
                         std::to_string(x_rows) + " rows");
    out[i] = RowGroup{static_cast<size_t>(g[0]), static_cast<size_t>(g[1]),
                      static_cast<size_t>(g[2])};
    if (out[i].rows > max_rows - total)
      require(false, "groups: more than " + std::to_string(max_rows) +
                         " rows in all (1 TiB of outputs and quantized rows)");
    total += out[i].rows;
  }
  *out_rows = total;
  return out;
}

// Checks weight i's header against the first weight's shape and x's columns; returns it.
PackedHeader grouped_header(const CArray<uint8_t>& packed, PackedOp op, size_t i, size_t k,
                            size_t* n) {
  const PackedHeader h = checked_header(packed, op);
  if (i == 0) *n = h.n;
  require(h.n == *n && h.k == k,
          "weights[" + std::to_string(i) + "]: expected a packed [N, K] = [" +
              std::to_string(*n) + ", " + std::to_string(k) +
              "] weight (weights[0]'s N, x's columns), got [" + std::to_string(h.n) + ", " +
              std::to_string(h.k) + "]");
  return h;
}

std::string weight_arg(size_t i, const char* name) {
  return "weights[" + std::to_string(i) + "]." + name;
}

// The checks every family's weight i shares: its header (grouped_header), then w_off and the
// optional bias, one value per output column.
PackedHeader grouped_weight(const CArray<uint8_t>& packed, PackedOp op, size_t i, size_t k,
                            size_t* n, const CArray<float>& w_off, const OptF& bias) {
  const PackedHeader h = grouped_header(packed, op, i, k, n);
  require_len(w_off, *n, weight_arg(i, "w_off").c_str());
  if (bias) require_len(*bias, *n, weight_arg(i, "bias").c_str());
  return h;
}

using Int8Args = std::tuple<CArray<uint8_t>, CArray<float>, CArray<float>, OptF, CArray<float>>;

CArray<float> forward_int8_grouped_py(const CArray<float>& x, const std::vector<Int8Args>& weights,
                                      const CArray<int64_t>& groups, int threads, int act_bits) {
  require_ndim(x, 2, "x");
  require(!weights.empty(), "weights: expected at least one weight");
  require(act_bits == 7 || act_bits == 8,
          "act_bits: expected 7 or 8, got " + std::to_string(act_bits));
  const size_t k = x.shape(1);
  size_t n = 0, rows = 0;
  std::vector<Int8Weight> ws;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& [packed, w_scale, w_off, bias, act_range] = weights[i];
    const PackedHeader h = grouped_weight(packed, PackedOp::int8_gemm, i, k, &n, w_off, bias);
    require_len(w_scale, n, weight_arg(i, "w_scale").c_str());
    ActRange act = act_of(act_range);
    act.qmax = static_cast<float>((1 << act_bits) - 1);
    const uint8_t* base = packed.data();
    ws.push_back(Int8Weight{reinterpret_cast<const int8_t*>(base + h.data_offset),
                            reinterpret_cast<const int32_t*>(base + h.aux_offset), w_scale.data(),
                            w_off.data(), bias ? bias->data() : nullptr, act});
  }
  const std::vector<RowGroup> gs = row_groups_of(groups, ws.size(), x.shape(0), n, k, &rows);
  CArray<float> y({rows, n});
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  forward_int8_grouped(x.data(), k, ws.data(), gs.data(), gs.size(), n, y.mutable_data(), threads,
                       isa);
  return y;
}

using LowbitArgs = std::tuple<CArray<uint8_t>, CArray<int16_t>, CArray<float>, OptF, CArray<float>>;

CArray<float> forward_lowbit_grouped_py(const CArray<float>& x,
                                        const std::vector<LowbitArgs>& weights,
                                        const CArray<int64_t>& groups, int bits,
                                        size_t group_size, int threads) {
  require_ndim(x, 2, "x");
  require(!weights.empty(), "weights: expected at least one weight");
  require(bits == 2 || bits == 4, "bits: expected 2 or 4, got " + std::to_string(bits));
  require_group_size(group_size);
  const size_t k = x.shape(1);
  size_t n = 0, rows = 0;
  std::vector<LowbitWeight> ws;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& [packed, panel_scales, w_off, bias, act_range] = weights[i];
    const PackedHeader h = grouped_weight(packed, PackedOp::lowbit_gemm, i, k, &n, w_off, bias);
    require(h.bits == bits, weight_arg(i, "packed") + ": packed with bits=" +
                                std::to_string(h.bits) + " but called with bits=" +
                                std::to_string(bits));
    require_len(panel_scales, round_up(n, kLowbitPanelCols) * div_round_up(k, group_size),
                weight_arg(i, "panel_scales").c_str());
    ws.push_back(LowbitWeight{packed.data() + h.data_offset,
                              reinterpret_cast<const uint16_t*>(panel_scales.data()), w_off.data(),
                              bias ? bias->data() : nullptr, act_of(act_range)});
  }
  const std::vector<RowGroup> gs = row_groups_of(groups, ws.size(), x.shape(0), n, k, &rows);
  CArray<float> y({rows, n});
  float* yp = y.mutable_data();
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  if (k == 0) {  // each group's rows are its weight's bias
    size_t r = 0;
    for (const RowGroup& g : gs) {
      const float* bp = ws[g.weight].bias;
      for (size_t i = 0; i < g.rows; ++i, ++r)
        for (size_t j = 0; j < n; ++j) yp[r * n + j] = bp ? bp[j] : 0.0f;
    }
    return y;
  }
  forward_lowbit_grouped(x.data(), k, bits, group_size, ws.data(), gs.data(), gs.size(), n, yp,
                         threads, isa);
  return y;
}

// ---- step weights: one layer's fused forward with its arguments checked (as grouped_args gives
// them; `name` in errors: "hh" / "hr" of a recurrent layer, "weights[i]" of a grouped call), for
// the recurrent loop (recurrent.h), grouped convs (conv.h) and grouped layers.
struct StepWeight {
  StepMatmul run;  // (true: the layer refused its input; the caller raises the ValueError)
  size_t n = 0, k = 0;
};

const char* const kRefusedNegative = "x: SparqConfig(negative='error') got negative inputs";

StepWeight int8_step(const Int8Args& args, int act_bits, const std::string& name, Isa isa) {
  const auto& [packed, w_scale, w_off, bias, act_range] = args;
  const PackedHeader h = checked_header(packed, PackedOp::int8_gemm);
  require_len(w_scale, h.n, (name + ".w_scale").c_str());
  require_len(w_off, h.n, (name + ".w_off").c_str());
  if (bias) require_len(*bias, h.n, (name + ".bias").c_str());
  ActRange act = act_of(act_range);
  act.qmax = static_cast<float>((1 << act_bits) - 1);
  const uint8_t* base = packed.data();
  const Int8Weight w{reinterpret_cast<const int8_t*>(base + h.data_offset),
                     reinterpret_cast<const int32_t*>(base + h.aux_offset), w_scale.data(),
                     w_off.data(), bias ? bias->data() : nullptr, act};
  const size_t n = h.n, k = h.k;
  return {[w, n, k, isa](const float* x, size_t m, float* y, int t) {
            forward_int8(x, m, k, w.panels, w.col_sums, n, w.w_scale, w.w_off, w.bias, w.act, y, t,
                         isa);
            return false;
          },
          n, k};
}

StepWeight lowbit_step(const LowbitArgs& args, int bits, size_t group_size,
                       const std::string& name, Isa isa) {
  const auto& [packed, panel_scales, w_off, bias, act_range] = args;
  const PackedHeader h = checked_header(packed, PackedOp::lowbit_gemm);
  require(h.bits == bits, name + ".packed: packed with bits=" + std::to_string(h.bits) +
                              " but called with bits=" + std::to_string(bits));
  require_len(panel_scales, round_up(h.n, kLowbitPanelCols) * div_round_up(h.k, group_size),
              (name + ".panel_scales").c_str());
  require_len(w_off, h.n, (name + ".w_off").c_str());
  if (bias) require_len(*bias, h.n, (name + ".bias").c_str());
  const LowbitWeight w{packed.data() + h.data_offset,
                       reinterpret_cast<const uint16_t*>(panel_scales.data()), w_off.data(),
                       bias ? bias->data() : nullptr, act_of(act_range)};
  const size_t n = h.n, k = h.k;
  return {[w, n, k, bits, group_size, isa](const float* x, size_t m, float* y, int t) {
            forward_lowbit(x, m, k, w.panels, n, bits, group_size, w.panel_scales, w.w_off, w.bias,
                           w.act, y, t, isa);
            return false;
          },
          n, k};
}

using LutArgs = Int8Args;  // (packed, w_scale, w_off, bias, act_range), as Int8's

StepWeight lut_step(const LutArgs& args, const Levels& a_levels, const Levels& w_levels, bool mse,
                    const std::string& name, Isa isa) {
  const auto& [packed, w_scale, w_off, bias, act_range] = args;
  const PackedHeader h = checked_header(packed, PackedOp::lut_gemm);
  for (int i = 0; i < 4; ++i)
    require(h.w_levels[i] == w_levels[i], name + ".packed: packed with other w_levels");
  const LutCodebook cb = checked_codebook(a_levels, w_levels);
  require_len(w_scale, h.n, (name + ".w_scale").c_str());
  require_len(w_off, h.n, (name + ".w_off").c_str());
  if (bias) require_len(*bias, h.n, (name + ".bias").c_str());
  const ActRange act = act_of(act_range);
  const uint8_t* panels = packed.data() + h.data_offset;
  const float *ws = w_scale.data(), *wo = w_off.data(), *bp = bias ? bias->data() : nullptr;
  const size_t n = h.n, k = h.k;
  return {[=](const float* x, size_t m, float* y, int t) {
            if (k == 0) {  // (a grouped layer may have no inputs: its bias)
              bias_rows(y, m, n, bp);
              return false;
            }
            forward_lut(x, m, k, panels, n, cb, a_levels.data(), mse, ws, wo, bp, act, y, t, isa);
            return false;
          },
          n, k};
}

// (packed, w_scale, bias, act_range): SparqConfig's layers, sparse24 or not
using SparqArgs = std::tuple<CArray<uint8_t>, CArray<float>, OptF, CArray<float>>;

StepWeight sparq_step(const SparqArgs& args, const SparqConfig& cfg, bool sparse24,
                      bool allow_negative, const std::string& name, Isa isa) {
  const auto& [packed, w_scale, bias, act_range] = args;
  require(sparq_config_valid(cfg), "bits/options: not a SPARQ configuration");
  const PackedHeader h =
      checked_header(packed, sparse24 ? PackedOp::sparq24_gemm : PackedOp::sparq_gemm);
  require(h.flags == sparq_flags(cfg),
          name + ".packed: packed for another SPARQ configuration (bits/options/rounding/pairs)");
  require_len(w_scale, h.n, (name + ".w_scale").c_str());
  if (bias) require_len(*bias, h.n, (name + ".bias").c_str());
  const ActRange act = act_of(act_range);
  const uint8_t* base = packed.data();
  const float *ws = w_scale.data(), *bp = bias ? bias->data() : nullptr;
  const size_t n = h.n, k = h.k;
  return {[=](const float* x, size_t m, float* y, int t) {
            if (k == 0) {  // (a grouped layer may have no inputs: its bias)
              bias_rows(y, m, n, bp);
              return false;
            }
            if (sparse24)  // (true: negative inputs refused, nothing computed)
              return forward_sparq24(x, m, k, cfg, base + h.data_offset, n, ws, bp, act,
                                     allow_negative, y, t, isa);
            const bool negative =
                forward_sparq(x, m, k, cfg, reinterpret_cast<const int8_t*>(base + h.data_offset),
                              reinterpret_cast<const int32_t*>(base + h.aux_offset), n, ws, bp,
                              act, y, t, isa);
            return negative && !allow_negative;
          },
          n, k};
}

// ---- grouped forwards through steps (LUT2, SPARQ): as forward_*_grouped (one native call,
// the same bits as each layer's own forward) but group after group, each forward parallel
// inside (int8 and low-bit run every group's tasks in one parallel region: forward_grouped.cc).
CArray<float> steps_grouped_run(const CArray<float>& x, const std::vector<StepWeight>& steps,
                                const CArray<int64_t>& groups, int threads) {
  require_ndim(x, 2, "x");
  const size_t k = x.shape(1), n = steps[0].n;
  for (size_t i = 0; i < steps.size(); ++i)
    require(steps[i].n == n && steps[i].k == k,
            "weights[" + std::to_string(i) + "]: expected a packed [N, K] = [" +
                std::to_string(n) + ", " + std::to_string(k) +
                "] weight (weights[0]'s N, x's columns), got [" + std::to_string(steps[i].n) +
                ", " + std::to_string(steps[i].k) + "]");
  size_t rows = 0;
  const std::vector<RowGroup> gs = row_groups_of(groups, steps.size(), x.shape(0), n, k, &rows);
  CArray<float> y({rows, n});
  float* yp = y.mutable_data();
  bool refused = false;
  {
    py::gil_scoped_release release;
    size_t o = 0;
    for (const RowGroup& g : gs) {
      const StepMatmul& run = steps[g.weight].run;
      if (g.rows && n && run(x.data() + g.in_row0 * k, g.rows, yp + o * n, threads)) {
        refused = true;
        break;
      }
      o += g.rows;
    }
  }
  require(!refused, kRefusedNegative);
  return y;
}

std::string group_name(size_t i) { return "weights[" + std::to_string(i) + "]"; }

template <class Args, class Make>
std::vector<StepWeight> steps_of(const std::vector<Args>& weights, Make&& make) {
  require(!weights.empty(), "weights: expected at least one weight");
  std::vector<StepWeight> steps;
  for (size_t i = 0; i < weights.size(); ++i) steps.push_back(make(weights[i], group_name(i)));
  return steps;
}

CArray<float> forward_lut_grouped_py(const CArray<float>& x, const std::vector<LutArgs>& weights,
                                     const CArray<int64_t>& groups, const Levels& a_levels,
                                     const Levels& w_levels, bool mse, int threads) {
  const Isa isa = active_isa();
  return steps_grouped_run(x, steps_of(weights, [&](const LutArgs& w, const std::string& name) {
                             return lut_step(w, a_levels, w_levels, mse, name, isa);
                           }),
                           groups, threads);
}

CArray<float> forward_sparq_grouped_py(const CArray<float>& x,
                                       const std::vector<SparqArgs>& weights,
                                       const CArray<int64_t>& groups, int bits, int options,
                                       bool round, bool pairs, bool allow_negative, bool sparse24,
                                       int threads) {
  const SparqConfig cfg{bits, options, round, pairs};
  const Isa isa = active_isa();
  return steps_grouped_run(x, steps_of(weights, [&](const SparqArgs& w, const std::string& name) {
                             return sparq_step(w, cfg, sparse24, allow_negative, name, isa);
                           }),
                           groups, threads);
}

// ---- grouped convs (QuantGroupedConv2d/1d, conv.h): one weight per channel group, all of one
// shape [N / groups, kh * kw * C / groups], in one native call.
CArray<float> conv_groups_run(const CArray<float>& x, const std::vector<StepWeight>& steps,
                              int threads, const ConvArg& conv) {
  require(conv.has_value(), "conv: expected the geometry (kernel_h, ..., nchw)");
  const size_t groups = steps.size(), ng = steps[0].n, k = steps[0].k;
  Input in = input_of(x, conv, k, groups);
  for (size_t i = 0; i < groups; ++i)
    require(steps[i].n == ng && steps[i].k == k,
            "weights[" + std::to_string(i) + "]: expected a packed [" + std::to_string(ng) + ", " +
                std::to_string(k) + "] weight (weights[0]'s shape), got [" +
                std::to_string(steps[i].n) + ", " + std::to_string(steps[i].k) + "]");
  std::vector<RowsForward> forwards;
  for (const StepWeight& s : steps) forwards.push_back(s.run);
  CArray<float> y = output_for(in, groups * ng);
  float* yp = y.mutable_data();
  bool refused;
  {
    py::gil_scoped_release release;
    refused = conv_forward(in.x, in.g, groups * ng, in.nchw, yp, threads, forwards.data());
  }
  require(!refused, kRefusedNegative);
  return y;
}

CArray<float> forward_int8_conv_groups_py(const CArray<float>& x,
                                          const std::vector<Int8Args>& weights, int threads,
                                          int act_bits, const ConvArg& conv) {
  require(act_bits == 7 || act_bits == 8,
          "act_bits: expected 7 or 8, got " + std::to_string(act_bits));
  const Isa isa = active_isa();
  return conv_groups_run(x, steps_of(weights, [&](const Int8Args& w, const std::string& name) {
                           return int8_step(w, act_bits, name, isa);
                         }),
                         threads, conv);
}

CArray<float> forward_lowbit_conv_groups_py(const CArray<float>& x,
                                            const std::vector<LowbitArgs>& weights, int bits,
                                            size_t group_size, int threads, const ConvArg& conv) {
  require(bits == 2 || bits == 4, "bits: expected 2 or 4, got " + std::to_string(bits));
  require_group_size(group_size);
  const Isa isa = active_isa();
  return conv_groups_run(x, steps_of(weights, [&](const LowbitArgs& w, const std::string& name) {
                           return lowbit_step(w, bits, group_size, name, isa);
                         }),
                         threads, conv);
}

CArray<float> forward_lut_conv_groups_py(const CArray<float>& x,
                                         const std::vector<LutArgs>& weights,
                                         const Levels& a_levels, const Levels& w_levels, bool mse,
                                         int threads, const ConvArg& conv) {
  const Isa isa = active_isa();
  return conv_groups_run(x, steps_of(weights, [&](const LutArgs& w, const std::string& name) {
                           return lut_step(w, a_levels, w_levels, mse, name, isa);
                         }),
                         threads, conv);
}

CArray<float> forward_sparq_conv_groups_py(const CArray<float>& x,
                                           const std::vector<SparqArgs>& weights, int bits,
                                           int options, bool round, bool pairs,
                                           bool allow_negative, bool sparse24, int threads,
                                           const ConvArg& conv) {
  const SparqConfig cfg{bits, options, round, pairs};
  const Isa isa = active_isa();
  return conv_groups_run(x, steps_of(weights, [&](const SparqArgs& w, const std::string& name) {
                           return sparq_step(w, cfg, sparse24, allow_negative, name, isa);
                         }),
                         threads, conv);
}

CellMode cell_mode_of(const std::string& mode) {
  if (mode == "LSTM") return CellMode::lstm;
  if (mode == "GRU") return CellMode::gru;
  if (mode == "RNN_TANH") return CellMode::rnn_tanh;
  if (mode == "RNN_RELU") return CellMode::rnn_relu;
  require(false, "mode: expected 'LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU', got '" + mode + "'");
  return CellMode::lstm;
}

// xp [R, gates] (every step's input projection, biases in), batch_sizes int64 [T] (a
// PackedSequence's: positive, never growing, summing to R), h0 [B, out], c0 [B, H] (LSTM only).
// Returns (y [R, out], h_n [B, out], c_n [B, H] or None).
py::tuple recurrent_run_py(const CArray<float>& xp, const CArray<int64_t>& batch_sizes,
                           bool reverse, const std::string& mode_name, const CArray<float>& h0,
                           const OptF& c0, const StepWeight& hh,
                           const std::optional<StepWeight>& hr,
                           int threads) {
  const CellMode mode = cell_mode_of(mode_name);
  require_ndim(xp, 2, "xp");
  require_ndim(h0, 2, "h0");
  require(batch_sizes.ndim() == 1, "batch_sizes: expected a 1-D int64 array");
  RecurrentShape s;
  s.mode = mode;
  s.batch = h0.shape(0);
  s.out = h0.shape(1);
  const size_t gates = xp.shape(1);
  const size_t per = mode == CellMode::lstm ? 4 : mode == CellMode::gru ? 3 : 1;
  require(gates % per == 0 && gates > 0,
          "xp: expected " + std::to_string(per) + " x hidden columns, got " +
              std::to_string(gates));
  s.hidden = gates / per;
  require(hh.n == gates && hh.k == s.out,
          "hh.packed: expected a [" + std::to_string(gates) + ", " + std::to_string(s.out) +
              "] weight (xp's columns, h0's), got [" + std::to_string(hh.n) + ", " +
              std::to_string(hh.k) + "]");
  if (hr) {
    require(mode == CellMode::lstm, "hr: a projection exists for LSTM only");
    require(hr->n == s.out && hr->k == s.hidden,
            "hr.packed: expected a [" + std::to_string(s.out) + ", " + std::to_string(s.hidden) +
                "] weight (h0's columns, the hidden size), got [" + std::to_string(hr->n) + ", " +
                std::to_string(hr->k) + "]");
  } else {
    require(s.out == s.hidden, "h0: expected " + std::to_string(s.hidden) +
                                   " columns (the hidden size: no projection), got " +
                                   std::to_string(s.out));
  }
  require(s.hidden > 0, "xp: expected a positive hidden size");
  if (mode == CellMode::lstm) {
    require(c0.has_value(), "c0: an LSTM needs its cell state");
    require(c0->ndim() == 2 && static_cast<size_t>(c0->shape(0)) == s.batch &&
                static_cast<size_t>(c0->shape(1)) == s.hidden,
            "c0: expected [" + std::to_string(s.batch) + ", " + std::to_string(s.hidden) + "]");
  } else {
    require(!c0.has_value(), "c0: only an LSTM has a cell state");
  }
  const size_t steps = batch_sizes.shape(0);
  uint64_t rows = 0;
  int64_t last = static_cast<int64_t>(s.batch);
  for (size_t t = 0; t < steps; ++t) {
    const int64_t b = batch_sizes.data()[t];
    require(b > 0 && b <= last, "batch_sizes[" + std::to_string(t) +
                                    "]: expected a positive size, at most the previous one and "
                                    "h0's rows, got " + std::to_string(b));
    last = b;
    rows += static_cast<uint64_t>(b);
  }
  require(rows == static_cast<uint64_t>(xp.shape(0)),
          "batch_sizes: sum " + std::to_string(rows) + ", expected xp's " +
              std::to_string(xp.shape(0)) + " rows");
  CArray<float> y({static_cast<size_t>(rows), s.out});
  CArray<float> h({s.batch, s.out});
  std::memcpy(h.mutable_data(), h0.data(), s.batch * s.out * sizeof(float));
  std::optional<CArray<float>> c;
  if (c0) {
    c.emplace(CArray<float>({s.batch, s.hidden}));
    std::memcpy(c->mutable_data(), c0->data(), s.batch * s.hidden * sizeof(float));
  }
  RecurrentStop stop;
  {
    py::gil_scoped_release release;
    stop = recurrent_run(xp.data(), batch_sizes.data(), steps, reverse, s, hh.run,
                         hr ? hr->run : StepMatmul(), h.mutable_data(),
                         c ? c->mutable_data() : nullptr, y.mutable_data(), threads, active_isa());
  }
  require(stop != RecurrentStop::hh_refused,
          "hh: SparqConfig(negative='error') got negative inputs (the state h)");
  require(stop != RecurrentStop::hr_refused,
          "hr: SparqConfig(negative='error') got negative inputs (the projection's input, "
          "o * tanh(c))");
  return py::make_tuple(y, h, c ? py::object(*c) : py::object(py::none()));
}

py::tuple recurrent_int8_py(const CArray<float>& xp, const CArray<int64_t>& batch_sizes,
                            bool reverse, const std::string& mode, const CArray<float>& h0,
                            const OptF& c0, const Int8Args& hh,
                            const std::optional<Int8Args>& hr, int act_bits, int threads) {
  require(act_bits == 7 || act_bits == 8,
          "act_bits: expected 7 or 8, got " + std::to_string(act_bits));
  const Isa isa = active_isa();
  std::optional<StepWeight> proj;
  if (hr) proj = int8_step(*hr, act_bits, "hr", isa);
  return recurrent_run_py(xp, batch_sizes, reverse, mode, h0, c0,
                          int8_step(hh, act_bits, "hh", isa), proj, threads);
}

py::tuple recurrent_lowbit_py(const CArray<float>& xp, const CArray<int64_t>& batch_sizes,
                              bool reverse, const std::string& mode, const CArray<float>& h0,
                              const OptF& c0, const LowbitArgs& hh,
                              const std::optional<LowbitArgs>& hr, int bits, size_t group_size,
                              int threads) {
  require(bits == 2 || bits == 4, "bits: expected 2 or 4, got " + std::to_string(bits));
  require_group_size(group_size);
  const Isa isa = active_isa();
  std::optional<StepWeight> proj;
  if (hr) proj = lowbit_step(*hr, bits, group_size, "hr", isa);
  return recurrent_run_py(xp, batch_sizes, reverse, mode, h0, c0,
                          lowbit_step(hh, bits, group_size, "hh", isa), proj, threads);
}

py::tuple recurrent_lut_py(const CArray<float>& xp, const CArray<int64_t>& batch_sizes,
                           bool reverse, const std::string& mode, const CArray<float>& h0,
                           const OptF& c0, const LutArgs& hh, const std::optional<LutArgs>& hr,
                           const Levels& a_levels, const Levels& w_levels, bool mse, int threads) {
  const Isa isa = active_isa();
  std::optional<StepWeight> proj;
  if (hr) proj = lut_step(*hr, a_levels, w_levels, mse, "hr", isa);
  return recurrent_run_py(xp, batch_sizes, reverse, mode, h0, c0,
                          lut_step(hh, a_levels, w_levels, mse, "hh", isa), proj, threads);
}

py::tuple recurrent_sparq_py(const CArray<float>& xp, const CArray<int64_t>& batch_sizes,
                             bool reverse, const std::string& mode, const CArray<float>& h0,
                             const OptF& c0, const SparqArgs& hh,
                             const std::optional<SparqArgs>& hr, int bits, int options, bool round,
                             bool pairs, bool allow_negative, bool sparse24, int threads) {
  const SparqConfig cfg{bits, options, round, pairs};
  const Isa isa = active_isa();
  std::optional<StepWeight> proj;
  if (hr) proj = sparq_step(*hr, cfg, sparse24, allow_negative, "hr", isa);
  return recurrent_run_py(xp, batch_sizes, reverse, mode, h0, c0,
                          sparq_step(hh, cfg, sparse24, allow_negative, "hh", isa), proj, threads);
}

// The gate nonlinearities as the recurrent loop computes them (tests: against torch's).
CArray<float> recurrent_gate_py(const CArray<float>& x, const std::string& fn) {
  require(fn == "sigmoid" || fn == "tanh", "fn: expected 'sigmoid' or 'tanh'");
  CArray<float> y(x.size());
  (fn == "sigmoid" ? sigmoid_rows : tanh_rows)(x.data(), x.size(), y.mutable_data(),
                                               active_isa());
  return y;
}

// The activation quantizers on their own (tests compare them with PyTorch references).
py::tuple lut_act_quantize_py(const CArray<float>& x, const Levels& a_levels, bool mse,
                              const CArray<float>& act_range) {
  require_ndim(x, 2, "x");
  const ActRange act = act_of(act_range);
  const size_t m = x.shape(0), k = x.shape(1);
  require(k > 0, "x: expected at least one column");
  const LutActLevels lv = lut_act_levels(a_levels.data());
  CArray<uint8_t> codes({m, k});
  CArray<float> s(static_cast<py::ssize_t>(m)), off(static_cast<py::ssize_t>(m));
  for (size_t r = 0; r < m; ++r) {
    float sa, o;
    lut_quantize_row(x.data() + r * k, k, lv, mse, act.is_static, act.lo, act.hi, active_isa(),
                     codes.mutable_data() + r * k, &sa, &o);
    s.mutable_data()[r] = sa;
    off.mutable_data()[r] = o;
  }
  return py::make_tuple(codes, s, off);
}

py::tuple abs_quantize_py(const CArray<float>& x, const CArray<float>& act_range) {
  require_ndim(x, 2, "x");
  const ActRange act = act_of(act_range);
  const size_t m = x.shape(0), k = x.shape(1);
  CArray<uint8_t> q({m, k});
  CArray<float> s(static_cast<py::ssize_t>(m));
  const float amax = std::max(std::fabs(act.lo), std::fabs(act.hi));
  for (size_t r = 0; r < m; ++r)
    s.mutable_data()[r] = quantize_row_abs_u8(x.data() + r * k, k, act.is_static ? &amax : nullptr,
                                              q.mutable_data() + r * k);
  return py::make_tuple(q, s);
}

}  // namespace

void bind_forward(py::module_& m) {
  m.def("forward_int8", &forward_int8_py, py::arg("x"), py::arg("packed"), py::arg("w_scale"),
        py::arg("w_off"), py::arg("bias"), py::arg("act_range"), py::arg("threads") = 1,
        py::arg("act_bits") = 8, py::arg("conv") = py::none());
  m.def("forward_lowbit", &forward_lowbit_py, py::arg("x"), py::arg("packed"), py::arg("bits"),
        py::arg("group_size"), py::arg("panel_scales"), py::arg("w_off"), py::arg("bias"),
        py::arg("act_range"), py::arg("threads") = 1, py::arg("conv") = py::none());
  m.def("forward_lut", &forward_lut_py, py::arg("x"), py::arg("packed"), py::arg("a_levels"),
        py::arg("w_levels"), py::arg("mse"), py::arg("w_scale"), py::arg("w_off"),
        py::arg("bias"), py::arg("act_range"), py::arg("threads") = 1,
        py::arg("conv") = py::none());
  m.def("forward_sparq", &forward_sparq_py, py::arg("x"), py::arg("packed"), py::arg("bits"),
        py::arg("options"), py::arg("round"), py::arg("pairs"), py::arg("allow_negative"),
        py::arg("w_scale"), py::arg("bias"), py::arg("act_range"), py::arg("threads") = 1,
        py::arg("conv") = py::none());
  m.def("forward_sparq24", &forward_sparq24_py, py::arg("x"), py::arg("packed"), py::arg("bits"),
        py::arg("options"), py::arg("round"), py::arg("pairs"), py::arg("allow_negative"),
        py::arg("w_scale"),
        py::arg("bias"), py::arg("act_range"), py::arg("threads") = 1,
        py::arg("conv") = py::none());
  m.def("forward_int8_grouped", &forward_int8_grouped_py, py::arg("x"), py::arg("weights"),
        py::arg("groups"), py::arg("threads") = 1, py::arg("act_bits") = 8);
  m.def("forward_lowbit_grouped", &forward_lowbit_grouped_py, py::arg("x"), py::arg("weights"),
        py::arg("groups"), py::arg("bits"), py::arg("group_size"), py::arg("threads") = 1);
  m.def("forward_int8_conv_groups", &forward_int8_conv_groups_py, py::arg("x"),
        py::arg("weights"), py::arg("threads"), py::arg("act_bits"), py::arg("conv"));
  m.def("forward_lowbit_conv_groups", &forward_lowbit_conv_groups_py, py::arg("x"),
        py::arg("weights"), py::arg("bits"), py::arg("group_size"), py::arg("threads"),
        py::arg("conv"));
  m.def("forward_lut_grouped", &forward_lut_grouped_py, py::arg("x"), py::arg("weights"),
        py::arg("groups"), py::arg("a_levels"), py::arg("w_levels"), py::arg("mse"),
        py::arg("threads") = 1);
  m.def("forward_sparq_grouped", &forward_sparq_grouped_py, py::arg("x"), py::arg("weights"),
        py::arg("groups"), py::arg("bits"), py::arg("options"), py::arg("round"),
        py::arg("pairs"), py::arg("allow_negative"), py::arg("sparse24"), py::arg("threads") = 1);
  m.def("forward_lut_conv_groups", &forward_lut_conv_groups_py, py::arg("x"), py::arg("weights"),
        py::arg("a_levels"), py::arg("w_levels"), py::arg("mse"), py::arg("threads"),
        py::arg("conv"));
  m.def("forward_sparq_conv_groups", &forward_sparq_conv_groups_py, py::arg("x"),
        py::arg("weights"), py::arg("bits"), py::arg("options"), py::arg("round"),
        py::arg("pairs"), py::arg("allow_negative"), py::arg("sparse24"), py::arg("threads"),
        py::arg("conv"));
  m.def("recurrent_forward_int8", &recurrent_int8_py, py::arg("xp"), py::arg("batch_sizes"),
        py::arg("reverse"), py::arg("mode"), py::arg("h0"), py::arg("c0"), py::arg("hh"),
        py::arg("hr"), py::arg("act_bits"), py::arg("threads") = 1);
  m.def("recurrent_forward_lowbit", &recurrent_lowbit_py, py::arg("xp"), py::arg("batch_sizes"),
        py::arg("reverse"), py::arg("mode"), py::arg("h0"), py::arg("c0"), py::arg("hh"),
        py::arg("hr"), py::arg("bits"), py::arg("group_size"), py::arg("threads") = 1);
  m.def("recurrent_forward_lut", &recurrent_lut_py, py::arg("xp"), py::arg("batch_sizes"),
        py::arg("reverse"), py::arg("mode"), py::arg("h0"), py::arg("c0"), py::arg("hh"),
        py::arg("hr"), py::arg("a_levels"), py::arg("w_levels"), py::arg("mse"),
        py::arg("threads") = 1);
  m.def("recurrent_forward_sparq", &recurrent_sparq_py, py::arg("xp"), py::arg("batch_sizes"),
        py::arg("reverse"), py::arg("mode"), py::arg("h0"), py::arg("c0"), py::arg("hh"),
        py::arg("hr"), py::arg("bits"), py::arg("options"), py::arg("round"), py::arg("pairs"),
        py::arg("allow_negative"), py::arg("sparse24"), py::arg("threads") = 1);
  m.def("recurrent_gate", &recurrent_gate_py, py::arg("x"), py::arg("fn"));
  m.attr("CONV_MAX_GEOMETRY") = py::int_(kConvMaxGeometry);
  m.def("lowbit_panel_scales", &lowbit_panel_scales_py, py::arg("scales"));
  m.def("lut_act_quantize", &lut_act_quantize_py, py::arg("x"), py::arg("a_levels"),
        py::arg("mse"), py::arg("act_range"));
  m.def("abs_quantize", &abs_quantize_py, py::arg("x"), py::arg("act_range"));
}

}  // namespace pq
