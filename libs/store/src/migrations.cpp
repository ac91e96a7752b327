#include "smart/store/migrations.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace smart::store {
namespace {

// Arbitrary constant naming Smart's migration lock among advisory locks.
constexpr int64_t kMigrationLockKey = 0x536d6172744d6967;  // "SmartMig"

const std::string& ScriptFor(const Database& db, const Migration& m) {
  return db.backend() == "postgresql" && !m.postgres.empty() ? m.postgres : m.sqlite;
}

std::string Checksum(std::string_view text) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

constexpr std::string_view kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)";

Result<void> CheckOrder(std::span<const Migration> migrations) {
  for (size_t i = 1; i < migrations.size(); ++i) {
    if (migrations[i].version <= migrations[i - 1].version) {
      return Error::Internal("bad_migrations", "migration versions must increase: " + migrations[i].name);
    }
  }
  return Ok();
}

std::string NowIso() {
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  time_t t = static_cast<time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

Result<int> Migrate(Database& db, std::span<const Migration> migrations) {
  SMART_TRY(CheckOrder(migrations));
  int applied = 0;
  // One transaction for the whole run: a failing migration leaves none of this
  // run applied, and the lock is held throughout.
  auto r = db.Transact(TxMode::kWrite, [&](Tx& tx) -> Result<void> {
    applied = 0;
    if (db.backend() == "postgresql") {
      SMART_TRY(tx.Query("SELECT pg_advisory_xact_lock($1)", {Value{kMigrationLockKey}}));
    }
    SMART_TRY(tx.ExecScript(kCreateTable));
    auto rows = tx.Query("SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (!rows) return rows.take_error();
    int latest = migrations.empty() ? 0 : migrations.back().version;
    for (const Row& row : *rows) {
      int version = static_cast<int>(row.Int(0));
      auto it =
          std::find_if(migrations.begin(), migrations.end(), [&](const Migration& m) { return m.version == version; });
      if (it == migrations.end()) {
        return Error::Conflict("schema_too_new", "the database has migration " + std::to_string(version) + " (" +
                                                     row.Text(1) + ") which this build does not know (latest " +
                                                     std::to_string(latest) + "); run a newer smartd");
      }
      if (Checksum(ScriptFor(db, *it)) != row.Text(2)) {
        return Error::Conflict("migration_changed", "migration " + std::to_string(version) + " (" + it->name +
                                                        ") was changed after it was applied");
      }
    }
    for (const Migration& m : migrations) {
      bool done = std::any_of(rows->begin(), rows->end(), [&](const Row& row) { return row.Int(0) == m.version; });
      if (done) continue;
      auto script = tx.ExecScript(ScriptFor(db, m));
      if (!script) {
        return Error{script.error().kind, script.error().code,
                     "migration " + std::to_string(m.version) + " (" + m.name + ") failed: " + script.error().message};
      }
      SMART_TRY(
          tx.Exec("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                  {Value{int64_t{m.version}}, Value{m.name}, Value{Checksum(ScriptFor(db, m))}, Value{NowIso()}}));
      ++applied;
    }
    return Ok();
  });
  if (!r) return r.take_error();
  return applied;
}

Result<MigrationStatus> GetMigrationStatus(Database& db, std::span<const Migration> migrations) {
  MigrationStatus status;
  status.latest = migrations.empty() ? 0 : migrations.back().version;
  auto r = db.Transact(TxMode::kRead, [&](Tx& tx) -> Result<void> {
    // Absent table means nothing applied; ask the catalogue rather than fail a query.
    auto exists = db.backend() == "postgresql"
                      ? tx.Query(
                            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND "
                            "table_name = 'schema_migrations'")
                      : tx.Query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'");
    if (!exists) return exists.take_error();
    if (exists->empty()) return Ok();
    auto row = tx.QueryOne("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!row) return row.take_error();
    status.current = static_cast<int>((*row)->Int(0));
    return Ok();
  });
  if (!r) return r.take_error();
  return status;
}

}  // namespace smart::store
