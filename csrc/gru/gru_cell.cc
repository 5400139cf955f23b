#include "gru/gru_cell.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/macros.h"
#include "core/packed_format.h"
#include "gru/gru_step.h"
#include "int8_gemm/int8_gemm.h"
#include "lowbit_gemm/lowbit_gemm.h"

namespace pq {
namespace {

const char* const kOpNames[kGruNumOps] = {
    "w_ir", "w_iz", "w_in", "w_hr", "w_hz", "w_hn", "add_r", "add_z", "add_n",
    "sig_r", "sig_z", "tanh_n", "mul_rn", "one_minus_z", "mul_zn", "mul_zh", "add_h"};
enum Op { w_ir, w_iz, w_in, w_hr, w_hz, w_hn, add_r, add_z, add_n, sig_r, sig_z, tanh_n, mul_rn,
          one_minus_z, mul_zn, mul_zh, add_h };

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

int64_t qmax_signed(int b) { return (int64_t{1} << (b - 1)) - 1; }
int64_t qmax_unsigned(int b) { return (int64_t{1} << b) - 1; }

void require_len(const std::vector<int64_t>& v, size_t len, const std::string& name) {
  require(v.size() == len, name + ": expected an int64 vector of length " + std::to_string(len) +
                               ", got length " + std::to_string(v.size()));
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

// Packs rows [gate * H, (gate + 1) * H) of w [3H, k] for each gate of the group, in order.
GruWeightGroup pack_group(const int8_t* w, size_t hidden, size_t k, int bits,
                          const std::vector<int>& gates) {
  GruWeightGroup g;
  g.bits = bits;
  g.gates = gates;
  const size_t n = gates.size() * hidden;
  std::vector<int8_t> rows(n * k);
  for (size_t i = 0; i < gates.size(); ++i)
    std::memcpy(rows.data() + i * hidden * k, w + gates[i] * hidden * k, hidden * k);
  const PackedHeader h = bits == 8 ? int8_packed_header(n, k, PackedOp::int8_gemm, 0)
                                   : lowbit_packed_header(n, k, bits);
  const size_t bytes = round_up(h.total_bytes, kPackedAlign);
  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(kPackedAlign, bytes));
  if (!buf) throw std::bad_alloc();
  g.packed = std::shared_ptr<uint8_t>(buf, AlignedFree());
  if (bits == 8)
    int8_pack_weights(rows.data(), n, k, PackedOp::int8_gemm, 0, buf);
  else
    lowbit_pack_weights(rows.data(), n, k, bits, buf);
  g.panels = buf + h.data_offset;
  g.col_sums = bits == 8 ? reinterpret_cast<const int32_t*>(buf + h.aux_offset) : nullptr;
  return g;
}

// One group per distinct width among the three gates (gate order within a group).
std::vector<GruWeightGroup> pack_matrix(const int8_t* w, size_t hidden, size_t k,
                                        const int bits[3]) {
  std::vector<GruWeightGroup> out;
  for (int b : {2, 4, 8}) {
    std::vector<int> gates;
    for (int g = 0; g < 3; ++g)
      if (bits[g] == b) gates.push_back(g);
    if (!gates.empty()) out.push_back(pack_group(w, hidden, k, b, gates));
  }
  return out;
}

void check_codes(const int8_t* w, size_t hidden, size_t k, const int bits[3], const char* name,
                 int first_op) {
  for (int g = 0; g < 3; ++g) {
    const int64_t q = qmax_signed(bits[g]);
    const int8_t* p = w + g * hidden * k;
    for (size_t i = 0; i < hidden * k; ++i)
      if (p[i] < -q || p[i] > q)  // (the message built only then: per code it cost 80 ms at H 256)
        require(false, std::string(name) + ": " + kOpNames[first_op + g] + " rows hold " +
                           std::to_string(bits[g]) + "-bit codes in [" + std::to_string(-q) +
                           ", " + std::to_string(q) + "], found " + std::to_string(p[i]));
  }
}

// c [m][n] = a [m][k] (int8 codes) x rows of the group, on the group's kernel. small: every
// code of `a` is in [-63, 63] (a state of <= 7 bits); then 8-bit groups get a + 64 as uint8
// activations (<= 127: the AVX2 int8 tile's single-multiply route instead of its split route
// for full-range bytes) and the offset is taken back out exactly with the column sums.
void group_gemm(const GruWeightGroup& g, const int8_t* a, size_t m, size_t k, size_t hidden,
                bool small, int32_t* c, int threads, Isa isa) {
  const size_t n = g.gates.size() * hidden;
  if (k == 0) {
    std::memset(c, 0, m * n * sizeof(int32_t));
    return;
  }
  const uint8_t* ab = reinterpret_cast<const uint8_t*>(a);
  if (g.bits != 8) {
    lowbit_gemm_run(ab, m, k, true, g.panels, n, g.bits, c, threads, isa);
    return;
  }
  const int8_t* panels = reinterpret_cast<const int8_t*>(g.panels);
  if (!small) {
    int8_gemm_run(ab, m, k, k, true, panels, g.col_sums, n, c, threads, isa);
    return;
  }
  std::vector<uint8_t> au(m * k);
  for (size_t i = 0; i < m * k; ++i) au[i] = static_cast<uint8_t>(a[i] + 64);
  int8_gemm_run(au.data(), m, k, k, false, panels, g.col_sums, n, c, threads, isa);
  for (size_t r = 0; r < m; ++r) {  // wrapping, like the kernels' own +-128 correction
    uint32_t* row = reinterpret_cast<uint32_t*>(c + r * n);
    for (size_t j = 0; j < n; ++j) row[j] -= 64u * static_cast<uint32_t>(g.col_sums[j]);
  }
}

using GateView = GruGateView;

bool split_multiplier(int64_t m, int32_t* hi, int32_t* lo) {
  if (m <= -(int64_t{1} << 62) || m >= (int64_t{1} << 62)) return false;
  *hi = static_cast<int32_t>(m >> 31);  // floor: lo = m - hi * 2^31 is in [0, 2^31)
  *lo = static_cast<int32_t>(m & 0x7fffffff);
  return true;
}

bool split_multipliers(const std::vector<int64_t>& m, std::vector<int64_t>* hi,
                       std::vector<int64_t>* lo) {
  hi->resize(m.size());
  lo->resize(m.size());
  for (size_t j = 0; j < m.size(); ++j) {
    int32_t h, l;
    if (!split_multiplier(m[j], &h, &l)) return false;
    (*hi)[j] = h;
    (*lo)[j] = l;
  }
  return true;
}

// int32 biases when x + b stays exact in int32 for every GEMM sum (|sum| <= k * 127 * 127).
bool narrow_biases(const std::vector<int64_t>& b, size_t k, std::vector<int32_t>* out) {
  const int64_t room = int64_t{0x7fffffff} - static_cast<int64_t>(k) * 127 * 127;
  out->resize(b.size());
  for (size_t j = 0; j < b.size(); ++j) {
    if (room < 0 || b[j] > room || b[j] < -room) return false;
    (*out)[j] = static_cast<int32_t>(b[j]);
  }
  return true;
}

bool lut_within(const std::vector<int64_t>& lut, int64_t lo, int64_t hi) {
  for (int64_t v : lut)
    if (v < lo || v > hi) return false;
  return true;
}

// The narrow step's operands, or nullptr when one of them is not exact in 32 bits (then the
// int64 step runs): biases within int32 next to the largest GEMM sum, multipliers |M| < 2^62,
// r in [0, 2^31) (the unsigned half-products of r * (u * m_rn)) and z, n below 2^15 in magnitude
// (so (1 - z) * n and z * h are exact in int32), hidden a multiple of the 4 lanes.
std::shared_ptr<const GruNarrow> narrow_operands(const GruConstants& c, size_t input, size_t hidden) {
  auto nw = std::make_shared<GruNarrow>();
  bool ok = hidden % 4 == 0 && narrow_biases(c.b_ih, input, &nw->b_ih) &&
            narrow_biases(c.b_hh, hidden, &nw->b_hh) && lut_within(c.lut[0], 0, 0x7fffffff) &&
            lut_within(c.lut[1], -32767, 32767) && lut_within(c.lut[2], -32767, 32767) &&
            split_multipliers(c.m_rn, &nw->rn_hi, &nw->rn_lo) &&
            split_multiplier(c.m_omz, &nw->omz_hi, &nw->omz_lo) &&
            split_multiplier(c.m_zn, &nw->zn_hi, &nw->zn_lo) &&
            split_multiplier(c.m_zh, &nw->zh_hi, &nw->zh_lo) &&
            split_multiplier(c.m_h0, &nw->h0_hi, &nw->h0_lo) &&
            split_multiplier(c.m_h1, &nw->h1_hi, &nw->h1_lo);
  for (int g = 0; g < 3 && ok; ++g)
    ok = split_multipliers(c.m_pre_i[g], &nw->mi_hi[g], &nw->mi_lo[g]) &&
         split_multipliers(c.m_pre_h[g], &nw->mh_hi[g], &nw->mh_lo[g]);
  if (!ok) nw.reset();
  return nw;
}

}  // namespace

GruPlan::GruPlan(size_t input, size_t hidden, const int8_t* w_ih, const int8_t* w_hh,
                 GruConstants c)
    : input_(input), hidden_(hidden), c_(std::move(c)) {
  const auto& w = c_.widths;
  for (int op = 0; op < kGruNumOps; ++op) {
    require(w[op] >= 2 && w[op] <= 8, std::string("widths_t: ") + kOpNames[op] +
                                          " expected a width in 2..8, got " +
                                          std::to_string(w[op]));
    if (op <= w_hn)
      require(w[op] == 2 || w[op] == 4 || w[op] == 8,
              std::string("widths_t: ") + kOpNames[op] + " expected 2, 4 or 8, got " +
                  std::to_string(w[op]));
  }
  require(c_.shift == kGruShift, "shift: expected " + std::to_string(kGruShift) + " (gru.py SHIFT)");
  const size_t H = hidden;
  for (int g = 0; g < 3; ++g) c_.q_pre[g] = qmax_signed(w[add_r + g]);
  c_.L_r = qmax_unsigned(w[sig_r]);
  c_.L_z = qmax_unsigned(w[sig_z]);
  c_.q_n = qmax_signed(w[tanh_n]);
  c_.q_rn = qmax_signed(w[mul_rn]);
  c_.L_omz = qmax_unsigned(w[one_minus_z]);
  c_.q_zn = qmax_signed(w[mul_zn]);
  c_.q_zh = qmax_signed(w[mul_zh]);
  c_.q_h = qmax_signed(w[add_h]);
  require_len(c_.b_ih, 3 * H, "b_ih");
  require_len(c_.b_hh, 3 * H, "b_hh");
  const char* gate = "rzn";
  for (int g = 0; g < 3; ++g) {
    // the lookup index is a clamped pre-activation code + q_pre: the table must cover it all
    require_len(c_.lut[g], static_cast<size_t>(2 * c_.q_pre[g] + 1),
                std::string("lut_") + gate[g] + " (2^(add_" + gate[g] + "-1) * 2 - 1 entries)");
    require_len(c_.m_pre_i[g], H, std::string("mult_pre_") + gate[g] + "_0");
    require_len(c_.m_pre_h[g], H, std::string("mult_pre_") + gate[g] + "_1");
  }
  require_len(c_.m_rn, H, "mult_rn_0");
  const int ib[3] = {w[w_ir], w[w_iz], w[w_in]}, hb[3] = {w[w_hr], w[w_hz], w[w_hn]};
  check_codes(w_ih, H, input, ib, "w_ih_codes", w_ir);
  check_codes(w_hh, H, H, hb, "w_hh_codes", w_hr);
  ih_ = pack_matrix(w_ih, H, input, ib);
  hh_ = pack_matrix(w_hh, H, H, hb);
  narrow_ = narrow_operands(c_, input, H);
}

void GruPlan::forward(const int8_t* xq, size_t batch, size_t steps, const int8_t* h0,
                      int64_t* out, int threads, Isa isa) const {
  const size_t H = hidden_, I = input_, B = batch, T = steps;
  if (B == 0 || T == 0 || H == 0) return;
  const GruConstants& c = c_;

  // input projection: all B*T rows (row b*T + t) in one GEMM per width group
  std::vector<std::vector<int32_t>> gi_buf(ih_.size());
  GateView gi[3];
  for (size_t gi_idx = 0; gi_idx < ih_.size(); ++gi_idx) {
    const GruWeightGroup& g = ih_[gi_idx];
    const size_t n = g.gates.size() * H;
    gi_buf[gi_idx].resize(B * T * n);
    group_gemm(g, xq, B * T, I, H, false, gi_buf[gi_idx].data(), threads, isa);
    for (size_t j = 0; j < g.gates.size(); ++j) gi[g.gates[j]] = {gi_buf[gi_idx].data() + j * H, n};
  }
  std::vector<std::vector<int32_t>> gh_buf(hh_.size());
  GateView gh[3];
  for (size_t idx = 0; idx < hh_.size(); ++idx) {
    const GruWeightGroup& g = hh_[idx];
    const size_t n = g.gates.size() * H;
    gh_buf[idx].resize(B * n);
    for (size_t j = 0; j < g.gates.size(); ++j) gh[g.gates[j]] = {gh_buf[idx].data() + j * H, n};
  }

  std::vector<int8_t> h(B * H, 0);  // |code| <= q_h <= 127
  if (h0) std::memcpy(h.data(), h0, B * H);

  GruStepArgs a{};
  a.batch = B;
  a.hidden = H;
  a.gi_row_step = T;  // row b * T + t
  for (int g = 0; g < 3; ++g) {
    a.gi[g] = {gi[g].p, gi[g].ld};
    a.gh[g] = {gh[g].p, gh[g].ld};
    a.m_pre_i[g] = c.m_pre_i[g].data();
    a.m_pre_h[g] = c.m_pre_h[g].data();
    a.q_pre[g] = c.q_pre[g];
  }
  a.b_ih = c.b_ih.data();
  a.b_hh = c.b_hh.data();
  a.lut_r = c.lut[0].data();
  a.lut_z = c.lut[1].data();
  a.lut_n = c.lut[2].data();
  a.m_rn = c.m_rn.data();
  a.q_rn = c.q_rn;
  a.L_z = c.L_z;
  a.L_omz = c.L_omz;
  a.q_zn = c.q_zn;
  a.q_zh = c.q_zh;
  a.q_h = c.q_h;
  a.m_omz = c.m_omz;
  a.m_zn = c.m_zn;
  a.m_zh = c.m_zh;
  a.m_h0 = c.m_h0;
  a.m_h1 = c.m_h1;
  std::vector<int32_t> idx(3 * H);
  std::vector<int64_t> vals(3 * H);
  a.idx_r = idx.data();
  a.idx_z = idx.data() + H;
  a.idx_n = idx.data() + 2 * H;
  a.v_r = vals.data();
  a.v_z = vals.data() + H;
  a.v_n = vals.data() + 2 * H;
  a.h = h.data();
  a.out = out;
  a.narrow = narrow_.get();
  const GruStepFn step = gru_step_kernel(isa, narrow_ != nullptr);
  // h0 codes are clamped to [-q_h, q_h] by the caller; checked here before relying on it
  bool small_h = c.q_h <= 63;
  for (size_t i = 0; h0 && small_h && i < B * H; ++i) small_h = h0[i] >= -63 && h0[i] <= 63;
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < hh_.size(); ++i)
      group_gemm(hh_[i], h.data(), B, H, H, small_h, gh_buf[i].data(), threads, isa);
    a.gi_row0 = t;
    step(a);
  }
}

}  // namespace pq
