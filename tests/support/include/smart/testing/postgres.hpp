// Databases in the throwaway PostgreSQL cluster of the `postgres` ctest fixture.
#pragma once

#include <string>

namespace smart::testing {

// Creates a new, empty database in the fixture's cluster (named by the file in
// SMART_TEST_PG_URL_FILE) and returns its URL, so that test programs running in
// parallel never share tables. Returns "" and explains on stderr on failure.
std::string FreshPostgresDatabase();

}  // namespace smart::testing
