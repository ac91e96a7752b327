// The database interface every domain library uses. Two backends, chosen by URL:
//   sqlite:./data/smart.db   (WAL, one writer connection and a pool of readers)
//   postgresql://...         (libpq, a pool of connections)
// SQL is written once, PostgreSQL-style: placeholders $1, $2, ...; the SQLite
// backend translates them. Errors are typed so both backends behave alike:
//   unique or foreign-key violation -> ErrorKind::kConflict
//   NOT NULL / CHECK violation      -> ErrorKind::kInvalid
//   serialization failure, deadlock, busy -> ErrorKind::kRetryable (Transact retries)
//   connection lost, disk full      -> ErrorKind::kUnavailable
//   anything else (SQL bugs)        -> ErrorKind::kInternal
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::store {

struct Blob {
  std::string bytes;
  bool operator==(const Blob&) const = default;
};

using Value = std::variant<std::monostate, int64_t, double, std::string, Blob>;

class Row {
 public:
  explicit Row(std::vector<Value> values) : values_(std::move(values)) {}
  size_t size() const { return values_.size(); }
  bool IsNull(size_t i) const { return std::holds_alternative<std::monostate>(values_.at(i)); }
  // Typed access; a type mismatch is a programming error and throws.
  int64_t Int(size_t i) const { return std::get<int64_t>(values_.at(i)); }
  double Double(size_t i) const;
  const std::string& Text(size_t i) const { return std::get<std::string>(values_.at(i)); }
  const Blob& Bytes(size_t i) const { return std::get<Blob>(values_.at(i)); }
  const Value& at(size_t i) const { return values_.at(i); }

 private:
  std::vector<Value> values_;
};

class Tx;

// What a library keeps in memory for the rest of a transaction and writes
// just before it commits: the ledger writes its account totals and chain head
// once per group commit instead of once per call. Tx::Savepoint marks it and
// Tx::RollbackToSavepoint returns it to the mark.
class TxState {
 public:
  virtual ~TxState() = default;
  virtual Result<void> Flush(Tx& tx) = 0;
  virtual void Mark() = 0;
  virtual void RollbackToMark() = 0;
};

// A transaction. Valid only inside the Transact callback that received it; not thread-safe.
class Tx {
 public:
  virtual ~Tx() = default;
  virtual Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) = 0;
  // Returns the number of rows changed.
  virtual Result<int64_t> Exec(std::string_view sql, std::span<const Value> params) = 0;
  // Several statements without parameters (migrations).
  virtual Result<void> ExecScript(std::string_view sql) = 0;
  // A statement whose outcome the caller does not read: run now, or sent
  // without waiting (PostgreSQL: libpq's pipeline mode) and its outcome read
  // with the next statement's. An error it meets is returned by that later
  // call, by Sync, or by the commit; statements run in order either way.
  virtual Result<void> ExecLater(std::string_view sql, std::span<const Value> params) {
    auto r = Exec(sql, params);
    if (!r) return r.take_error();
    return Ok();
  }
  // Waits for what ExecLater sent and returns the first error it met.
  virtual Result<void> Sync() { return Ok(); }

  Result<std::vector<Row>> Query(std::string_view sql, std::initializer_list<Value> params = {}) {
    return Query(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<int64_t> Exec(std::string_view sql, std::initializer_list<Value> params = {}) {
    return Exec(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Result<void> ExecLater(std::string_view sql, std::initializer_list<Value> params = {}) {
    return ExecLater(sql, std::span<const Value>(params.begin(), params.size()));
  }
  // The first row, or nullopt when there is none.
  Result<std::optional<Row>> QueryOne(std::string_view sql, std::initializer_list<Value> params = {});

  // One level of savepoint that also marks, rolls back or keeps every TxState.
  // A state added after the savepoint is dropped by the rollback.
  Result<void> Savepoint();
  Result<void> RollbackToSavepoint();
  Result<void> ReleaseSavepoint();
  // The state `key` (a library's tag address) added, or nullptr.
  TxState* State(const void* key) const;
  TxState& AddState(const void* key, std::unique_ptr<TxState> state);
  // Writes every state, in the order added (Transact does, before COMMIT).
  Result<void> FlushStates();

 private:
  struct Held {
    const void* key;
    std::unique_ptr<TxState> state;
  };
  std::vector<Held> states_;
  std::optional<size_t> savepoint_;  // states_.size() when the savepoint was taken
};

enum class TxMode {
  kRead,          // read-only, a consistent snapshot
  kWrite,         // read-write, READ COMMITTED on PostgreSQL; serialized on SQLite
  kSerializable,  // read-write, SERIALIZABLE everywhere
};

struct Options {
  int pool_size = 8;                    // connections (PostgreSQL) or readers (SQLite)
  int busy_timeout_ms = 5000;           // SQLite lock wait; PostgreSQL pool wait
  bool sqlite_synchronous_full = true;  // fsync every commit (durable across power loss)
  int max_retries = 10;                 // of retryable failures inside Transact
};

class Database {
 public:
  virtual ~Database() = default;
  // "sqlite" or "postgresql".
  virtual std::string_view backend() const = 0;
  // Runs `fn` in a transaction and commits if it returns ok; otherwise rolls
  // back and returns its error, leaving nothing half-written. A retryable
  // failure (from fn or commit) reruns fn, up to Options::max_retries times,
  // so fn must have no side effects outside the transaction. Thread-safe.
  virtual Result<void> Transact(TxMode mode, const std::function<Result<void>(Tx&)>& fn) = 0;
  // Transact(kWrite, fn) that returns once committed, maybe before the commit
  // is durable: `durable` runs once it is (on a thread of the database's, or
  // at once where every commit is durable when it returns), with an error if
  // the flush to disk failed; never when the transaction itself failed. Lets
  // a group committer run its next transaction while the disk flushes. These
  // are the writers' transactions: on PostgreSQL those of every process
  // sharing the database run one at a time (an advisory lock taken first),
  // so rows they lock in different orders cannot deadlock.
  virtual Result<void> TransactEarly(const std::function<Result<void>(Tx&)>& fn,
                                     std::function<void(Result<void>)> durable);
  // True while an earlier commit is being made durable (TransactEarly's
  // flush and its answers): a commit made now waits for that to end before
  // its own flush starts, so a group committer may as well go on adding
  // work to its transaction meanwhile.
  virtual bool Flushing() const { return false; }
  // A cheap round trip; Unavailable when the database cannot be reached.
  virtual Result<void> Ping() = 0;

  // Signals between the processes that share a database (PostgreSQL's
  // LISTEN/NOTIFY; none on SQLite, whose database one process owns).
  // Signal(channel) tells the others soon after, outside any transaction
  // (signals close together may arrive as one); Listen(channel, fn) runs fn
  // on a thread of the database's for each signal from another process, and
  // once when it starts listening and each time its listener connects again,
  // as signals may have been missed meanwhile. It listens until the handle
  // it returns is destroyed (which waits for a call of fn in progress);
  // nullptr where there is nothing to listen to. `channel`: [a-z_]{1,63}.
  // Destroy handles before the database.
  class Listening {
   public:
    virtual ~Listening() = default;
  };
  virtual void Signal(std::string_view channel) { (void)channel; }
  virtual std::unique_ptr<Listening> Listen(std::string channel, std::function<void()> fn) {
    (void)channel;
    (void)fn;
    return nullptr;
  }
};

// False on the threads that run commit callbacks (TransactEarly's `durable`,
// GroupCommitter's `done`): waiting there for a commit would wait for that
// very thread. Transact(kWrite) and GroupCommitter::Transact refuse there.
bool MayWaitForCommits();

// Opens the database named by `url`. Errors name the URL with any password hidden.
Result<std::unique_ptr<Database>> Open(const std::string& url, const Options& options = {});

// SQL text of a multi-row VALUES list: `row` (one row, ?1 ... ?k its
// parameters) `n` times, comma separated, the parameters numbered from
// $`first`, `columns` a row. ValuesRows(2, 2, 1, "(?1, ?2)") is
// "($1, $2), ($3, $4)".
std::string ValuesRows(size_t n, size_t columns, size_t first, std::string_view row);

// The shapes of a multi-row statement: make(n) for n = 1, 2, 4 ... max (a
// power of two), texts[k] the one for 2^k rows. Built once by the caller; a
// writer then takes the largest that fits what is left (45 rows: 32, 8, 4, 1).
std::vector<std::string> PowersOfTwo(size_t max, const std::function<std::string(size_t)>& make);

// Rewrites $1..$N placeholders to SQLite's ?1..?N, leaving string literals,
// quoted identifiers and comments alone. Exposed for tests.
std::string TranslatePlaceholders(std::string_view sql);

}  // namespace smart::store
