// QuantGRU's integer forward in one native call (pyquant/nn/gru.py has the maths and the
// Python reference, `QuantGRU.step`): the input projection of all B*T rows first, then T cell
// steps, each one recurrent GEMM per weight width and one elementwise pass (requantizations,
// lookup tables). State codes come out bit-identical to the reference: every elementwise
// operation mirrors its int64 torch arithmetic, including wrap-around on overflow.
//
// A GruPlan is built once (module conversion / load_state_dict): it validates every constant
// and prepacks the weights, per width group, for the kernels the Python path calls
// (int8_gemm for 8-bit rows, lowbit_gemm for 2/4-bit rows).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/isa.h"
#include "gru/gru_step.h"

namespace pq {

constexpr int kGruNumOps = 17;  // GRU_OPS order: w_ir w_iz w_in w_hr w_hz w_hn add_r add_z add_n
                                // sig_r sig_z tanh_n mul_rn one_minus_z mul_zn mul_zh add_h

// The gates of one weight matrix ([3H, K], gate order r, z, n) that share a width, packed as one
// [len(gates) * H, K] weight: one GEMM per group and step.
struct GruWeightGroup {
  int bits = 8;
  std::vector<int> gates;            // in gate order
  std::shared_ptr<uint8_t> packed;   // 64-byte aligned buffer (header + panels [+ col sums])
  const uint8_t* panels = nullptr;
  const int32_t* col_sums = nullptr; // int8_gemm only
};

// Integer constants, as the module's buffers hold them (names in comments).
struct GruConstants {
  std::array<int, kGruNumOps> widths{};
  std::vector<int64_t> b_ih, b_hh;              // [3H]
  std::vector<int64_t> lut[3];                  // lut_r, lut_z, lut_n: [2 * q_pre + 1]
  // mult_pre_{r,z}_{0,1}, mult_rn_0, mult_pre_n_{0,1}: [H]
  std::vector<int64_t> m_pre_i[3], m_pre_h[3], m_rn;
  int64_t m_omz = 0, m_zn = 0, m_zh = 0, m_h0 = 0, m_h1 = 0;  // scalars
  int shift = 36;  // must be kGruShift (gru_step.h)
  // code ranges derived from the widths (qmax_signed / qmax_unsigned in gru.py)
  int64_t q_pre[3] = {0, 0, 0}, L_r = 0, L_z = 0, q_n = 0, q_rn = 0, L_omz = 0, q_zn = 0,
          q_zh = 0, q_h = 0;
};

class GruPlan {
 public:
  // w_ih int8 [3H, I], w_hh int8 [3H, H] (row-major codes); throws std::invalid_argument naming
  // the offending constant when anything is out of shape or range.
  GruPlan(size_t input, size_t hidden, const int8_t* w_ih, const int8_t* w_hh, GruConstants c);

  size_t input() const { return input_; }
  size_t hidden() const { return hidden_; }
  const GruConstants& constants() const { return c_; }
  bool narrow_step() const { return narrow_ != nullptr; }  // the AVX2 step may use GruNarrow

  // xq int8 [B, T, I]; h0 int8 [B, H] state codes or nullptr (zeros); out int64 [B, T, H].
  // Thread-safe (no shared scratch); call without the GIL.
  void forward(const int8_t* xq, size_t batch, size_t steps, const int8_t* h0, int64_t* out,
               int threads, Isa isa) const;

 private:
  size_t input_, hidden_;
  GruConstants c_;
  std::vector<GruWeightGroup> ih_, hh_;
  std::shared_ptr<const GruNarrow> narrow_;  // the narrow step's operands, when they fit 32 bits
};

}  // namespace pq
