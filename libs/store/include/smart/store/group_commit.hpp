// Group commit for any write transaction: concurrent callers' functions run
// one after another inside one database transaction, and each caller learns
// its result once that transaction is durable (one flush for the group; the
// next group runs meanwhile, Database::TransactEarly). A function's refusal
// (an error it returns) undoes its own work only; the others commit: a group
// runs first without savepoints, and after a refusal again with one per
// function (and the next groups too, for a while). While the database is
// still flushing an earlier commit, jobs that arrive join the running group.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "smart/store/store.hpp"

namespace smart::store {

class GroupCommitter {
 public:
  using Fn = std::function<Result<void>(Tx&)>;
  using Done = std::function<void(Result<void>)>;

  explicit GroupCommitter(Database& db, size_t max_group = 256);
  ~GroupCommitter();  // finishes what is queued
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Like Database::Transact(kWrite, fn), with the commit shared. `fn` may run
  // more than once (a retried group), so it must only touch the transaction
  // and its own captured results. Refused (kInternal commit_deadlock) where
  // MayWaitForCommits() is false: in a job or in a `done`.
  Result<void> Transact(const Fn& fn);

  // The same without waiting: `done` gets the result on the committer thread
  // or the database's flushing thread once the group is durable (or failed).
  // Keep `done` quick; it may queue more work with TransactAsync but must not
  // wait for a commit (Transact, Database::Transact(kWrite)).
  void TransactAsync(Fn fn, Done done);

  // Jobs waiting for the next group.
  size_t queued();
  // Jobs that joined a group already running because the database was
  // still flushing an earlier commit (Database::Flushing).
  uint64_t joined() const { return joined_.load(); }

 private:
  struct Job {
    Fn fn;
    Done done;
  };
  void Run();
  bool TakeWhileFlushing(std::vector<Job>& jobs);

  static constexpr const char* kRefused = "group_refused";  // the optimistic run's own error
  static constexpr int kCarefulGroups = 8;                  // groups with savepoints after a refusal

  Database& db_;
  size_t max_group_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  size_t unflushed_ = 0;    // groups committed whose callers are not answered yet
  int careful_groups_ = 0;  // the committer's: groups left to run with savepoints from the start
  bool stopping_ = false;
  std::atomic<uint64_t> joined_{0};
  std::thread committer_;  // last: stops first
};

}  // namespace smart::store
