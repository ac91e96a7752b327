#include "smart/testing/postgres.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "smart/testing/process.hpp"

namespace smart::testing {

std::string FreshPostgresDatabase() {
  const char* file = std::getenv("SMART_TEST_PG_URL_FILE");
  if (!file) {
    std::cerr << "SMART_TEST_PG_URL_FILE is not set\n";
    return "";
  }
  std::ifstream in(file);
  std::string url;
  if (!std::getline(in, url)) {
    std::cerr << "no PostgreSQL URL in " << file << " (did the postgres fixture run?)\n";
    return "";
  }
  static std::atomic<int> counter{0};
  std::string name = "t_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  auto [code, out] = RunCommand({"psql", url, "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE " + name});
  if (code != 0) {
    std::cerr << "CREATE DATABASE failed: " << out << "\n";
    return "";
  }
  // The fixture's URL names the `postgres` database: point it at the new one.
  auto pos = url.find("/postgres?");
  if (pos == std::string::npos) {
    std::cerr << "unexpected fixture URL " << url << "\n";
    return "";
  }
  return url.substr(0, pos + 1) + name + url.substr(pos + 9);
}

}  // namespace smart::testing
