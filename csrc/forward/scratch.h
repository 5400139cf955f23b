// Per-thread reusable buffers for the fused forwards' temporaries (quantized activations, row
// scales): fresh multi-MB allocations cost page faults on every call. Slots: 0-1 the fused
// forwards (forward_sparq 0-3), 2 int8_gemm_run's converted rows (so forward_sparq must not
// call int8_gemm_run while it holds slot 2), 4-6 the conv driver (conv.cc), 7 int8_gemm_run's
// int16-tile rows, 8 the pair route's fixes (forward_sparq, int8_gemm_run).
#pragma once
#include <cstddef>
#include <memory>

namespace pq {

// A buffer of at least `bytes` bytes, 64-byte aligned, owned by the calling thread; `slot`
// distinguishes the buffers one call needs at once. Contents undefined; valid until the next
// call with the same slot on this thread.
inline void* thread_scratch(size_t bytes, int slot) {
  constexpr int kSlots = 9;
  struct Buf {
    std::unique_ptr<unsigned char[]> p;
    size_t size = 0;
  };
  thread_local Buf bufs[kSlots];
  Buf& b = bufs[slot];
  if (b.size < bytes + 64) {
    const size_t size = bytes + 64 + bytes / 4;
    b.p.reset(new unsigned char[size]);  // (size recorded after: a failed new keeps the old pair)
    b.size = size;
  }
  const size_t addr = reinterpret_cast<size_t>(b.p.get());
  return b.p.get() + ((64 - addr % 64) % 64);
}

}  // namespace pq
