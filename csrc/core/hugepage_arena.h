// Memory for weights that decode streams once per token, on transparent huge pages.
//
// On 4 KiB pages a cold GEMV walks the page tables once per 4 KiB of weights: 4-14% of a 1-4 MB
// GEMV on Zen 5 (docs/notes/nn_forward.md, 32nd session). Linux backs an madvise(MADV_HUGEPAGE)
// range with 2 MiB pages only where an aligned 2 MiB range lies whole inside the mapping, so a
// buffer of its own would need 2 MiB alignment and still keep its tail on small pages, and
// most layers' weights are 0.3-4 MB. Buffers are therefore cut from shared 2 MiB-aligned arenas
// (one bump pointer, 64-byte aligned): a model's weights lie back to back on huge pages, at most
// one partly used huge page per arena. Freed space is reused (first fit, neighbours merged), and
// an arena is unmapped when its last buffer is freed. Elsewhere (not Linux, or an AddressSanitizer
// build) buffers come from the ordinary heap.
#pragma once
#include <cstddef>

namespace pq {

// 64-byte aligned, at least `bytes` long (a zero-byte request still gives a valid pointer);
// free with hugepage_free. Thread-safe. nullptr if the memory cannot be had.
void* hugepage_alloc(size_t bytes);
void hugepage_free(void* p);
// Whether p points into a live buffer from hugepage_alloc (a module's buffer already in arena
// memory is not copied again).
bool hugepage_owns(const void* p);

// Whether buffers come from huge-page arenas here (Linux, not under AddressSanitizer).
bool hugepage_arenas_available();

}  // namespace pq
