// QuantGRU's native forward (csrc/gru/gru_cell.h): a GruPlan built once from the module's
// buffers (validated, weights prepacked), then one call per forward with the GIL released.
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "bindings/array_utils.h"
#include "gru/gru_cell.h"

namespace pq {
namespace {

using I64 = CArray<int64_t>;

std::vector<int64_t> vec_of(const I64& a, const std::string& name) {
  require(a.ndim() == 1, name + ": expected a 1-D int64 array, got " + std::to_string(a.ndim()) +
                             "-D");
  return std::vector<int64_t>(a.data(), a.data() + a.shape(0));
}

int64_t scalar_of(const I64& a, const std::string& name) {
  require(a.ndim() == 1 && a.shape(0) == 1, name + ": expected an int64 array of shape [1]");
  return a.data()[0];
}

// mults: the 12 multiplier buffers in QuantGRU._MULTS order (pre_r 0/1, pre_z 0/1, rn 0,
// pre_n 0/1, omz 0, zn 0, zh 0, h 0/1).
std::shared_ptr<GruPlan> make_plan(const CArray<int8_t>& w_ih, const CArray<int8_t>& w_hh,
                                   const std::vector<int>& widths, const I64& b_ih,
                                   const I64& b_hh, const I64& lut_r, const I64& lut_z,
                                   const I64& lut_n, const std::vector<I64>& mults, int shift) {
  require_ndim(w_hh, 2, "w_hh_codes");
  require_ndim(w_ih, 2, "w_ih_codes");
  const size_t h3 = w_hh.shape(0), H = h3 / 3, I = w_ih.shape(1);
  require(h3 % 3 == 0 && static_cast<size_t>(w_hh.shape(1)) == H,
          "w_hh_codes: expected shape [3H, H]");
  require(static_cast<size_t>(w_ih.shape(0)) == 3 * H, "w_ih_codes: expected shape [3H, I]");
  require(widths.size() == kGruNumOps, "widths_t: expected 17 widths");
  require(mults.size() == 12, "mults: expected the 12 multiplier buffers");
  GruConstants c;
  for (int i = 0; i < kGruNumOps; ++i) c.widths[i] = widths[i];
  c.b_ih = vec_of(b_ih, "b_ih");
  c.b_hh = vec_of(b_hh, "b_hh");
  c.lut[0] = vec_of(lut_r, "lut_r");
  c.lut[1] = vec_of(lut_z, "lut_z");
  c.lut[2] = vec_of(lut_n, "lut_n");
  c.m_pre_i[0] = vec_of(mults[0], "mult_pre_r_0");
  c.m_pre_h[0] = vec_of(mults[1], "mult_pre_r_1");
  c.m_pre_i[1] = vec_of(mults[2], "mult_pre_z_0");
  c.m_pre_h[1] = vec_of(mults[3], "mult_pre_z_1");
  c.m_rn = vec_of(mults[4], "mult_rn_0");
  c.m_pre_i[2] = vec_of(mults[5], "mult_pre_n_0");
  c.m_pre_h[2] = vec_of(mults[6], "mult_pre_n_1");
  c.m_omz = scalar_of(mults[7], "mult_omz_0");
  c.m_zn = scalar_of(mults[8], "mult_zn_0");
  c.m_zh = scalar_of(mults[9], "mult_zh_0");
  c.m_h0 = scalar_of(mults[10], "mult_h_0");
  c.m_h1 = scalar_of(mults[11], "mult_h_1");
  c.shift = shift;
  const int8_t *pi = w_ih.data(), *ph = w_hh.data();
  py::gil_scoped_release release;  // packing large weights takes a while
  return std::make_shared<GruPlan>(I, H, pi, ph, std::move(c));
}

// x float32 [B, T, I] -> int8 codes clamp(round(double(x) / s_x), -127, 127), rounding half to
// even like torch.round (QuantGRU.quantize_input); NaN -> 0.
py::array_t<int8_t> quantize_input(const CArray<float>& x, double s_x) {
  require_ndim(x, 3, "x");
  require(std::isfinite(s_x) && s_x > 0, "s_x: expected a positive finite scale");
  py::array_t<int8_t> q({x.shape(0), x.shape(1), x.shape(2)});
  const float* xp = x.data();
  int8_t* qp = q.mutable_data();
  const size_t n = static_cast<size_t>(x.size());
  py::gil_scoped_release release;
  for (size_t i = 0; i < n; ++i) {
    double v = std::nearbyint(static_cast<double>(xp[i]) / s_x);
    v = v > 127.0 ? 127.0 : v < -127.0 ? -127.0 : v;
    qp[i] = static_cast<int8_t>(v == v ? v : 0.0);
  }
  return q;
}

// xq int8 [B, T, I]; h0 int8 [B, H] codes or None. Returns int64 codes [B, T, H], or with
// `scale` the float32 outputs float(double(code) * scale) (what QuantGRU.forward returns, in the
// same rounding as torch's (codes.double() * s_h).float()).
py::array plan_forward(const GruPlan& p, const CArray<int8_t>& xq,
                       const std::optional<CArray<int8_t>>& h0, int threads,
                       std::optional<double> scale) {
  require_ndim(xq, 3, "x");
  const size_t B = xq.shape(0), T = xq.shape(1), H = p.hidden();
  require(static_cast<size_t>(xq.shape(2)) == p.input(),
          "x: expected " + std::to_string(p.input()) + " features, got " +
              std::to_string(xq.shape(2)));
  if (h0) {
    require(h0->ndim() == 2 && static_cast<size_t>(h0->shape(0)) == B &&
                static_cast<size_t>(h0->shape(1)) == H,
            "h0: expected int8 codes of shape [B, H]");
  }
  I64 out({B, T, H});
  const int8_t* xp = xq.data();
  const int8_t* hp = h0 ? h0->data() : nullptr;
  int64_t* op = out.mutable_data();
  if (!scale) {
    py::gil_scoped_release release;
    p.forward(xp, B, T, hp, op, threads < 1 ? 1 : threads, active_isa());
    return std::move(out);
  }
  CArray<float> y({B, T, H});
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    p.forward(xp, B, T, hp, op, threads < 1 ? 1 : threads, active_isa());
    const double s = *scale;
    // codes are within [-127, 127]: through int32, the conversion vectorizes
    for (size_t i = 0; i < B * T * H; ++i)
      yp[i] = static_cast<float>(static_cast<double>(static_cast<int32_t>(op[i])) * s);
  }
  return std::move(y);
}

}  // namespace

void bind_gru(py::module_& m) {
  m.def("gru_quantize_input", &quantize_input, py::arg("x"), py::arg("s_x"),
        "QuantGRU's input codes: clamp(round(x / s_x), -127, 127) as int8 (torch.round's ties)");
  py::class_<GruPlan, std::shared_ptr<GruPlan>>(
      m, "GruPlan", "QuantGRU's validated integer constants and prepacked weights")
      .def(py::init(&make_plan), py::arg("w_ih"), py::arg("w_hh"), py::arg("widths"),
           py::arg("b_ih"), py::arg("b_hh"), py::arg("lut_r"), py::arg("lut_z"),
           py::arg("lut_n"), py::arg("mults"), py::arg("shift"))
      .def_property_readonly("input_size", &GruPlan::input)
      .def_property_readonly("hidden_size", &GruPlan::hidden)
      .def_property_readonly("narrow_step", &GruPlan::narrow_step,
                             "every step operand fits 32 bits: the AVX2 build runs the narrow step")
      .def("forward", &plan_forward, py::arg("xq"), py::arg("h0"), py::arg("threads") = 1,
           py::arg("scale") = py::none());
}

}  // namespace pq
