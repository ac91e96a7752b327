// SQLite backend: one writer connection (SQLite allows one writer at a time;
// serializing writers here avoids SQLITE_BUSY storms) and a pool of reader
// connections that read WAL snapshots in parallel.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "internal.hpp"
#include "smart/core/thread_name.hpp"

namespace smart::store::detail {
namespace {

Error SqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string msg = std::string(context) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY: return Error::Conflict("unique_violation", msg);
    case SQLITE_CONSTRAINT_FOREIGNKEY: return Error::Conflict("foreign_key_violation", msg);
    case SQLITE_CONSTRAINT_NOTNULL:
    case SQLITE_CONSTRAINT_CHECK: return Error::Invalid("constraint_violation", msg);
    default: break;
  }
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Error::Retryable("busy", msg);
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Error::Unavailable("database_unavailable", msg);
    case SQLITE_CONSTRAINT: return Error::Conflict("constraint_violation", msg);
    default: return Error::Internal("sql_error", msg);
  }
}

class Connection {
 public:
  static constexpr size_t kMaxCachedStatements = 512;

  sqlite3* handle() const { return db_; }

  ~Connection() {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  static Result<std::unique_ptr<Connection>> Open(const std::string& path, const Options& opt, bool writer) {
    auto c = std::unique_ptr<Connection>(new Connection());
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    int rc = sqlite3_open_v2(path.c_str(), &c->db_, flags, nullptr);
    if (rc != SQLITE_OK) return SqliteError(c->db_, rc, "cannot open SQLite database '" + path + "'");
    sqlite3_extended_result_codes(c->db_, 1);
    sqlite3_busy_timeout(c->db_, opt.busy_timeout_ms);
    // The default page cache (2 MiB) makes every index probe a read(2) once
    // the tables outgrow it; memory-mapped reads skip the copy. The writer's
    // cache stays small (8 MiB): a commit after a B-tree split walks all of
    // it (SQLite 3.40 renumbers a page through the lock page's number while
    // balancing, and the commit's cache truncation then scans every entry),
    // which at 64 MiB was 8% of the writer's time; pages it drops come back
    // through the memory map (the first GiB) or the kernel's page cache. With
    // a 2 GiB database the two sizes measured even (bench/tasks, 10k/s).
    std::string pragmas = "PRAGMA foreign_keys=ON; PRAGMA mmap_size=1073741824;";
    pragmas += writer ? "PRAGMA cache_size=-8192;" : "PRAGMA cache_size=-16384;";
    if (writer) {
      // Checkpoints run on their own thread (SqliteDatabase), not inside a commit.
      // Savepoints (one per job in a group commit) journal every page they
      // change; in memory, not in a temporary file written page by page.
      pragmas += "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY;";
      pragmas += opt.sqlite_synchronous_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;";
    }
    SMART_TRY(c->ExecScript(pragmas));
    return c;
  }

  Result<void> ExecScript(std::string_view sql) {
    std::string s(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
    if (err) sqlite3_free(err);
    if (rc != SQLITE_OK) return SqliteError(db_, sqlite3_extended_errcode(db_), "script failed");
    return Ok();
  }

  // Runs one statement; collects rows when `rows` is given.
  Result<int64_t> Run(std::string_view sql, std::span<const Value> params, std::vector<Row>* rows) {
    auto stmt = Prepare(sql);
    if (!stmt) return stmt.take_error();
    sqlite3_stmt* st = *stmt;
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{st};
    if (static_cast<size_t>(sqlite3_bind_parameter_count(st)) != params.size()) {
      return Error::Internal("sql_error", "statement expects " + std::to_string(sqlite3_bind_parameter_count(st)) +
                                              " parameters, got " + std::to_string(params.size()));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      int idx = static_cast<int>(i + 1);
      int rc = std::visit(
          [&](const auto& v) -> int {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::monostate>)
              return sqlite3_bind_null(st, idx);
            else if constexpr (std::is_same_v<T, int64_t>)
              return sqlite3_bind_int64(st, idx, v);
            else if constexpr (std::is_same_v<T, double>)
              return sqlite3_bind_double(st, idx, v);
            else if constexpr (std::is_same_v<T, std::string>)
              return sqlite3_bind_text64(st, idx, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
            else
              return sqlite3_bind_blob64(st, idx, v.bytes.data(), v.bytes.size(), SQLITE_STATIC);
          },
          params[i]);
      if (rc != SQLITE_OK) return SqliteError(db_, rc, "bind failed");
    }
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError(db_, sqlite3_extended_errcode(db_), "statement failed");
      if (!rows) continue;
      int n = sqlite3_column_count(st);
      std::vector<Value> values;
      values.reserve(static_cast<size_t>(n));
      for (int c = 0; c < n; ++c) {
        switch (sqlite3_column_type(st, c)) {
          case SQLITE_INTEGER: values.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st, c))); break;
          case SQLITE_FLOAT: values.emplace_back(sqlite3_column_double(st, c)); break;
          case SQLITE_TEXT:
            values.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, c)),
                                            static_cast<size_t>(sqlite3_column_bytes(st, c))));
            break;
          case SQLITE_BLOB: {
            const char* p = static_cast<const char*>(sqlite3_column_blob(st, c));
            values.emplace_back(Blob{std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, c)))});
            break;
          }
          default: values.emplace_back(std::monostate{});
        }
      }
      rows->emplace_back(std::move(values));
    }
    return static_cast<int64_t>(sqlite3_changes64(db_));
  }

 private:
  Connection() = default;

  Result<sqlite3_stmt*> Prepare(std::string_view sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    std::string translated = TranslatePlaceholders(sql);
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v3(db_, translated.c_str(), static_cast<int>(translated.size()), SQLITE_PREPARE_PERSISTENT,
                                &st, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "prepare failed");
    if (st == nullptr) return Error::Internal("sql_error", "empty statement");
    if (cache_.size() >= kMaxCachedStatements) {
      for (auto& [k, s] : cache_) sqlite3_finalize(s);
      cache_.clear();
    }
    cache_.emplace(std::string(sql), st);
    return st;
  }

  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*, Hash, std::equal_to<>> cache_;
};

using SqliteTx = ConnectionTx<Connection>;

// Durability without holding the writer: with synchronous "full" (the
// default) the writer commits with synchronous=NORMAL, so COMMIT writes the
// WAL without flushing it, and a syncer thread flushes the WAL file
// (fdatasync) for every commit made before the flush began. A write is
// acknowledged (Transact returns; TransactEarly's `durable` runs) only after
// such a flush, so what was acknowledged survives a power loss as with FULL;
// but the writer lock is released before the flush, and the next transaction
// runs while the disk works. Readers may see a commit up to one flush before
// it is durable; nothing is acknowledged before.
class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(std::string path, Options opt, std::unique_ptr<Connection> writer, bool memory)
      : path_(std::move(path)), opt_(opt), writer_(std::move(writer)), shared_memory_(memory) {
    deferred_sync_ = !memory && opt_.sqlite_synchronous_full;
    if (deferred_sync_) {
      // Asked of the connection (it knows a URI's real file) on this thread, before any other uses it.
      wal_path_ = sqlite3_filename_wal(sqlite3_db_filename(writer_->handle(), "main"));
      syncer_ = std::thread([this] {
        NameThread("sqlite-sync");
        RunSyncer();
      });
    }
    if (!memory) {
      sqlite3_wal_hook(writer_->handle(), &SqliteDatabase::OnWalCommit, this);
      checkpointer_ = std::thread([this] {
        NameThread("sqlite-ckpt");
        RunCheckpoints();
      });
    }
  }

  ~SqliteDatabase() override {
    {
      std::lock_guard lock(sync_mu_);
      sync_stopping_ = true;
    }
    sync_cv_.notify_all();
    if (syncer_.joinable()) syncer_.join();  // flushes and answers what is waiting
    if (wal_fd_ >= 0) ::close(wal_fd_);
    {
      std::lock_guard lock(checkpoint_mu_);
      stopping_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

  std::string_view backend() const override { return "sqlite"; }

  Result<void> Transact(TxMode mode, const std::function<Result<void>(Tx&)>& fn) override {
    if (mode == TxMode::kRead && !shared_memory_) {
      return WithRetries(opt_.max_retries, [&]() -> Result<void> {
        auto reader = AcquireReader();
        if (!reader) return reader.take_error();
        auto r = RunTx(**reader, "BEGIN", fn);
        ReleaseReader(std::move(*reader));
        return r;
      });
    }
    if (mode == TxMode::kRead || !deferred_sync_) return Write(mode, fn, nullptr);
    if (!MayWaitForCommits()) return CommitDeadlock();
    uint64_t seq = 0;
    SMART_TRY(Write(mode, fn, &seq));
    std::promise<Result<void>> flushed;
    auto done = flushed.get_future();
    WhenFlushed(seq, [&flushed](Result<void> r) { flushed.set_value(std::move(r)); });
    return done.get();
  }

  Result<void> TransactEarly(const std::function<Result<void>(Tx&)>& fn,
                             std::function<void(Result<void>)> durable) override {
    uint64_t seq = 0;
    SMART_TRY(Write(TxMode::kWrite, fn, &seq));
    if (!deferred_sync_) {
      durable(Ok());
    } else {
      WhenFlushed(seq, std::move(durable));
    }
    return Ok();
  }

  bool Flushing() const override { return flushing_.load(std::memory_order_relaxed); }

  Result<void> Ping() override {
    return Transact(TxMode::kRead, [](Tx& tx) -> Result<void> {
      return tx.Query("SELECT 1").ok() ? Ok() : Error::Unavailable("database_unavailable", "ping failed");
    });
  }

 private:
  // On the writer; `*seq` numbers the commit for WhenFlushed.
  Result<void> Write(TxMode mode, const std::function<Result<void>(Tx&)>& fn, uint64_t* seq) {
    return WithRetries(opt_.max_retries, [&]() -> Result<void> {
      std::lock_guard lock(writer_mu_);
      auto r = RunTx(*writer_, mode == TxMode::kRead ? "BEGIN" : "BEGIN IMMEDIATE", fn);
      if (r && mode != TxMode::kRead) {
        uint64_t n = committed_.fetch_add(1) + 1;  // after COMMIT wrote its frames
        if (seq) *seq = n;
      }
      return r;
    });
  }

  void WhenFlushed(uint64_t seq, std::function<void(Result<void>)> fn) {
    {
      std::lock_guard lock(sync_mu_);
      waiting_.emplace_back(seq, std::move(fn));
    }
    sync_cv_.notify_one();
  }

  // A failed flush stays failed: the kernel may have dropped the pages it
  // could not write, so a later flush that succeeds would prove nothing.
  // Writes are refused until a restart recovers from what is on disk.
  Result<void> FlushWal() {
    if (!sync_error_.empty()) return Error::Unavailable("database_sync_failed", sync_error_);
    if (wal_fd_ < 0) wal_fd_ = ::open(wal_path_.c_str(), O_RDWR | O_CLOEXEC);
    if (wal_fd_ < 0 || ::fdatasync(wal_fd_) != 0) {
      sync_error_ = "cannot flush " + wal_path_ + " to disk (" + std::strerror(errno) + "); restart smartd";
      return Error::Unavailable("database_sync_failed", sync_error_);
    }
    return Ok();
  }

  // One flush answers every commit made before it began.
  void RunSyncer() {
    RunsCommitCallbacks();
    std::unique_lock lock(sync_mu_);
    while (true) {
      flushing_ = false;
      sync_cv_.wait(lock, [&] { return !waiting_.empty() || sync_stopping_; });
      if (waiting_.empty()) return;
      flushing_ = true;  // until the flush is made and answered
      const uint64_t upto = committed_.load();
      lock.unlock();
      Result<void> flushed = FlushWal();
      lock.lock();
      std::vector<std::function<void(Result<void>)>> ready;
      auto covered =
          std::stable_partition(waiting_.begin(), waiting_.end(), [upto](const auto& w) { return w.first <= upto; });
      for (auto it = waiting_.begin(); it != covered; ++it) ready.push_back(std::move(it->second));
      waiting_.erase(waiting_.begin(), covered);
      lock.unlock();
      for (auto& fn : ready) fn(flushed);
      lock.lock();
    }
  }

  static Result<void> RunTx(Connection& c, const char* begin, const std::function<Result<void>(Tx&)>& fn) {
    SqliteTx tx(c);
    return RunTransaction([&c](const char* sql) { return c.ExecScript(sql); }, begin, tx, fn);
  }

  Result<std::unique_ptr<Connection>> AcquireReader() {
    {
      std::unique_lock lock(readers_mu_);
      if (!readers_.empty()) {
        auto c = std::move(readers_.back());
        readers_.pop_back();
        return c;
      }
    }
    return Connection::Open(path_, opt_, false);
  }

  void ReleaseReader(std::unique_ptr<Connection> c) {
    std::lock_guard lock(readers_mu_);
    if (static_cast<int>(readers_.size()) < opt_.pool_size) readers_.push_back(std::move(c));
  }

  // Copies committed WAL frames into the database file every 50 ms while
  // there are new commits, so that commits never pay for it (PASSIVE never
  // waits for readers or the writer). Under sustained load that never reaches
  // the WAL's end, and the WAL only starts over from its beginning once all
  // of it is copied: it grew by ~130 MB/s (bench/tasks_core), each commit
  // appending to new file blocks. So once it holds kRestartFrames, the rest
  // (what came during the unlocked pass) is copied with the writer held, and
  // the next commit starts the WAL over (unless a reader still reads from it:
  // then a later round does).
  static constexpr int kRestartFrames = 4096;  // 16 MiB of 4 KiB pages
  // A checkpointer starved of CPU (both cores busy) could let the WAL grow
  // without bound: past this the writer checkpoints itself, as SQLite's own
  // autocheckpoint would.
  static constexpr int kWriterCheckpointFrames = 3 * kRestartFrames;

  // After each commit, on the writer (holding it): a WAL past kRestartFrames
  // wakes the checkpointer at once; one past kWriterCheckpointFrames is
  // copied here and now, once per kRestartFrames it grows (a reader holding
  // the WAL keeps it long: not a checkpoint attempt on every commit).
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int frames) {
    auto* me = static_cast<SqliteDatabase*>(self);
    if (frames < kWriterCheckpointFrames) {
      me->writer_checkpointed_at_ = 0;
      if (frames >= kRestartFrames) me->checkpoint_cv_.notify_one();
    } else if (frames >= me->writer_checkpointed_at_ + kRestartFrames) {
      me->writer_checkpointed_at_ = frames;
      (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    return SQLITE_OK;
  }

  void RunCheckpoints() {
    auto conn = Connection::Open(path_, opt_, false);
    if (!conn) return;  // the writer's autocheckpoint is off: fall back to it
    sqlite3* db = (*conn)->handle();
    uint64_t seen = 0;
    std::unique_lock lock(checkpoint_mu_);
    while (!stopping_) {
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(50));
      uint64_t now = committed_.load(std::memory_order_relaxed);
      if (now == seen) continue;
      seen = now;
      lock.unlock();
      int frames = 0, copied = 0;
      int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
      if (rc == SQLITE_OK && frames >= kRestartFrames) {
        std::lock_guard writer(writer_mu_);
        (void)sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
      }
      lock.lock();
    }
    lock.unlock();
    (void)(*conn)->ExecScript("PRAGMA wal_checkpoint(PASSIVE);");
  }

  std::string path_;
  Options opt_;
  std::mutex writer_mu_;
  std::unique_ptr<Connection> writer_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Connection>> readers_;
  bool shared_memory_ = false;
  int writer_checkpointed_at_ = 0;      // the writer's: WAL frames at its last own checkpoint
  std::atomic<bool> flushing_{false};   // the syncer is flushing or answering (Flushing)
  std::atomic<uint64_t> committed_{0};  // write commits: numbers them for WhenFlushed, wakes the checkpointer
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool stopping_ = false;
  std::thread checkpointer_;

  bool deferred_sync_ = false;
  std::string wal_path_;
  int wal_fd_ = -1;         // the syncer's
  std::string sync_error_;  // the syncer's: set by the first failed flush
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  std::vector<std::pair<uint64_t, std::function<void(Result<void>)>>> waiting_;
  bool sync_stopping_ = false;
  std::thread syncer_;  // stopped first (the destructor), then the checkpointer
};

}  // namespace

Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path, const Options& options) {
  // Memory statistics take a process-wide mutex on every allocation SQLite
  // makes; nothing here reads them. Only possible before SQLite initializes
  // (a process that opened a connection already keeps them: harmless).
  static std::once_flag configured;
  std::call_once(configured, [] { (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  bool memory = path == ":memory:";
  if (!memory) {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      return Error::Unavailable("database_unavailable",
                                "cannot create directory '" + parent.string() + "': " + ec.message());
    }
  }
  // With synchronous "full" the writer itself does not flush: SqliteDatabase does, after releasing it.
  Options writer_options = options;
  if (!memory) writer_options.sqlite_synchronous_full = false;
  auto writer = Connection::Open(path, writer_options, true);
  if (!writer) return writer.take_error();
  // Each :memory: connection is its own database: everything uses the writer.
  auto db = std::make_unique<SqliteDatabase>(path, options, std::move(writer).value(), memory);
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace smart::store::detail
