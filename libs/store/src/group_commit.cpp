#include "smart/store/group_commit.hpp"

#include <exception>
#include <future>
#include <vector>

#include "internal.hpp"
#include "smart/core/thread_name.hpp"

namespace smart::store {

GroupCommitter::GroupCommitter(Database& db, size_t max_group)
    : db_(db), max_group_(max_group), committer_([this] {
        NameThread("group-commit");
        Run();
      }) {}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  committer_.join();
  // Answers still on their way from the database's flushing thread may call into the owner.
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return unflushed_ == 0; });
}

Result<void> GroupCommitter::Transact(const Fn& fn) {
  if (!MayWaitForCommits()) return detail::CommitDeadlock();
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

namespace {

// A job's function; an exception it throws is its refusal.
Result<void> RunJob(const GroupCommitter::Fn& fn, Tx& tx) {
  try {
    return fn(tx);
  } catch (const std::exception& e) {
    return Error::Internal("exception", e.what());
  }
}

}  // namespace

// While the database is still making an earlier commit durable, this
// group's commit would wait for that anyway: the jobs that arrived meanwhile
// join the group (fewer, larger commits under load; the same latency).
bool GroupCommitter::TakeWhileFlushing(std::vector<Job>& jobs) {
  if (jobs.size() >= max_group_ || !db_.Flushing()) return false;
  std::lock_guard lk(mu_);
  const size_t before = jobs.size();
  while (!queue_.empty() && jobs.size() < max_group_) {
    jobs.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  joined_ += jobs.size() - before;
  return jobs.size() > before;
}

size_t GroupCommitter::queued() {
  std::lock_guard lk(mu_);
  return queue_.size();
}

void GroupCommitter::Run() {
  detail::RunsCommitCallbacks();
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;
    auto jobs = std::make_shared<std::vector<Job>>();
    while (!queue_.empty() && jobs->size() < max_group_) {
      jobs->push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    ++unflushed_;
    lk.unlock();
    auto results = std::make_shared<std::vector<Result<void>>>();
    // Answered once durable, maybe on the database's thread while the next group runs.
    auto answer = [this, jobs, results](Result<void> outcome) {
      for (size_t i = 0; i < jobs->size(); ++i) (*jobs)[i].done(outcome ? std::move((*results)[i]) : outcome);
      std::lock_guard done_lk(mu_);
      if (--unflushed_ == 0) cv_.notify_all();
    };
    // First without savepoints (on PostgreSQL each is a round trip): a
    // refusal then undoes the whole group, which runs again with a savepoint
    // per job, so that only the refusing job's work is undone; the next
    // groups start with savepoints too for a while, since refusals come in runs.
    if (careful_groups_ == 0) {
      auto optimistic = db_.TransactEarly(
          [&](Tx& tx) -> Result<void> {
            for (size_t i = 0; i < jobs->size() || TakeWhileFlushing(*jobs); ++i) {
              if (!RunJob((*jobs)[i].fn, tx)) return Error::Conflict(kRefused, "a job of the group refused");
            }
            // What the jobs sent without waiting (Tx::ExecLater) may have failed too.
            if (!tx.Sync()) return Error::Conflict(kRefused, "a job's statement failed");
            return Ok();
          },
          [jobs, answer, results](Result<void> outcome) {
            results->assign(jobs->size(), Ok());
            answer(std::move(outcome));
          });
      if (optimistic || optimistic.error().code != kRefused) {
        if (!optimistic) answer(optimistic);
        lk.lock();
        continue;
      }
      careful_groups_ = kCarefulGroups;
    } else {
      --careful_groups_;
    }
    auto committed = db_.TransactEarly(
        [&](Tx& tx) -> Result<void> {
          results->assign(jobs->size(), Ok());
          for (size_t i = 0; i < jobs->size(); ++i) {
            SMART_TRY(tx.Savepoint());
            Result<void> r;
            for (int attempt = 0; attempt < 3; ++attempt) {
              r = RunJob((*jobs)[i].fn, tx);
              auto synced = tx.Sync();  // the job's own statements sent without waiting
              if (r && !synced) r = synced;
              if (r || r.error().kind != ErrorKind::kRetryable) break;
              SMART_TRY(tx.RollbackToSavepoint());
            }
            if (!r) SMART_TRY(tx.RollbackToSavepoint());  // this caller's work only
            SMART_TRY(tx.ReleaseSavepoint());
            (*results)[i] = std::move(r);
          }
          return Ok();
        },
        answer);
    if (!committed) answer(committed);
    lk.lock();
  }
}

}  // namespace smart::store
