#include "smart/store/group_commit.hpp"

#include <exception>
#include <future>
#include <vector>

namespace smart::store {

GroupCommitter::GroupCommitter(Database& db, size_t max_group)
    : db_(db), max_group_(max_group), committer_([this] { Run(); }) {}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  committer_.join();
}

Result<void> GroupCommitter::Transact(const Fn& fn) {
  if (std::this_thread::get_id() == committer_.get_id()) {
    return Error::Internal("commit_deadlock", "Transact called on the committer thread");
  }
  std::promise<Result<void>> promise;
  auto done = promise.get_future();
  TransactAsync(std::cref(fn), [&promise](Result<void> r) { promise.set_value(std::move(r)); });
  return done.get();
}

void GroupCommitter::TransactAsync(Fn fn, Done done) {
  {
    std::lock_guard lk(mu_);
    if (!stopping_) {
      queue_.push_back(Job{std::move(fn), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(Error::Unavailable("database_stopping", "the database is shutting down"));
}

void GroupCommitter::Run() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;
    std::vector<Job> jobs;
    while (!queue_.empty() && jobs.size() < max_group_) {
      jobs.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lk.unlock();
    std::vector<Result<void>> results;
    auto committed = db_.Transact(TxMode::kWrite, [&](Tx& tx) -> Result<void> {
      results.assign(jobs.size(), Ok());
      for (size_t i = 0; i < jobs.size(); ++i) {
        SMART_TRY(tx.Savepoint());
        Result<void> r;
        for (int attempt = 0; attempt < 3; ++attempt) {
          try {
            r = jobs[i].fn(tx);
          } catch (const std::exception& e) {
            r = Error::Internal("exception", e.what());
          }
          if (r || r.error().kind != ErrorKind::kRetryable) break;
          SMART_TRY(tx.RollbackToSavepoint());
        }
        if (!r) SMART_TRY(tx.RollbackToSavepoint());  // this caller's work only
        SMART_TRY(tx.ReleaseSavepoint());
        results[i] = std::move(r);
      }
      return Ok();
    });
    for (size_t i = 0; i < jobs.size(); ++i) jobs[i].done(committed ? std::move(results[i]) : committed);
    lk.lock();
  }
}

}  // namespace smart::store
