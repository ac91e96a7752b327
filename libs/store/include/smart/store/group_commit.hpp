// Group commit for any write transaction: concurrent callers' functions run
// one after another inside one database transaction, each in a savepoint,
// and each caller returns once that transaction has committed (one fsync for
// the group). A function's refusal (an error it returns) rolls back its own
// savepoint only; the others commit. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "smart/store/store.hpp"

namespace smart::store {

class GroupCommitter {
 public:
  explicit GroupCommitter(Database& db, size_t max_group = 256);
  ~GroupCommitter();  // finishes what is queued
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Like Database::Transact(kWrite, fn), with the commit shared. `fn` may run
  // more than once (a retried group), so it must only touch the transaction
  // and its own captured results.
  Result<void> Transact(const std::function<Result<void>(Tx&)>& fn);

 private:
  struct Job {
    const std::function<Result<void>(Tx&)>* fn;
    std::promise<Result<void>> done;
  };
  void Run();

  Database& db_;
  size_t max_group_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread committer_;  // last: stops first
};

}  // namespace smart::store
