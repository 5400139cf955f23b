// A small persistent std::thread pool (no OpenMP runtime of our own: PyTorch ships one, and two
// runtimes in one process oversubscribe the cores). When the process has already loaded an
// OpenMP runtime (libgomp: PyTorch's bundled copy), parallel_for runs on that runtime's threads
// instead (GOMP_parallel, looked up in the loaded library, never loading one): PyTorch's
// workers spin-wait between its ops, so inside a model our own helper threads would rarely get
// a core. PYQUANT_OPENMP=0 turns this off (and ThreadSanitizer builds, which cannot see
// libgomp's synchronization).
//
// parallel_for(n_tasks, n_threads, fn) runs fn(task) for every task in [0, n_tasks) on up to
// n_threads threads (the caller is one of them) and returns when all are done. Tasks are handed
// out dynamically. If another thread is already running a parallel_for on the pool, the call runs
// its tasks serially on the calling thread instead of waiting, so concurrent callers never block
// each other or deadlock.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

namespace pq {

void parallel_for(size_t n_tasks, int n_threads, const std::function<void(size_t)>& fn);

// Where parallel_for's threads come from now: the path of the host's OpenMP runtime, or "" for
// our own pool (none loaded, PYQUANT_OPENMP=0, or a ThreadSanitizer build).
std::string parallel_runtime();

}  // namespace pq
