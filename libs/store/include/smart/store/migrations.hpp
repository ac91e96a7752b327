// Versioned schema migrations, embedded in the binary by the libraries that own
// the tables. Applied in version order, each in its own transaction, under a
// lock (an advisory lock on PostgreSQL, the write lock on SQLite) so that
// several instances starting at once apply each migration exactly once.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "smart/core/result.hpp"
#include "smart/store/store.hpp"

namespace smart::store {

struct Migration {
  int version = 0;       // unique, increasing
  std::string name;      // snake_case
  std::string sqlite;    // the script for SQLite
  std::string postgres;  // the script for PostgreSQL; empty: same as `sqlite`
};

struct MigrationStatus {
  int current = 0;  // highest applied version
  int latest = 0;   // highest version this build knows
  bool up_to_date() const { return current == latest; }
};

// Applies what is missing; returns how many were applied. Fails when an applied
// migration's text changed since (checksum), or when the database holds a
// version this build does not know (it is newer than the binary).
Result<int> Migrate(Database& db, std::span<const Migration> migrations);
Result<MigrationStatus> GetMigrationStatus(Database& db, std::span<const Migration> migrations);

}  // namespace smart::store
