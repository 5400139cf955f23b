#include "core/hugepage_arena.h"

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>

// Under AddressSanitizer the buffers come from the heap, whose bounds it checks (it cannot see
// past the end of a buffer inside an arena).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PQ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define PQ_ASAN 1
#endif
#if defined(__linux__) && !defined(PQ_ASAN)
#define PQ_ARENAS 1
#include <sys/mman.h>
#endif

namespace pq {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kArenaBytes = size_t{64} << 20;  // 32 huge pages
constexpr size_t kAlign = 64;

struct Arena {
  char* base = nullptr;
  size_t size = 0, used = 0, live = 0;
};

#if defined(PQ_ARENAS)
// A mapping of `bytes` (rounded to 4 KiB) that starts on a 2 MiB boundary, advised for huge
// pages; its end is not padded, so a partial last 2 MiB stays on small pages.
char* map_aligned(size_t bytes) {
  const size_t len = (bytes + 4095) & ~size_t{4095};
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (r + kHugePage - 1) & ~(kHugePage - 1);
  if (start > r) munmap(raw, start - r);
  const uintptr_t end = r + len + kHugePage;
  if (end > start + len) munmap(reinterpret_cast<void*>(start + len), end - (start + len));
  madvise(reinterpret_cast<void*>(start), len, MADV_HUGEPAGE);
  return reinterpret_cast<char*>(start);
}
void unmap(char* p, size_t bytes) { munmap(p, (bytes + 4095) & ~size_t{4095}); }
#endif

class Arenas {
 public:
  void* alloc(size_t bytes) {
#if defined(PQ_ARENAS)
    const size_t need = ((bytes ? bytes : 1) + kAlign - 1) & ~(kAlign - 1);
    std::lock_guard<std::mutex> lock(mu_);
    if (need > kArenaBytes / 4) {  // large: a mapping of its own
      char* p = map_aligned(need);
      if (!p) return nullptr;
      arenas_[p] = Arena{p, need, need, 1};
      return p;
    }
    if (!current_ || current_->used + need > current_->size) {
      char* p = map_aligned(kArenaBytes);
      if (!p) return nullptr;
      if (current_ && current_->live == 0) release(current_);
      current_ = &(arenas_[p] = Arena{p, kArenaBytes, 0, 0});
    }
    void* out = current_->base + current_->used;
    current_->used += need;
    ++current_->live;
    return out;
#else
    return std::aligned_alloc(kAlign, ((bytes ? bytes : 1) + kAlign - 1) & ~(kAlign - 1));
#endif
  }

  void free(void* ptr) {
    if (!ptr) return;
#if defined(PQ_ARENAS)
    std::lock_guard<std::mutex> lock(mu_);
    auto it = arenas_.upper_bound(static_cast<char*>(ptr));  // the arena holding ptr
    if (it == arenas_.begin()) return;
    Arena& a = (--it)->second;
    if (--a.live > 0) return;
    if (&a == current_) {
      a.used = 0;  // empty: the current arena starts over
      return;
    }
    release(&a);
#else
    std::free(ptr);
#endif
  }

 private:
#if defined(PQ_ARENAS)
  void release(Arena* a) {
    char* base = a->base;
    unmap(base, a->size);
    arenas_.erase(base);
  }
#endif

  std::mutex mu_;
  std::map<char*, Arena> arenas_;  // by base address
  Arena* current_ = nullptr;
};

Arenas& arenas() {
  static Arenas* a = new Arenas();  // (never destroyed: buffers may outlive static teardown)
  return *a;
}

}  // namespace

void* hugepage_alloc(size_t bytes) { return arenas().alloc(bytes); }
void hugepage_free(void* p) { arenas().free(p); }

bool hugepage_arenas_available() {
#if defined(PQ_ARENAS)
  return true;
#else
  return false;
#endif
}

}  // namespace pq
