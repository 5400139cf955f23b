#include "core/hugepage_arena.h"

#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>

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
  size_t size = 0, used = 0, live = 0;  // used: the bump pointer (offset)
  bool own = false;                     // one large buffer's mapping of its own
  std::map<size_t, size_t> free;        // freed blocks below `used`: offset -> bytes
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

// Freed space is reused first fit (a module reloaded in a loop makes and drops buffers of the
// same sizes), so resident memory follows the live buffers, not the history.
class Arenas {
 public:
  void* alloc(size_t bytes) {
    if (bytes > (size_t{1} << 48)) return nullptr;  // (no such memory; the roundings stay exact)
#if defined(PQ_ARENAS)
    const size_t need = ((bytes ? bytes : 1) + kAlign - 1) & ~(kAlign - 1);
    std::lock_guard<std::mutex> lock(mu_);
    if (need > kArenaBytes / 4) {  // large: a mapping of its own
      char* p = map_aligned(need);
      if (!p) return nullptr;
      arenas_[p] = Arena{p, need, need, 1, true, {}};
      sizes_[p] = need;
      return p;
    }
    char* out = reuse(need);
    if (!out) {
      if (!current_ || current_->used + need > current_->size) {
        char* p = map_aligned(kArenaBytes);
        if (!p) return nullptr;
        if (current_ && current_->used < current_->size) {  // its tail: a free block now
          current_->free[current_->used] = current_->size - current_->used;
          current_->used = current_->size;
        }
        current_ = &(arenas_[p] = Arena{p, kArenaBytes, 0, 0, false, {}});
      }
      out = current_->base + current_->used;
      current_->used += need;
      ++current_->live;
    }
    sizes_[out] = need;
    return out;
#else
    return std::aligned_alloc(kAlign, ((bytes ? bytes : 1) + kAlign - 1) & ~(kAlign - 1));
#endif
  }

  // Whether p lies inside a buffer this allocator handed out.
  bool owns(const void* p) {
#if defined(PQ_ARENAS)
    std::lock_guard<std::mutex> lock(mu_);
    char* c = const_cast<char*>(static_cast<const char*>(p));
    if (sizes_.count(c)) return true;
    auto a = arenas_.upper_bound(c);
    if (a == arenas_.begin()) return false;
    --a;
    if (c >= a->first + a->second.size) return false;
    // inside an arena: a live buffer unless the spot is free or past the bump pointer
    const size_t offset = static_cast<size_t>(c - a->first);
    if (offset >= a->second.used) return false;
    auto f = a->second.free.upper_bound(offset);
    return f == a->second.free.begin() || std::prev(f)->first + std::prev(f)->second <= offset;
#else
    (void)p;
    return false;
#endif
  }

  void free(void* ptr) {
    if (!ptr) return;
#if defined(PQ_ARENAS)
    std::lock_guard<std::mutex> lock(mu_);
    const auto sized = sizes_.find(static_cast<char*>(ptr));
    if (sized == sizes_.end()) return;  // (not ours)
    const size_t bytes = sized->second;
    sizes_.erase(sized);
    auto it = arenas_.upper_bound(static_cast<char*>(ptr));  // the arena holding ptr
    Arena& a = (--it)->second;
    if (--a.live == 0) {
      if (&a != current_) {
        unmap(a.base, a.size);
        arenas_.erase(it);
      } else {  // empty: the current arena starts over
        a.used = 0;
        a.free.clear();
      }
      return;
    }
    give_back(a, static_cast<size_t>(static_cast<char*>(ptr) - a.base), bytes, &a == current_);
#else
    std::free(ptr);
#endif
  }

 private:
  // The first freed block of any shared arena that holds `need` bytes, or nullptr.
  char* reuse(size_t need) {
    for (auto& [base, a] : arenas_) {
      if (a.own) continue;
      for (auto f = a.free.begin(); f != a.free.end(); ++f) {
        if (f->second < need) continue;
        const size_t offset = f->first, rest = f->second - need;
        a.free.erase(f);
        if (rest) a.free[offset + need] = rest;
        ++a.live;
        return base + offset;
      }
    }
    return nullptr;
  }

  // Returns [offset, offset + bytes) to the arena's free blocks, merged with its neighbours and,
  // in the current arena (the only one that bumps), with the bump space when it ends there.
  static void give_back(Arena& a, size_t offset, size_t bytes, bool current) {
    auto next = a.free.lower_bound(offset);
    if (next != a.free.end() && next->first == offset + bytes) {
      bytes += next->second;
      next = a.free.erase(next);
    }
    if (next != a.free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        offset = prev->first;
        bytes += prev->second;
        a.free.erase(prev);
      }
    }
    if (current && offset + bytes == a.used)
      a.used = offset;
    else
      a.free[offset] = bytes;
  }

  std::mutex mu_;
  std::map<char*, Arena> arenas_;  // by base address
  std::unordered_map<char*, size_t> sizes_;  // live buffers' sizes
  Arena* current_ = nullptr;
};

Arenas& arenas() {
  static Arenas* a = new Arenas();  // (never destroyed: buffers may outlive static teardown)
  return *a;
}

}  // namespace

void* hugepage_alloc(size_t bytes) { return arenas().alloc(bytes); }
void hugepage_free(void* p) { arenas().free(p); }
bool hugepage_owns(const void* p) { return arenas().owns(p); }

bool hugepage_arenas_available() {
#if defined(PQ_ARENAS)
  return true;
#else
  return false;
#endif
}

}  // namespace pq
