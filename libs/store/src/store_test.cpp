// The store suite. Run as `store_test` it uses SQLite in a temp dir; run as
// `store_pgtest` (SMART_TEST_PG_URL_FILE set by the ctest fixture) it uses the
// throwaway PostgreSQL cluster. Both must behave the same.
#include "smart/store/store.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "smart/store/group_commit.hpp"
#include "smart/store/migrations.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/process.hpp"

namespace smart::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("SMART_TEST_PG_URL_FILE")) {
      url_ = testing::FreshPostgresDatabase();
      ASSERT_FALSE(url_.empty());
    } else {
      url_ = "sqlite:" + dir_.path() + "/test.db";
    }
    auto db = Open(url_, {.pool_size = 4});
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                              [](Tx& tx) {
                                return tx.ExecScript(
                                    "CREATE TABLE parents (id BIGINT PRIMARY KEY);"
                                    "CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, x DOUBLE PRECISION,"
                                    " note TEXT, parent BIGINT REFERENCES parents(id), CHECK (n >= 0));"
                                    "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);");
                              })
                    .ok());
  }

  bool postgres() const { return db_->backend() == "postgresql"; }

  testing::TempDir dir_;
  std::string url_;
  std::unique_ptr<Database> db_;
};

TEST(ValuesRowsTest, NumbersEachRowsParameters) {
  EXPECT_EQ(ValuesRows(2, 2, 1, "(?1, ?2)"), "($1, $2), ($3, $4)");
  EXPECT_EQ(ValuesRows(3, 2, 2, "(?2, 'x', ?1, ?1)"), "($3, 'x', $2, $2), ($5, 'x', $4, $4), ($7, 'x', $6, $6)");
  EXPECT_EQ(ValuesRows(2, 12, 1, "(?12)"), "($12), ($24)");
  EXPECT_EQ(ValuesRows(0, 2, 1, "(?1, ?2)"), "");
}

TEST(PowersOfTwoTest, OneTextForEachPowerOfTwoUpToMax) {
  auto texts = PowersOfTwo(8, [](size_t n) { return "VALUES " + ValuesRows(n, 1, 1, "(?1)"); });
  ASSERT_EQ(texts.size(), 4u);
  EXPECT_EQ(texts[0], "VALUES ($1)");
  EXPECT_EQ(texts[2], "VALUES ($1), ($2), ($3), ($4)");
  EXPECT_EQ(texts[3], "VALUES ($1), ($2), ($3), ($4), ($5), ($6), ($7), ($8)");
  EXPECT_EQ(PowersOfTwo(1, [](size_t n) { return std::to_string(n); }), std::vector<std::string>{"1"});
}

TEST_F(StoreTest, RoundTripsEveryType) {
  auto r = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n, x, note) VALUES ($1, $2, $3, $4)",
                      {Value{"a"}, Value{int64_t{9007199254740993}}, Value{2.5}, Value{"héllo 'quoted' $1"}}));
    SMART_TRY(tx.Exec("INSERT INTO items (id, n, x, note) VALUES ($1, $2, $3, $4)",
                      {Value{"b"}, Value{int64_t{-0}}, Value{}, Value{}}));
    return Ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::optional<Row> row;
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto one = tx.QueryOne("SELECT id, n, x, note FROM items WHERE id = $1", {Value{"a"}});
                              if (!one) return one.take_error();
                              row = std::move(*one);
                              return Ok();
                            })
                  .ok());
  ASSERT_TRUE(row);
  EXPECT_EQ(row->Text(0), "a");
  EXPECT_EQ(row->Int(1), 9007199254740993) << "64-bit integers survive exactly";
  EXPECT_DOUBLE_EQ(row->Double(2), 2.5);
  EXPECT_EQ(row->Text(3), "héllo 'quoted' $1");

  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto one = tx.QueryOne("SELECT x, note FROM items WHERE id = $1", {Value{"b"}});
                              if (!one) return one.take_error();
                              EXPECT_TRUE((*one)->IsNull(0));
                              EXPECT_TRUE((*one)->IsNull(1));
                              auto none = tx.QueryOne("SELECT id FROM items WHERE id = $1", {Value{"zzz"}});
                              EXPECT_TRUE(none.ok() && !none->has_value());
                              return Ok();
                            })
                  .ok());
}

TEST_F(StoreTest, BlobsRoundTrip) {
  std::string bytes("\x00\x01\xff\x7f binary", 11);
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [&](Tx& tx) -> Result<void> {
                              SMART_TRY(tx.ExecScript(postgres() ? "CREATE TEMP TABLE blobs (b BYTEA)"
                                                                 : "CREATE TEMP TABLE blobs (b BLOB)"));
                              SMART_TRY(tx.Exec("INSERT INTO blobs (b) VALUES ($1)", {Value{Blob{bytes}}}));
                              auto row = tx.QueryOne("SELECT b FROM blobs");
                              if (!row) return row.take_error();
                              EXPECT_EQ((*row)->Bytes(0).bytes, bytes);
                              return Ok();
                            })
                  .ok());
}

TEST_F(StoreTest, TypedErrors) {
  ASSERT_TRUE(
      db_->Transact(
             TxMode::kWrite,
             [](Tx& tx) -> Result<void> {
               return tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"dup"}, Value{int64_t{1}}}).ok()
                          ? Ok()
                          : Error::Internal("x", "insert failed");
             })
          .ok());
  auto dup = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"dup"}, Value{int64_t{2}}}));
    return Ok();
  });
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(dup.error().code, "unique_violation");

  auto fk = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n, parent) VALUES ($1, $2, $3)",
                      {Value{"orphan"}, Value{int64_t{1}}, Value{int64_t{42}}}));
    return Ok();
  });
  ASSERT_FALSE(fk.ok());
  EXPECT_EQ(fk.error().code, "foreign_key_violation");

  auto check = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"neg"}, Value{int64_t{-1}}}));
    return Ok();
  });
  ASSERT_FALSE(check.ok());
  EXPECT_EQ(check.error().kind, ErrorKind::kInvalid);

  auto null = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"nul"}, Value{}}));
    return Ok();
  });
  ASSERT_FALSE(null.ok());
  EXPECT_EQ(null.error().code, "constraint_violation");

  auto syntax = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("SELEC nonsense"));
    return Ok();
  });
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.error().kind, ErrorKind::kInternal);
}

TEST_F(StoreTest, FailedTransactionLeavesNothing) {
  auto r = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"half"}, Value{int64_t{1}}}));
    return Error::Invalid("stop", "the caller changed its mind");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "stop");
  EXPECT_THROW((void)db_->Transact(
                   TxMode::kWrite,
                   [](Tx& tx) -> Result<void> {
                     (void)tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {Value{"thrown"}, Value{int64_t{1}}});
                     throw std::runtime_error("bug");
                   }),
               std::runtime_error);
  int64_t count = -1;
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto row = tx.QueryOne("SELECT COUNT(*) FROM items");
                              if (!row) return row.take_error();
                              count = (*row)->Int(0);
                              return Ok();
                            })
                  .ok());
  EXPECT_EQ(count, 0);
}

TEST_F(StoreTest, ConcurrentWritersLoseNoUpdate) {
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) -> Result<void> {
                              SMART_TRY(tx.Exec("INSERT INTO counters (name, value) VALUES ('c', 0)"));
                              return Ok();
                            })
                  .ok());
  constexpr int kThreads = 4, kEach = 50;
  std::atomic<int> failures{0}, successes{0};
  // Heavy contention on one row: give retries room (each rerun is a fresh snapshot).
  auto opened = Open(url_, {.pool_size = 4, .max_retries = 100});
  ASSERT_TRUE(opened.ok());
  auto& db = **opened;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        // Read-modify-write: correct only if transactions really serialize
        // (SQLite's single writer; PostgreSQL's SERIALIZABLE with retries).
        auto r = db.Transact(TxMode::kSerializable, [](Tx& tx) -> Result<void> {
          auto row = tx.QueryOne("SELECT value FROM counters WHERE name = 'c'");
          if (!row) return row.take_error();
          SMART_TRY(tx.Exec("UPDATE counters SET value = $1 WHERE name = 'c'", {Value{(*row)->Int(0) + 1}}));
          return Ok();
        });
        if (r)
          ++successes;
        else
          ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto row = tx.QueryOne("SELECT value FROM counters WHERE name = 'c'");
                              if (!row) return row.take_error();
                              EXPECT_EQ((*row)->Int(0), successes.load())
                                  << "every acknowledged increment, and only those";
                              return Ok();
                            })
                  .ok());
}

TEST_F(StoreTest, ReadersSeeCommittedData) {
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) -> Result<void> {
                              SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ('r', 7)"));
                              return Ok();
                            })
                  .ok());
  std::vector<std::thread> readers;
  std::atomic<int> seen{0};
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      (void)db_->Transact(TxMode::kRead, [&](Tx& tx) -> Result<void> {
        auto row = tx.QueryOne("SELECT n FROM items WHERE id = 'r'");
        if (row && *row && (**row).Int(0) == 7) ++seen;
        return Ok();
      });
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(seen, 4);
  EXPECT_TRUE(db_->Ping().ok());
}

TEST_F(StoreTest, MigrationsApplyOnceAndDetectChanges) {
  std::vector<Migration> v1 = {
      {1, "create_m1", "CREATE TABLE m1 (id BIGINT PRIMARY KEY)", ""},
      {2, "create_m2", "CREATE TABLE m2 (id BIGINT PRIMARY KEY, b BLOB)",
       "CREATE TABLE m2 (id BIGINT PRIMARY KEY, b BYTEA)"},
  };
  auto st = GetMigrationStatus(*db_, v1);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->current, 0);
  EXPECT_EQ(st->latest, 2);

  auto n = Migrate(*db_, v1);
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2);
  n = Migrate(*db_, v1);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0) << "a second run applies nothing";
  st = GetMigrationStatus(*db_, v1);
  EXPECT_TRUE(st->up_to_date());

  auto changed = v1;
  changed[0].sqlite = changed[0].postgres = "CREATE TABLE m1 (id BIGINT PRIMARY KEY, extra TEXT)";
  n = Migrate(*db_, changed);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error().code, "migration_changed");

  std::vector<Migration> older(v1.begin(), v1.begin() + 1);
  n = Migrate(*db_, older);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error().code, "schema_too_new");

  // A failing migration leaves none of its run applied.
  auto broken = v1;
  broken.push_back({3, "ok_part", "CREATE TABLE m3 (id BIGINT)", ""});
  broken.push_back({4, "broken", "CREATE TABLE nonsense (", ""});
  n = Migrate(*db_, broken);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.error().message.find("migration 4 (broken)"), std::string::npos);
  st = GetMigrationStatus(*db_, broken);
  EXPECT_EQ(st->current, 2);
}

TEST_F(StoreTest, ConcurrentMigratorsApplyEachOnce) {
  std::vector<Migration> ms = {{1, "create_m1", "CREATE TABLE m1 (id BIGINT PRIMARY KEY)", ""}};
  std::atomic<int> applied{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto other = Open(url_);
      if (!other) {
        ++failed;
        return;
      }
      auto n = Migrate(**other, ms);
      if (n)
        applied += *n;
      else
        ++failed;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(applied, 1);
}

TEST(StoreOpen, BadUrlsAreClearErrors) {
  auto r = Open("mysql://x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "bad_database_url");
  r = Open("postgresql://smart:hunter2@127.0.0.1:1/none?connect_timeout=2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos) << "the password is never shown";
  r = Open("sqlite:/proc/forbidden/x.db");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
}

TEST(StorePlaceholders, TranslatesOutsideLiterals) {
  EXPECT_EQ(TranslatePlaceholders("SELECT $1, '$2', \"$3\", $10 -- $4\n, $5"),
            "SELECT ?1, '$2', \"$3\", ?10 -- $4\n, ?5");
  EXPECT_EQ(TranslatePlaceholders("SELECT 'it''s $1', $2"), "SELECT 'it''s $1', ?2");
}

// Group commit: many callers, one transaction; a refusal rolls back only its own work.
TEST_F(StoreTest, GroupCommitIsolatesRefusals) {
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) -> Result<void> {
                              SMART_TRY(tx.Exec("INSERT INTO counters (name, value) VALUES ('g', 0)"));
                              return Ok();
                            })
                  .ok());
  GroupCommitter group(*db_);
  constexpr int kThreads = 8, kEach = 40;
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        bool refuse = (t + i) % 5 == 0;
        auto r = group.Transact([&, refuse, t, i](Tx& tx) -> Result<void> {
          auto row = tx.QueryOne("SELECT value FROM counters WHERE name = 'g'");
          if (!row) return row.take_error();
          SMART_TRY(tx.Exec("UPDATE counters SET value = $1 WHERE name = 'g'", {Value{(*row)->Int(0) + 1}}));
          SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, 1)",
                            {Value{"g" + std::to_string(t) + "-" + std::to_string(i)}}));
          if (refuse) return Error::Conflict("refused", "after writing, to test the savepoint");
          return Ok();
        });
        if (r) {
          ++ok;
        } else if (r.error().code == "refused") {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok.load() + refused.load(), kThreads * kEach);
  EXPECT_GT(refused.load(), 0);
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto row = tx.QueryOne("SELECT value FROM counters WHERE name = 'g'");
                              if (!row) return row.take_error();
                              EXPECT_EQ((*row)->Int(0), ok.load()) << "refused increments rolled back, others kept";
                              auto n = tx.QueryOne("SELECT COUNT(*) FROM items WHERE id LIKE 'g%'");
                              if (!n) return n.take_error();
                              EXPECT_EQ((*n)->Int(0), ok.load());
                              return Ok();
                            })
                  .ok());
}

// Holds a group committer inside a job until Release, so that the jobs
// queued meanwhile form the next group together.
class HeldCommitter {
 public:
  explicit HeldCommitter(GroupCommitter& group)
      : thread_([this, &group] {
          EXPECT_TRUE(group
                          .Transact([this](Tx&) -> Result<void> {
                            holding_ = true;
                            gate_.wait();
                            return Ok();
                          })
                          .ok());
        }) {
    while (!holding_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  void Release() {
    open_.set_value();
    thread_.join();
  }

 private:
  std::promise<void> open_;
  std::shared_future<void> gate_ = open_.get_future().share();
  std::atomic<bool> holding_{false};
  std::thread thread_;  // last: starts once the rest is ready
};

// Statements sent without waiting run in order, are seen by the next
// statement, and their errors come back later: from Sync, a later statement
// or the commit, which then writes nothing. The connection stays usable.
TEST_F(StoreTest, StatementsSentWithoutWaiting) {
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) -> Result<void> {
                              for (int i = 0; i < 5; ++i) {
                                SMART_TRY(tx.ExecLater("INSERT INTO counters (name, value) VALUES ($1, $2)",
                                                       {Value{"later-" + std::to_string(i)}, Value{int64_t{i}}}));
                              }
                              SMART_TRY(tx.ExecLater("UPDATE counters SET value = value + 10 WHERE name = 'later-4'"));
                              auto row =
                                  tx.QueryOne("SELECT COUNT(*), MAX(value) FROM counters WHERE name LIKE 'later-%'");
                              if (!row) return row.take_error();
                              EXPECT_EQ((*row)->Int(0), 5);
                              EXPECT_EQ((*row)->Int(1), 14) << "in order: the update saw the insert";
                              SMART_TRY(tx.ExecLater("UPDATE counters SET value = 0 WHERE name = 'later-0'"));
                              return tx.Sync();
                            })
                  .ok());
  // A failing statement: its error comes from Sync...
  auto r = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.ExecLater("INSERT INTO counters (name, value) VALUES ('later-x', 1)"));
    SMART_TRY(tx.ExecLater("INSERT INTO counters (name, value) VALUES ('later-1', 1)"));  // taken
    SMART_TRY(tx.ExecLater("INSERT INTO counters (name, value) VALUES ('later-y', 1)"));
    return tx.Sync();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unique_violation") << r.error().message;
  // ... or from the commit, when nothing waited for it.
  r = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
    SMART_TRY(tx.ExecLater("INSERT INTO counters (name, value) VALUES ('later-z', 1)"));
    return tx.ExecLater("INSERT INTO counters (name, value) VALUES ('later-2', 1)");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unique_violation") << r.error().message;
  ASSERT_TRUE(
      db_->Transact(TxMode::kRead,
                    [](Tx& tx) -> Result<void> {
                      auto row = tx.QueryOne(
                          "SELECT COUNT(*), CAST(SUM(value) AS BIGINT) FROM counters WHERE name LIKE 'later-%'");
                      if (!row) return row.take_error();
                      EXPECT_EQ((*row)->Int(0), 5) << "the failed transactions wrote nothing";
                      EXPECT_EQ((*row)->Int(1), 1 + 2 + 3 + 14);
                      return Ok();
                    })
          .ok());
}

// In a group, a statement a job sent without waiting that fails is that
// job's refusal: the others commit.
TEST_F(StoreTest, AGroupAttributesAStatementSentWithoutWaitingToItsJob) {
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) -> Result<void> {
                              return tx.ExecLater("INSERT INTO counters (name, value) VALUES ('taken', 0)");
                            })
                  .ok());
  GroupCommitter group(*db_);
  HeldCommitter held(group);
  std::array<Result<void>, 3> results;
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) {
    callers.emplace_back([&, i] {
      results[i] = group.Transact([i](Tx& tx) -> Result<void> {
        return tx.ExecLater("INSERT INTO counters (name, value) VALUES ($1, 1)",
                            {Value{i == 1 ? std::string("taken") : "job-" + std::to_string(i)}});
      });
    });
    while (group.queued() < static_cast<size_t>(i + 1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  held.Release();
  for (auto& c : callers) c.join();
  EXPECT_TRUE(results[0].ok());
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error().code, "unique_violation");
  EXPECT_TRUE(results[2].ok());
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [](Tx& tx) -> Result<void> {
                              auto row = tx.QueryOne("SELECT COUNT(*) FROM counters WHERE name LIKE 'job-%'");
                              if (!row) return row.take_error();
                              EXPECT_EQ((*row)->Int(0), 2);
                              return Ok();
                            })
                  .ok());
}

// A group runs without savepoints first; a refusal runs it again with them:
// the others' work is committed once, the refusing job's not at all.
TEST_F(StoreTest, AGroupWithARefusalRunsAgainAndCommitsTheRestOnce) {
  GroupCommitter group(*db_);
  HeldCommitter held(group);  // the jobs queued meanwhile form one group
  std::array<std::atomic<int>, 4> runs{};
  std::array<Result<void>, 4> results;
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&, i] {
      results[i] = group.Transact([&, i](Tx& tx) -> Result<void> {
        ++runs[i];
        SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, 1)", {Value{"once-" + std::to_string(i)}}));
        if (i == 2) return Error::Conflict("refused", "after writing");
        return Ok();
      });
    });
    // Queued in this order: 0, 1, 2 (refuses), 3.
    while (group.queued() < static_cast<size_t>(i + 1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  held.Release();
  for (auto& c : callers) c.join();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(results[i].ok(), i != 2) << i;
    // The optimistic run stops at the refusal: 3 never ran in it.
    EXPECT_EQ(runs[i].load(), i < 3 ? 2 : 1) << "job " << i << ": in the optimistic run, then with savepoints";
  }
  EXPECT_EQ(results[2].error().code, "refused");
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto rows = tx.Query("SELECT id FROM items WHERE id LIKE 'once-%' ORDER BY id");
                              if (!rows) return rows.take_error();
                              std::vector<std::string> ids;
                              for (const auto& r : *rows) ids.push_back(r.Text(0));
                              EXPECT_EQ(ids, (std::vector<std::string>{"once-0", "once-1", "once-3"}));
                              return Ok();
                            })
                  .ok());
}

// The database with Flushing() as the test says, counting transactions.
class FlushingDb final : public Database {
 public:
  explicit FlushingDb(Database& db) : db_(db) {}
  std::string_view backend() const override { return db_.backend(); }
  Result<void> Transact(TxMode mode, const std::function<Result<void>(Tx&)>& fn) override {
    return db_.Transact(mode, fn);
  }
  Result<void> TransactEarly(const std::function<Result<void>(Tx&)>& fn,
                             std::function<void(Result<void>)> durable) override {
    ++transactions;
    return db_.TransactEarly(fn, std::move(durable));
  }
  Result<void> Ping() override { return db_.Ping(); }
  bool Flushing() const override { return flushing; }

  std::atomic<bool> flushing{false};
  std::atomic<int> transactions{0};

 private:
  Database& db_;
};

// Jobs that arrive while an earlier commit is being flushed join the group
// that is running (one transaction), each still answered for itself.
TEST_F(StoreTest, JobsArrivingDuringAFlushJoinTheRunningGroup) {
  for (bool flushing : {true, false}) {
    FlushingDb db(*db_);
    db.flushing = flushing;
    GroupCommitter group(db);
    HeldCommitter held(group);  // a group running while the others are queued
    std::array<Result<void>, 3> results;
    std::vector<std::thread> callers;
    for (int i = 0; i < 3; ++i) {
      callers.emplace_back([&, i] {
        results[i] = group.Transact([&, i](Tx& tx) -> Result<void> {
          SMART_TRY(tx.Exec("INSERT INTO items (id, n) VALUES ($1, 1)",
                            {Value{"join-" + std::to_string(flushing) + "-" + std::to_string(i)}}));
          if (i == 1) return Error::Conflict("refused", "after writing");
          return Ok();
        });
      });
      while (group.queued() < static_cast<size_t>(i + 1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    held.Release();
    for (auto& c : callers) c.join();
    EXPECT_TRUE(results[0].ok());
    EXPECT_EQ(results[1].error().code, "refused");
    EXPECT_TRUE(results[2].ok());
    // Flushing: the held job's group took the three (and ran again with
    // savepoints for the refusal); not flushing: a group of one, then one of three (twice).
    EXPECT_EQ(db.transactions.load(), flushing ? 2 : 3) << "flushing " << flushing;
    EXPECT_EQ(group.joined(), flushing ? 3u : 0u);
    ASSERT_TRUE(db_->Transact(TxMode::kRead,
                              [&](Tx& tx) -> Result<void> {
                                auto n = tx.QueryOne("SELECT COUNT(*) FROM items WHERE id LIKE $1",
                                                     {Value{"join-" + std::to_string(flushing) + "-%"}});
                                if (!n) return n.take_error();
                                EXPECT_EQ((*n)->Int(0), 2) << "the refused job's row undone, the others' kept";
                                return Ok();
                              })
                    .ok());
  }
}

TEST_F(StoreTest, TransactEarlyAnswersOnceDurableAndNeverForAFailure) {
  std::mutex mu;
  std::condition_variable cv;
  int durable = 0;
  std::vector<std::string> refusals;
  auto write = [](int n) {
    return [n](Tx& tx) -> Result<void> {
      SMART_TRY(tx.Exec("INSERT INTO counters (name, value) VALUES ($1, $2)",
                        {Value{"e" + std::to_string(n)}, Value{int64_t{n}}}));
      return Ok();
    };
  };
  for (int i = 0; i < 20; ++i) {
    auto r = db_->TransactEarly(write(i), [&](Result<void> flushed) {
      EXPECT_TRUE(flushed.ok());
      // SQLite answers on its flushing thread; PostgreSQL at once (durable when committed).
      if (db_->backend() == "sqlite") {
        EXPECT_FALSE(MayWaitForCommits());
      }
      // Waiting here for another commit would wait for this very thread: refused, nothing written.
      auto nested = db_->Transact(TxMode::kWrite, [](Tx& tx) -> Result<void> {
        return tx.Exec("UPDATE counters SET value = value + 1000 WHERE name LIKE 'e%'").ok()
                   ? Ok()
                   : Error::Internal("x", "y");
      });
      auto read = db_->Transact(TxMode::kRead, [](Tx& tx) -> Result<void> {
        return tx.Query("SELECT 1").ok() ? Ok() : Error::Internal("x", "y");
      });
      std::lock_guard lk(mu);
      if (!nested) refusals.push_back(nested.error().code);
      EXPECT_TRUE(read.ok()) << "reads do not wait for commits";
      ++durable;
      cv.notify_all();
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  auto failed = db_->TransactEarly([](Tx&) -> Result<void> { return Error::Conflict("no", "refused"); },
                                   [&](Result<void>) { ADD_FAILURE() << "a failed transaction is never durable"; });
  EXPECT_EQ(failed.error().code, "no");
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(10), [&] { return durable == 20; }));
    if (db_->backend() == "sqlite") {
      EXPECT_EQ(refusals, std::vector<std::string>(20, "commit_deadlock"));
    }
  }
  EXPECT_TRUE(MayWaitForCommits());
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto n = tx.QueryOne("SELECT COUNT(*), MAX(value) FROM counters WHERE name LIKE 'e%'");
                              if (!n) return n.take_error();
                              EXPECT_EQ((*n)->Int(0), 20);
                              if (db_->backend() == "sqlite") {
                                EXPECT_EQ((*n)->Int(1), 19) << "the refused writes wrote nothing";
                              }
                              return Ok();
                            })
                  .ok());
}

// Under commits that never pause, the WAL is still copied into the database
// and written again from its beginning, instead of growing with every commit.
TEST(SqliteWal, StartsOverUnderSustainedWrites) {
  testing::TempDir dir;
  auto db = std::move(Open("sqlite:" + dir.path() + "/wal.db")).value();
  ASSERT_TRUE(db->Transact(TxMode::kWrite, [](Tx& tx) {
                  return tx.ExecScript("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)");
                }).ok());
  const std::string blob(64 * 1024, 'x');
  const std::string wal = dir.path() + "/wal.db-wal";
  std::atomic<int> durable{0};
  uintmax_t largest = 0;
  for (int64_t i = 0; i < 2000; ++i) {  // ~17 pages a commit: ~130 MiB through the WAL
    auto r = db->TransactEarly(
        [&](Tx& tx) -> Result<void> {
          SMART_TRY(tx.Exec("INSERT OR REPLACE INTO t (id, b) VALUES ($1, $2)", {Value{i % 64}, Value{Blob{blob}}}));
          return Ok();
        },
        [&](Result<void> flushed) {
          EXPECT_TRUE(flushed.ok());
          ++durable;
        });
    ASSERT_TRUE(r.ok()) << r.error().message;
    largest = std::max(largest, std::filesystem::file_size(wal));
  }
  db.reset();  // answers what is still being flushed
  EXPECT_EQ(durable.load(), 2000);
  // Never starting over, it would hold all of it (~260 MiB). With the cores
  // busy (tests in parallel) the checkpointer may run late: some slack.
  EXPECT_LT(largest, uintmax_t{128} << 20) << "the WAL grew to " << (largest >> 20) << " MiB";
}

TEST_F(StoreTest, ClosingTheDatabaseAnswersEveryCommit) {
  std::atomic<int> durable{0};
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(db_->TransactEarly(
                       [i](Tx& tx) -> Result<void> {
                         SMART_TRY(tx.Exec("INSERT INTO counters (name, value) VALUES ($1, 0)",
                                           {Value{"c" + std::to_string(i)}}));
                         return Ok();
                       },
                       [&](Result<void> r) { durable += r.ok() ? 1 : 0; })
                    .ok());
  }
  db_.reset();
  EXPECT_EQ(durable.load(), 50);
}

// A TxState that writes its value into counters at commit, so the test sees
// what a savepoint rollback and a commit did to it.
struct CounterState final : TxState {
  explicit CounterState(std::string name) : name(std::move(name)) {}
  Result<void> Flush(Tx& tx) override {
    if (fail_flush) return Error::Unavailable("flush_failed", "for the test");
    return tx.Exec("INSERT INTO counters (name, value) VALUES ($1, $2)", {Value{name}, Value{value}}).ok()
               ? Ok()
               : Error::Internal("flush", "insert failed");
  }
  void Mark() override { marked = value; }
  void RollbackToMark() override { value = marked; }
  std::string name;
  int64_t value = 0, marked = 0;
  bool fail_flush = false;
};

TEST_F(StoreTest, TxStatesFollowSavepointsAndAreWrittenAtCommit) {
  static const char kOld = 0, kNew = 0;
  auto r = db_->Transact(TxMode::kWrite, [&](Tx& tx) -> Result<void> {
    auto& old = static_cast<CounterState&>(tx.AddState(&kOld, std::make_unique<CounterState>("old")));
    EXPECT_EQ(tx.State(&kOld), &old);
    EXPECT_EQ(tx.State(&kNew), nullptr);
    old.value = 5;
    SMART_TRY(tx.Savepoint());
    old.value = 9;
    tx.AddState(&kNew, std::make_unique<CounterState>("new"));
    SMART_TRY(tx.RollbackToSavepoint());
    EXPECT_EQ(old.value, 5) << "rolled back to its mark";
    EXPECT_EQ(tx.State(&kNew), nullptr) << "a state begun after the savepoint is dropped";
    SMART_TRY(tx.ReleaseSavepoint());
    SMART_TRY(tx.Savepoint());
    old.value = 7;
    return tx.ReleaseSavepoint();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto failed = db_->Transact(TxMode::kWrite, [&](Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec("INSERT INTO counters (name, value) VALUES ('beside', 1)"));
    auto& s = static_cast<CounterState&>(tx.AddState(&kOld, std::make_unique<CounterState>("failing")));
    s.fail_flush = true;
    return Ok();
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, "flush_failed");
  ASSERT_TRUE(db_->Transact(TxMode::kRead,
                            [&](Tx& tx) -> Result<void> {
                              auto rows = tx.Query("SELECT name, value FROM counters ORDER BY name");
                              if (!rows) return rows.take_error();
                              EXPECT_EQ(rows->size(), 1u) << "a failed flush rolls the whole transaction back";
                              if (rows->size() != 1) return Ok();
                              EXPECT_EQ((*rows)[0].Text(0), "old");
                              EXPECT_EQ((*rows)[0].Int(1), 7);
                              return Ok();
                            })
                  .ok());
}

// Signals between processes sharing the database (two Database objects here,
// as two smartd instances): on PostgreSQL another's signal reaches a
// listener, a listener hears none of its own database's, and one is called
// once when it starts listening (signals before may have been missed); on
// SQLite one process owns the database and there is nothing to listen to.
// Two processes' group committers (two smartd instances on one database)
// take turns: the second's transaction starts once the first's has ended, so
// rows locked in opposite orders cannot deadlock (each deadlock stalled both
// writers for PostgreSQL's deadlock_timeout and was retried, or failed).
TEST_F(StoreTest, WritersOfEveryProcessTakeTurns) {
  auto other = Open(url_, {.pool_size = 1});
  ASSERT_TRUE(other.ok()) << other.error().message;
  ASSERT_TRUE(db_->Transact(TxMode::kWrite,
                            [](Tx& tx) {
                              return tx.ExecScript("INSERT INTO counters (name, value) VALUES ('a', 0), ('b', 0)");
                            })
                  .ok());
  using Us = std::chrono::microseconds;
  auto now = [] { return std::chrono::duration_cast<Us>(std::chrono::steady_clock::now().time_since_epoch()); };
  std::atomic<int> first_runs{0}, second_runs{0};
  std::atomic<Us> first_ended{}, second_began{};
  std::promise<void> first_holds_a;
  std::thread first([&] {
    auto r = db_->TransactEarly(
        [&](Tx& tx) -> Result<void> {
          SMART_TRY(tx.Exec("UPDATE counters SET value = value + 1 WHERE name = 'a'"));
          if (first_runs.fetch_add(1) == 0) first_holds_a.set_value();
          std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the other starts meanwhile
          SMART_TRY(tx.Exec("UPDATE counters SET value = value + 1 WHERE name = 'b'"));
          first_ended = now();
          return Ok();
        },
        [](Result<void>) {});
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  first_holds_a.get_future().wait();
  auto r = (*other)->TransactEarly(
      [&](Tx& tx) -> Result<void> {
        if (second_runs.fetch_add(1) == 0) second_began = now();
        SMART_TRY(tx.Exec("UPDATE counters SET value = value + 1 WHERE name = 'b'"));
        SMART_TRY(tx.Exec("UPDATE counters SET value = value + 1 WHERE name = 'a'"));
        return Ok();
      },
      [](Result<void>) {});
  first.join();
  EXPECT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(first_runs, 1) << "no deadlock, no retry";
  EXPECT_EQ(second_runs, 1) << "no deadlock, no retry";
  EXPECT_GE(second_began.load().count(), first_ended.load().count()) << "the second began after the first's work";
  auto rows = db_->Transact(TxMode::kRead, [](Tx& tx) -> Result<void> {
    auto sum = tx.QueryOne("SELECT CAST(SUM(value) AS BIGINT) FROM counters WHERE name IN ('a', 'b')");
    if (!sum) return sum.take_error();
    if (!*sum || (*sum)->Int(0) != 4) return Error::Internal("sum", "expected 4");
    return Ok();
  });
  EXPECT_TRUE(rows.ok()) << rows.error().message;
}

TEST_F(StoreTest, SignalsReachTheOtherProcessesSharingTheDatabase) {
  std::mutex mu;
  std::condition_variable cv;
  int heard = 0;
  auto listening = db_->Listen("smart_test", [&] {
    std::lock_guard lk(mu);
    ++heard;
    cv.notify_all();
  });
  if (!postgres()) {
    EXPECT_EQ(listening, nullptr);
    db_->Signal("smart_test");  // nothing to tell, and nothing breaks
    return;
  }
  ASSERT_NE(listening, nullptr);
  auto heard_at_least = [&](int n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(5), [&] { return heard >= n; });
  };
  ASSERT_TRUE(heard_at_least(1)) << "called once on listening";
  auto other = Open(url_, {.pool_size = 1});
  ASSERT_TRUE(other.ok()) << other.error().message;
  (*other)->Signal("smart_test");
  ASSERT_TRUE(heard_at_least(2)) << "another process's signal";
  (*other)->Signal("smart_other");  // another channel
  db_->Signal("smart_test");        // its own
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  {
    std::lock_guard lk(mu);
    EXPECT_EQ(heard, 2);
  }
  EXPECT_EQ(db_->Listen("Not A Channel", [] {}), nullptr);
  std::promise<void> second_called;
  auto second = db_->Listen("smart_test", [&second_called, once = std::make_shared<std::once_flag>()] {
    std::call_once(*once, [&] { second_called.set_value(); });
  });
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second_called.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "a listener added later is called once too";
  second.reset();
  // The listener's connection is cut (a database restart, a network fault):
  // it connects again, calls once (signals may have been missed), and hears again.
  ASSERT_TRUE((*other)
                  ->Transact(TxMode::kWrite,
                             [](Tx& tx) -> Result<void> {
                               auto cut = tx.QueryOne(
                                   "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = 'smart-signals' AND datname = current_database()");
                               if (!cut) return cut.take_error();
                               EXPECT_EQ((*cut)->Int(0), 2) << "this database's and the other's";
                               return Ok();
                             })
                  .ok());
  ASSERT_TRUE(heard_at_least(3)) << "called once on listening again";
  (*other)->Signal("smart_test");
  ASSERT_TRUE(heard_at_least(4)) << "hears again";
  listening.reset();  // no call after this
  (*other)->Signal("smart_test");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::lock_guard lk(mu);
  EXPECT_EQ(heard, 4);
}

}  // namespace
}  // namespace smart::store
