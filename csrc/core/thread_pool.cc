#include "core/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
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
      (*fn_)(t);
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

}  // namespace

void parallel_for(size_t n_tasks, int n_threads, const std::function<void(size_t)>& fn) {
  if (n_tasks == 0) return;
  if (n_threads > static_cast<int>(n_tasks)) n_threads = static_cast<int>(n_tasks);
  if (n_threads <= 1) return run_serial(n_tasks, fn);
  ThreadPool& p = pool();
  std::unique_lock<std::mutex> lock(p.run_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return run_serial(n_tasks, fn);  // pool busy with another caller
  p.run(n_tasks, n_threads, fn);
}

}  // namespace pq
