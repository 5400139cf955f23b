// The compact SPARQ activation format (see src/pyquant/sparq.py for the layout in words): n-bit
// windows plus placement bits, one code per activation (bSPARQ) or per pair (vSPARQ), packed
// LSB-first along each row. Portable code; the hot path (the GEMM) never needs it.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "core/thread_pool.h"
#include "sparq/sparq.h"

namespace pq {
namespace {

int ceil_log2(int v) {  // bits to hold codes 0..v-1
  int b = 0;
  while ((1 << b) < v) ++b;
  return b;
}

struct Layout {
  int n, pb, slot, code_bits, pb2;
  bool pairs, escape;
  int shifts[8], n_shifts;  // allowed shifts, ascending: placement i -> shift shifts[i]
  int wide[8], n_wide;      // the 2n-bit window's placements (zero partner)
};

Layout layout(const SparqConfig& c) {
  Layout l{};
  l.n = c.bits;
  l.pairs = c.pairs;
  const uint32_t mask = sparq_shift_mask(c.bits, c.options);
  for (int t = 0; t < 8; ++t)
    if ((mask >> t) & 1u) l.shifts[l.n_shifts++] = t;
  for (int t = 0; t <= 8 - 2 * c.bits; ++t) l.wide[l.n_wide++] = t;
  l.pb = ceil_log2(l.n_shifts);
  l.pb2 = ceil_log2(l.n_wide);
  l.slot = l.n + l.pb;
  l.escape = l.n_shifts < (1 << l.pb);
  l.code_bits = c.pairs ? 2 * l.slot + (l.escape ? 0 : 1) : l.slot;
  return l;
}

// window | placement << nw for a trimmed value (the smallest shift that holds it exactly).
uint32_t place(uint32_t v, int nw, const int* shifts, int count) {
  for (int i = 0; i < count; ++i) {
    const int s = shifts[i];
    if ((v >> s) < (1u << nw) && (v & ((1u << s) - 1)) == 0)
      return (v >> s) | (static_cast<uint32_t>(i) << nw);
  }
  return 0;  // unreachable for trimmed values
}

uint32_t unplace(uint32_t code, int nw, const int* shifts, int count) {
  const uint32_t i = std::min<uint32_t>(code >> nw, static_cast<uint32_t>(count - 1));
  return (code & ((1u << nw) - 1)) << shifts[i];
}

struct BitWriter {
  uint8_t* out;
  uint64_t acc = 0;
  int fill = 0;
  void put(uint32_t v, int bits) {
    acc |= static_cast<uint64_t>(v) << fill;
    fill += bits;
    while (fill >= 8) {
      *out++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      fill -= 8;
    }
  }
  void flush() {
    if (fill > 0) *out++ = static_cast<uint8_t>(acc);
  }
};

// The code of one trimmed value (bSPARQ) or of one trimmed pair (vSPARQ).
uint32_t encode_code(const Layout& l, uint32_t x0, uint32_t x1) {
  if (!l.pairs) return place(x0, l.n, l.shifts, l.n_shifts);
  const uint32_t esc = (1u << l.pb) - 1, nmask = (1u << l.n) - 1;
  if ((x0 != 0) != (x1 != 0)) {  // exactly one nonzero: it kept a 2n-bit window
    const uint32_t j = x1 != 0;
    const uint32_t p = place(j ? x1 : x0, 2 * l.n, l.wide, l.n_wide);
    if (!l.escape) return (1u << (2 * l.slot)) | j | (p << 1);
    const uint32_t mine = (p & nmask) | (esc << l.n), other = p >> l.n;
    return j == 0 ? mine | (other << l.slot) : other | (mine << l.slot);
  }
  return place(x0, l.n, l.shifts, l.n_shifts) | (place(x1, l.n, l.shifts, l.n_shifts) << l.slot);
}

int table_index(const SparqConfig& cfg) {  // (bits, options) set x pairs; rounding is irrelevant
  const int set = cfg.bits == 4 ? (cfg.options == 5 ? 0 : cfg.options == 3 ? 1 : 2)
                                : (cfg.bits == 3 ? 3 : 4);
  return set * 2 + (cfg.pairs ? 1 : 0);
}

// trimmed value (or pair x0 << 8 | x1) -> code, built once per process and config (128 KiB for
// pairs): encoding is one load per code, no data-dependent branches.
const uint16_t* encode_table(const SparqConfig& cfg, const Layout& l) {
  static std::once_flag once[10];
  static std::unique_ptr<uint16_t[]> tables[10];
  const int idx = table_index(cfg);
  std::call_once(once[idx], [&] {
    const uint32_t count = l.pairs ? 65536 : 256;
    tables[idx].reset(new uint16_t[count]);
    for (uint32_t v = 0; v < count; ++v)
      tables[idx][v] = static_cast<uint16_t>(l.pairs ? encode_code(l, v >> 8, v & 255) : encode_code(l, v, 0));
  });
  return tables[idx].get();
}

void encode_row(const Layout& l, const uint16_t* table, const uint8_t* t, size_t k, uint8_t* out) {
  BitWriter bw{out};
  if (!l.pairs) {
    for (size_t i = 0; i < k; ++i) bw.put(table[t[i]], l.code_bits);
  } else {
    for (size_t i = 0; i < k; i += 2) {
      const uint32_t x1 = i + 1 < k ? t[i + 1] : 0;  // odd tail: implicit zero partner
      bw.put(table[(uint32_t{t[i]} << 8) | x1], l.code_bits);
    }
  }
  bw.flush();
}

// The value(s) one code stands for: low byte = the first (or only) activation, high byte = the
// second of a pair.
uint16_t decode_code(const Layout& l, uint32_t code) {
  if (!l.pairs) return static_cast<uint16_t>(unplace(code, l.n, l.shifts, l.n_shifts));
  const uint32_t esc = (1u << l.pb) - 1, nmask = (1u << l.n) - 1, smask = (1u << l.slot) - 1;
  const uint32_t s0 = code & smask, s1 = (code >> l.slot) & smask;
  uint32_t v0, v1;
  if (l.escape && (s0 >> l.n) == esc) {
    v0 = unplace((s0 & nmask) | (s1 << l.n), 2 * l.n, l.wide, l.n_wide);
    v1 = 0;
  } else if (l.escape && (s1 >> l.n) == esc) {
    v0 = 0;
    v1 = unplace((s1 & nmask) | (s0 << l.n), 2 * l.n, l.wide, l.n_wide);
  } else if (!l.escape && ((code >> (2 * l.slot)) & 1u)) {
    const uint32_t p = (code >> 1) & ((1u << (2 * l.n + l.pb2)) - 1);
    const uint32_t v = unplace(p, 2 * l.n, l.wide, l.n_wide);
    v0 = (code & 1u) ? 0 : v;
    v1 = (code & 1u) ? v : 0;
  } else {
    v0 = unplace(s0, l.n, l.shifts, l.n_shifts);
    v1 = unplace(s1, l.n, l.shifts, l.n_shifts);
  }
  return static_cast<uint16_t>(v0 | (v1 << 8));
}

// code -> values for every code of a config (at most 2^15 entries, 64 KiB), built once per
// process and config: decoding is then one bit-field extract and one load per code, with no
// data-dependent branches (the escape/normal choice is random on real activations).
const uint16_t* decode_table(const SparqConfig& cfg, const Layout& l) {
  static std::once_flag once[10];
  static std::unique_ptr<uint16_t[]> tables[10];
  const int idx = table_index(cfg);
  std::call_once(once[idx], [&] {
    const uint32_t count = 1u << l.code_bits;
    tables[idx].reset(new uint16_t[count]);
    for (uint32_t code = 0; code < count; ++code) tables[idx][code] = decode_code(l, code);
  });
  return tables[idx].get();
}

void decode_row(const Layout& l, const uint16_t* table, const uint8_t* in, size_t bytes,
                size_t k, uint8_t* out) {
  const size_t codes = l.pairs ? (k + 1) / 2 : k;
  const uint32_t mask = (1u << l.code_bits) - 1;
  size_t i = 0;
  // Fast part: a 4-byte window holds any code (<= 15 bits at a bit offset <= 7).
  for (; i < codes; ++i) {
    const size_t bit = i * static_cast<size_t>(l.code_bits);
    if (bit / 8 + 4 > bytes) break;
    uint32_t w;
    std::memcpy(&w, in + bit / 8, 4);
    const uint16_t v = table[(w >> (bit % 8)) & mask];
    if (l.pairs) {
      if (2 * i + 1 < k)
        std::memcpy(out + 2 * i, &v, 2);  // little-endian (x86-64, aarch64 Linux): low byte first
      else
        out[2 * i] = static_cast<uint8_t>(v);
    } else {
      out[i] = static_cast<uint8_t>(v);
    }
  }
  // The last few codes: bytes past the row end read as zero.
  for (; i < codes; ++i) {
    const size_t bit = i * static_cast<size_t>(l.code_bits);
    uint32_t w = 0;
    for (size_t b = 0; b < 4 && bit / 8 + b < bytes; ++b) w |= uint32_t{in[bit / 8 + b]} << (8 * b);
    const uint16_t v = table[(w >> (bit % 8)) & mask];
    if (l.pairs) {
      out[2 * i] = static_cast<uint8_t>(v);
      if (2 * i + 1 < k) out[2 * i + 1] = static_cast<uint8_t>(v >> 8);
    } else {
      out[i] = static_cast<uint8_t>(v);
    }
  }
}

}  // namespace

int sparq_code_bits(const SparqConfig& cfg) { return layout(cfg).code_bits; }

size_t sparq_encoded_row_bytes(const SparqConfig& cfg, size_t k) {
  const size_t codes = cfg.pairs ? (k + 1) / 2 : k;
  return (codes * static_cast<size_t>(layout(cfg).code_bits) + 7) / 8;
}

void sparq_encode_run(const uint8_t* a, size_t rows, size_t k, const SparqConfig& cfg,
                      uint8_t* out, int threads, Isa isa) {
  if (rows == 0 || k == 0) return;
  const SparqPlan& plan = sparq_plan(cfg);
  const Layout l = layout(cfg);
  const uint16_t* table = encode_table(cfg, l);
  const SparqTrimRowFn trim = sparq_kernels(isa).trim_row;
  const size_t row_bytes = sparq_encoded_row_bytes(cfg, k);
  const size_t per_task = std::max<size_t>(1, (size_t{1} << 16) / k);
  const size_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, threads, [&](size_t t) {
    std::unique_ptr<uint8_t[]> trimmed(new uint8_t[k]);
    for (size_t r = t * per_task; r < std::min(rows, (t + 1) * per_task); ++r) {
      trim(plan, a + r * k, k, trimmed.get());
      encode_row(l, table, trimmed.get(), k, out + r * row_bytes);
    }
  });
}

void sparq_decode_row(const SparqConfig& cfg, const uint8_t* in, size_t k, uint8_t* out) {
  const Layout l = layout(cfg);
  decode_row(l, decode_table(cfg, l), in, sparq_encoded_row_bytes(cfg, k), k, out);
}

void sparq_decode_run(const uint8_t* payload, size_t rows, size_t k, const SparqConfig& cfg,
                      uint8_t* out, int threads) {
  if (rows == 0 || k == 0) return;
  const Layout l = layout(cfg);
  const uint16_t* table = decode_table(cfg, l);
  const size_t row_bytes = sparq_encoded_row_bytes(cfg, k);
  const size_t per_task = std::max<size_t>(1, (size_t{1} << 16) / k);
  const size_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, threads, [&](size_t t) {
    for (size_t r = t * per_task; r < std::min(rows, (t + 1) * per_task); ++r)
      decode_row(l, table, payload + r * row_bytes, row_bytes, k, out + r * k);
  });
}

}  // namespace pq
