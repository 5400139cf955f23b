#include "gru/gru_cell.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/macros.h"
#include "core/packed_format.h"
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

// torch's int64 tensor arithmetic wraps modulo 2^64; unsigned arithmetic gives the same bits
// without signed-overflow UB, so results match the reference even for degenerate constants.
inline int64_t wmul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}
inline int64_t wadd(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
inline int64_t wsub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
// requant in gru.py: clamp((t + 2^(s-1)) >> s, lo, hi), arithmetic shift.
inline int64_t rq(int64_t t, int s, int64_t lo, int64_t hi) {
  const int64_t v = wadd(t, int64_t{1} << (s - 1)) >> s;
  return v < lo ? lo : (v > hi ? hi : v);
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
      require(p[i] >= -q && p[i] <= q,
              std::string(name) + ": " + kOpNames[first_op + g] + " rows hold " +
                  std::to_string(bits[g]) + "-bit codes in [" + std::to_string(-q) + ", " +
                  std::to_string(q) + "], found " + std::to_string(p[i]));
  }
}

// c [m][n] = a [m][k] (int8 codes) x rows of the group, on the group's kernel.
void group_gemm(const GruWeightGroup& g, const int8_t* a, size_t m, size_t k, size_t hidden,
                int32_t* c, int threads, Isa isa) {
  const size_t n = g.gates.size() * hidden;
  if (k == 0) {
    std::memset(c, 0, m * n * sizeof(int32_t));
    return;
  }
  const uint8_t* ab = reinterpret_cast<const uint8_t*>(a);
  if (g.bits == 8)
    int8_gemm_run(ab, m, k, k, true, reinterpret_cast<const int8_t*>(g.panels), g.col_sums, n, c,
                  threads, isa);
  else
    lowbit_gemm_run(ab, m, k, true, g.panels, n, g.bits, c, threads, isa);
}

struct GateView {
  const int32_t* p;
  size_t ld;  // row stride (elements)
};

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
  require(c_.shift >= 1 && c_.shift <= 62, "shift: expected 1..62");
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
    group_gemm(g, xq, B * T, I, H, gi_buf[gi_idx].data(), threads, isa);
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

  const int s = c.shift;
  const int64_t qpr = c.q_pre[0], qpz = c.q_pre[1], qpn = c.q_pre[2];
  const int64_t *lut_r = c.lut[0].data(), *lut_z = c.lut[1].data(), *lut_n = c.lut[2].data();
  const int64_t *bi = c.b_ih.data(), *bh = c.b_hh.data();
  for (size_t t = 0; t < T; ++t) {
    for (size_t idx = 0; idx < hh_.size(); ++idx)
      group_gemm(hh_[idx], h.data(), B, H, H, gh_buf[idx].data(), threads, isa);
    for (size_t b = 0; b < B; ++b) {
      const size_t row = b * T + t;
      const int32_t *xr = gi[0].p + row * gi[0].ld, *xz = gi[1].p + row * gi[1].ld,
                    *xn = gi[2].p + row * gi[2].ld;
      const int32_t *hr = gh[0].p + b * gh[0].ld, *hz = gh[1].p + b * gh[1].ld,
                    *hn = gh[2].p + b * gh[2].ld;
      int8_t* hb = h.data() + b * H;
      int64_t* ob = out + row * H;
      for (size_t j = 0; j < H; ++j) {
        const int64_t gir = wadd(xr[j], bi[j]), giz = wadd(xz[j], bi[H + j]),
                      gin = wadd(xn[j], bi[2 * H + j]);
        const int64_t ghr = wadd(hr[j], bh[j]), ghz = wadd(hz[j], bh[H + j]),
                      ghn = wadd(hn[j], bh[2 * H + j]);
        const int64_t pr =
            rq(wadd(wmul(gir, c.m_pre_i[0][j]), wmul(ghr, c.m_pre_h[0][j])), s, -qpr, qpr);
        const int64_t pz =
            rq(wadd(wmul(giz, c.m_pre_i[1][j]), wmul(ghz, c.m_pre_h[1][j])), s, -qpz, qpz);
        const int64_t r = lut_r[pr + qpr], z = lut_z[pz + qpz];
        const int64_t rn = rq(wmul(wmul(r, ghn), c.m_rn[j]), s, -c.q_rn, c.q_rn);
        const int64_t pn =
            rq(wadd(wmul(gin, c.m_pre_i[2][j]), wmul(rn, c.m_pre_h[2][j])), s, -qpn, qpn);
        const int64_t n = lut_n[pn + qpn];
        const int64_t omz = rq(wmul(wsub(c.L_z, z), c.m_omz), s, 0, c.L_omz);
        const int64_t zn = rq(wmul(wmul(omz, n), c.m_zn), s, -c.q_zn, c.q_zn);
        const int64_t zh = rq(wmul(wmul(z, hb[j]), c.m_zh), s, -c.q_zh, c.q_zh);
        const int64_t hnew = rq(wadd(wmul(zn, c.m_h0), wmul(zh, c.m_h1)), s, -c.q_h, c.q_h);
        hb[j] = static_cast<int8_t>(hnew);
        ob[j] = hnew;
      }
    }
  }
}

}  // namespace pq
