// A small persistent std::thread pool (no OpenMP: PyTorch ships its own runtime, and two runtimes
// in one process oversubscribe the cores).
//
// parallel_for(n_tasks, n_threads, fn) runs fn(task) for every task in [0, n_tasks) on up to
// n_threads threads (the caller is one of them) and returns when all are done. Tasks are handed
// out dynamically. If another thread is already running a parallel_for on the pool, the call runs
// its tasks serially on the calling thread instead of waiting, so concurrent callers never block
// each other or deadlock.
#pragma once
#include <cstddef>
#include <functional>

namespace pq {

void parallel_for(size_t n_tasks, int n_threads, const std::function<void(size_t)>& fn);

}  // namespace pq
