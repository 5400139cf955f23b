// GPTQ's and SparseGPT's column sweep over one block of columns (Frantar et al., arXiv
// 2210.17323, Algorithm 1; Frantar and Alistarh, arXiv 2301.00774): the sequential part of
// gptq_ (pyquant/nn/gptq.py), which runs it block by block and spreads each block's errors over
// the later columns with one GEMM. The PyTorch version was a Python loop of ~8 tensor ops per
// column (a 1.1B decoder: ~400k columns, minutes).
//
// Every row is independent. For row r of the block w [n, b] (float32) and the block's [b, b]
// part h of the upper Cholesky factor of H^-1, columns i = 0 .. b-1 in order, in float32
// without fused multiply-add:
//   GPTQ: at a group's first column (i a multiple of gs), the group's scale s is chosen among
//     the candidates bf16_round(max(amax, 1e-12) * ratio[c] / max(qmax, 1)) (amax: max |w| over
//     the group's columns as updated so far; bf16_round: to bfloat16, nearest even) by
//     clip_search_uniform's error (csrc/quantize/weight_search.h; the first smallest wins);
//     then y = clamp(round_half_even(w[i] * (1 / s)), qmin, qmax) is the code (a zero is +0)
//     and e = (w[i] - y * s) / h[i][i].
//   SparseGPT 2:4: at a group of 4's first column, of its L = min(4, b - i) columns the L - 2
//     with the smallest saliency (w * w) / (h[j][j] * h[j][j]) are pruned (ties: the higher
//     column; none if L <= 2); the column's value is 0 if pruned, else w[i] as updated so far,
//     and e = (w[i] - value) / h[i][i].
//   then w[j] -= e * h[i][j] for every later column j of the block (the product rounded, then
//   the difference), and err[r][i] = e.
// Rows are processed kW at a time, one per vector lane (each row's steps form a dependent chain
// per column). The same bits on every ISA and thread count. NaN or infinite weights or factors
// give meaningless results (codes stay in [qmin, qmax]), never an out-of-bounds access: the
// caller checks that its inputs are finite.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pq {

// w [n, b] row-major (read); h [b, b] row-major (its upper triangle read); ratios: nratios >= 1
// positive clipping ratios; outputs codes int8 [n, b], scales float32 [n, ceil(b / gs)], err float32 [n, b].
void gptq_block(const float* w, size_t n, size_t b, const float* h, size_t group_size,
                const float* ratios, size_t nratios, int qmin, int qmax, int8_t* codes,
                float* scales, float* err, int threads);

// w [n, b] row-major (read); the groups of 4 start at column 0 of the block (the caller's blocks
// start at multiples of 4 along K); outputs the pruned and updated values float32 [n, b] and err
// float32 [n, b].
void sparsegpt24_block(const float* w, size_t n, size_t b, const float* h, float* values,
                       float* err, int threads);

}  // namespace pq
