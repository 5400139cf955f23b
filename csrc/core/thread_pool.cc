#include "core/thread_pool.h"

#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pq {
namespace {

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Caller holds run_mu_. The caller works too and never waits for a helper that has not
  // started: once the caller runs out of tasks it closes the run, and only helpers that joined
  // before that are waited for. (A helper woken late, e.g. while PyTorch's OpenMP threads spin
  // on the other cores, would otherwise make every call wait for the OS scheduler.)
  void run(size_t n_tasks, int n_threads, const std::function<void(size_t)>& fn) {
    const int helpers = n_threads - 1;
    grow(helpers);
    std::unique_lock<std::mutex> lock(mu_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_.store(0);
    failed_.store(false);
    error_ = nullptr;
    active_helpers_ = helpers;
    open_ = true;
    ++generation_;
    lock.unlock();
    cv_.notify_all();
    work();
    lock.lock();
    open_ = false;
    done_cv_.wait(lock, [&] { return joined_ == 0; });
    fn_ = nullptr;
    active_helpers_ = 0;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);  // (the first task's exception, e.g. bad_alloc, in the caller)
    }
  }

  std::mutex run_mu_;

 private:
  void grow(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    while (static_cast<int>(workers_.size()) < n) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { loop(index); });
    }
  }

  void work() {
    for (;;) {
      const size_t t = next_.fetch_add(1);
      if (t >= n_tasks_) break;
      try {
        (*fn_)(t);
      } catch (...) {  // never escape a helper thread (std::terminate): rethrown by run()
        if (!failed_.exchange(true)) error_ = std::current_exception();
        next_.store(n_tasks_);
      }
    }
  }

  void loop(int index) {
    unsigned long seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || (generation_ != seen && index < active_helpers_); });
      if (stop_) return;
      seen = generation_;
      if (!open_) continue;  // the caller already finished this run's tasks
      ++joined_;
      lock.unlock();
      work();
      lock.lock();
      if (--joined_ == 0 && !open_) done_cv_.notify_one();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(size_t)>* fn_ = nullptr;
  size_t n_tasks_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;  // written once per run (guarded by failed_), read after the join
  int active_helpers_ = 0;
  int joined_ = 0;     // helpers inside work() for the current run
  bool open_ = false;  // helpers may still join the current run
  unsigned long generation_ = 0;
  bool stop_ = false;
};

ThreadPool& pool() {
  // Leaked on purpose: joining threads during interpreter shutdown is not safe.
  static ThreadPool* p = new ThreadPool();
  return *p;
}

void run_serial(size_t n_tasks, const std::function<void(size_t)>& fn) {
  for (size_t t = 0; t < n_tasks; ++t) fn(t);
}

// ---- the process's OpenMP runtime, if one is loaded (PyTorch's libgomp)
using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);

struct GompLookup {
  std::string path;
  unsigned long long adds = 0;  // objects loaded so far (dl_iterate_phdr's counter)
};

// The first loaded libgomp, PyTorch's own copy (torch/lib) preferred if several are loaded.
[[maybe_unused]] int find_libgomp(dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<GompLookup*>(data);
  out->adds = info->dlpi_adds;
  const char* name = info->dlpi_name;
  if (name && std::strstr(name, "libgomp") &&
      (out->path.empty() || std::strstr(name, "torch") != nullptr))
    out->path = name;
  return 0;
}

// Only the process's load counter (the first callback: O(1)).
[[maybe_unused]] int read_adds(dl_phdr_info* info, size_t, void* data) {
  *static_cast<unsigned long long*>(data) = info->dlpi_adds;
  return 1;
}

std::string g_gomp_path;  // written once, under host_gomp's mutex, before `found` is published

// Looked up again only when the process has loaded new objects since the last look.
GompParallelFn host_gomp() {
#if defined(__SANITIZE_THREAD__) || defined(PQ_NO_HOST_OPENMP)  // TSan; static test drivers
  return nullptr;
#else
  static const bool enabled = [] {
    const char* v = std::getenv("PYQUANT_OPENMP");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  static std::atomic<GompParallelFn> found{nullptr};
  static std::atomic<unsigned long long> seen_adds{0};
  static std::mutex mu;
  if (!enabled) return nullptr;
  if (GompParallelFn f = found.load(std::memory_order_acquire)) return f;
  unsigned long long adds = 0;
  dl_iterate_phdr(read_adds, &adds);
  if (adds == seen_adds.load()) return nullptr;  // nothing loaded since the last full look
  std::lock_guard<std::mutex> lock(mu);
  GompLookup look;
  dl_iterate_phdr(find_libgomp, &look);
  seen_adds.store(look.adds);
  if (look.path.empty()) return nullptr;
  void* handle = dlopen(look.path.c_str(), RTLD_NOW | RTLD_NOLOAD);  // already loaded: no new copy
  if (!handle) return nullptr;
  auto f = reinterpret_cast<GompParallelFn>(dlsym(handle, "GOMP_parallel"));
  if (f) g_gomp_path = look.path;
  found.store(f, std::memory_order_release);
  return f;
#endif
}

struct GompJob {
  const std::function<void(size_t)>* fn;
  size_t n_tasks;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
};

void gomp_worker(void* data) {
  auto* job = static_cast<GompJob*>(data);
  for (;;) {
    const size_t t = job->next.fetch_add(1);
    if (t >= job->n_tasks) return;
    try {
      (*job->fn)(t);
    } catch (...) {  // never unwind through the OpenMP runtime: rethrown by the caller
      if (!job->failed.exchange(true)) job->error = std::current_exception();
      job->next.store(job->n_tasks);
    }
  }
}

}  // namespace

std::string parallel_runtime() { return host_gomp() ? g_gomp_path : std::string(); }

void parallel_for(size_t n_tasks, int n_threads, const std::function<void(size_t)>& fn) {
  if (n_tasks == 0) return;
  if (n_threads > static_cast<int>(n_tasks)) n_threads = static_cast<int>(n_tasks);
  if (n_threads <= 1) return run_serial(n_tasks, fn);
  ThreadPool& p = pool();
  std::unique_lock<std::mutex> lock(p.run_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return run_serial(n_tasks, fn);  // pool busy with another caller
  if (GompParallelFn gomp = host_gomp()) {
    GompJob job;
    job.fn = &fn;
    job.n_tasks = n_tasks;
    gomp(gomp_worker, &job, static_cast<unsigned>(n_threads), 0);
    if (job.error) std::rethrow_exception(job.error);
    return;
  }
  p.run(n_tasks, n_threads, fn);
}

}  // namespace pq
