// Configuration: a declared schema of keys ("http.port"), filled from defaults,
// then a TOML file, then SMART_<SECTION>_<KEY> environment variables, then
// command-line flags; later sources win. Every value is validated against its
// key's type and bounds, and every error names the key and where the value came from.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::config {

enum class Type { kString, kInt, kBool, kStringList };
enum class Redact { kNone, kAll, kUrlPassword };

struct Key {
  std::string name;  // "section.key", lower snake_case
  Type type = Type::kString;
  std::string default_value;  // textual form, parsed like an environment value
  std::string help;
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  std::vector<std::string> choices;  // allowed values of a string key, if any
  Redact redact = Redact::kNone;
};

using Value = std::variant<std::string, int64_t, bool, std::vector<std::string>>;

// scheme://user:password@host -> scheme://user:***@host (for logs and --print-config).
std::string RedactUrlPassword(const std::string& url);

class Config {
 public:
  // Aborts (a programming error) if a default does not satisfy its own key.
  explicit Config(std::vector<Key> schema);

  // Unknown sections or keys in the file are errors, so typos never pass silently.
  Result<void> LoadFile(const std::string& path);
  // Reads SMART_* variables from `envp` (a NULL-terminated array like environ).
  // Variables that name no key are ignored (the environment is shared with other tools).
  Result<void> LoadEnv(char** envp);
  // Sets one key from text (a command-line flag); `source` names it in errors.
  Result<void> Set(std::string_view key, std::string_view text, std::string_view source);

  int64_t Int(std::string_view key) const;
  const std::string& String(std::string_view key) const;
  bool Bool(std::string_view key) const;
  const std::vector<std::string>& StringList(std::string_view key) const;
  // Where the effective value came from: "default", a file path, a variable or a flag.
  const std::string& Source(std::string_view key) const;

  // The effective configuration as TOML, with secrets redacted and sources as comments.
  std::string Print() const;

  // "http.port" -> "SMART_HTTP_PORT".
  static std::string EnvName(std::string_view key);

 private:
  struct Entry {
    Key key;
    Value value;
    std::string source;
  };
  const Entry& Find(std::string_view key) const;
  Result<void> Assign(Entry& e, Value v, const std::string& source);

  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace smart::config
