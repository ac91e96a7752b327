#include "smart/core/config.hpp"

#include <toml++/toml.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>

namespace smart::config {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kString: return "a string";
    case Type::kInt: return "an integer";
    case Type::kBool: return "a boolean (true or false)";
    case Type::kStringList: return "a list of strings";
  }
  return "?";
}

Error BadValue(const Key& key, std::string_view detail, const std::string& source) {
  return Error::Invalid("invalid_config",
                        "config key '" + key.name + "' (from " + source + "): " + std::string(detail));
}

Result<Value> ParseText(const Key& key, std::string_view text, const std::string& source) {
  switch (key.type) {
    case Type::kString: return Value{std::string(text)};
    case Type::kInt: {
      auto t = Trim(text);
      int64_t v = 0;
      auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (t.empty() || ec != std::errc() || p != t.data() + t.size()) {
        return BadValue(key, "must be " + std::string(TypeName(key.type)) + ", got \"" + std::string(text) + "\"",
                        source);
      }
      return Value{v};
    }
    case Type::kBool: {
      auto t = Trim(text);
      if (t == "true" || t == "1" || t == "yes" || t == "on") return Value{true};
      if (t == "false" || t == "0" || t == "no" || t == "off") return Value{false};
      return BadValue(key, "must be " + std::string(TypeName(key.type)) + ", got \"" + std::string(text) + "\"",
                      source);
    }
    case Type::kStringList: {
      std::vector<std::string> items;
      std::string_view rest = text;
      while (!Trim(rest).empty()) {
        auto comma = rest.find(',');
        auto item = Trim(rest.substr(0, comma));
        if (!item.empty()) items.emplace_back(item);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      return Value{std::move(items)};
    }
  }
  return Error::Internal("config_type", "unknown type");
}

Result<Value> FromToml(const Key& key, const toml::node& node, const std::string& source) {
  switch (key.type) {
    case Type::kString:
      if (auto v = node.value<std::string>(); v && node.is_string()) return Value{*v};
      break;
    case Type::kInt:
      if (node.is_integer()) return Value{*node.value<int64_t>()};
      break;
    case Type::kBool:
      if (node.is_boolean()) return Value{*node.value<bool>()};
      break;
    case Type::kStringList:
      if (const auto* arr = node.as_array()) {
        std::vector<std::string> items;
        for (const auto& el : *arr) {
          if (!el.is_string()) return BadValue(key, "every element must be a string", source);
          items.push_back(*el.value<std::string>());
        }
        return Value{std::move(items)};
      }
      break;
  }
  return BadValue(key, std::string("must be ") + TypeName(key.type), source);
}

void PrintTomlString(std::ostream& os, const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  os << '"' << out << '"';
}

}  // namespace

Config::Config(std::vector<Key> schema) {
  for (auto& key : schema) {
    auto v = ParseText(key, key.default_value, "default");
    if (!v) {
      std::cerr << "BUG: " << v.error().message << "\n";
      std::abort();
    }
    Entry e{std::move(key), {}, {}};
    auto r = Assign(e, std::move(v).value(), "default");
    if (!r) {
      std::cerr << "BUG: " << r.error().message << "\n";
      std::abort();
    }
    entries_.emplace(e.key.name, std::move(e));
  }
}

Result<void> Config::Assign(Entry& e, Value v, const std::string& source) {
  if (auto* i = std::get_if<int64_t>(&v)) {
    if (*i < e.key.min || *i > e.key.max) {
      return BadValue(e.key,
                      "must be between " + std::to_string(e.key.min) + " and " + std::to_string(e.key.max) + ", got " +
                          std::to_string(*i),
                      source);
    }
  }
  if (auto* s = std::get_if<std::string>(&v); s && !e.key.choices.empty()) {
    bool found = false;
    std::string list;
    for (const auto& c : e.key.choices) {
      found = found || c == *s;
      list += (list.empty() ? "" : ", ") + c;
    }
    if (!found) return BadValue(e.key, "must be one of " + list + ", got \"" + *s + "\"", source);
  }
  e.value = std::move(v);
  e.source = source;
  return Ok();
}

Result<void> Config::LoadFile(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& err) {
    std::ostringstream msg;
    msg << "config file " << path << ": " << err.description();
    const auto& where = err.source().begin;
    if (where.line > 0) msg << " (line " << where.line << ", column " << where.column << ")";
    return Error::Invalid("invalid_config", msg.str());
  }
  for (const auto& [section, node] : root) {
    const auto* table = node.as_table();
    if (!table) {
      return Error::Invalid("invalid_config", "config file " + path + ": '" + std::string(section.str()) +
                                                  "' must be a [section], not a top-level value");
    }
    for (const auto& [name, value] : *table) {
      std::string full = std::string(section.str()) + "." + std::string(name.str());
      auto it = entries_.find(full);
      if (it == entries_.end()) {
        return Error::Invalid("invalid_config", "config file " + path + ": unknown key '" + full + "'");
      }
      auto v = FromToml(it->second.key, value, path);
      if (!v) return v.take_error();
      SMART_TRY(Assign(it->second, std::move(v).value(), path));
    }
  }
  return Ok();
}

Result<void> Config::LoadEnv(char** envp) {
  if (envp == nullptr) return Ok();
  for (auto& [name, e] : entries_) {
    std::string var = EnvName(name);
    for (char** p = envp; *p != nullptr; ++p) {
      std::string_view kv(*p);
      if (kv.size() > var.size() && kv.substr(0, var.size()) == var && kv[var.size()] == '=') {
        auto v = ParseText(e.key, kv.substr(var.size() + 1), var);
        if (!v) return v.take_error();
        SMART_TRY(Assign(e, std::move(v).value(), var));
      }
    }
  }
  return Ok();
}

Result<void> Config::Set(std::string_view key, std::string_view text, std::string_view source) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return Error::Invalid("invalid_config", "unknown config key '" + std::string(key) + "'");
  auto v = ParseText(it->second.key, text, std::string(source));
  if (!v) return v.take_error();
  return Assign(it->second, std::move(v).value(), std::string(source));
}

const Config::Entry& Config::Find(std::string_view key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    std::cerr << "BUG: config key '" << key << "' is not declared\n";
    std::abort();
  }
  return it->second;
}

int64_t Config::Int(std::string_view key) const { return std::get<int64_t>(Find(key).value); }
const std::string& Config::String(std::string_view key) const { return std::get<std::string>(Find(key).value); }
bool Config::Bool(std::string_view key) const { return std::get<bool>(Find(key).value); }
const std::vector<std::string>& Config::StringList(std::string_view key) const {
  return std::get<std::vector<std::string>>(Find(key).value);
}
const std::string& Config::Source(std::string_view key) const { return Find(key).source; }

std::string Config::EnvName(std::string_view key) {
  std::string out = "SMART_";
  for (char c : key) out.push_back(c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return out;
}

std::string Config::Print() const {
  std::ostringstream os;
  std::string section;
  for (const auto& [name, e] : entries_) {
    auto dot = name.find('.');
    std::string sec = name.substr(0, dot);
    if (sec != section) {
      os << (section.empty() ? "" : "\n") << "[" << sec << "]\n";
      section = sec;
    }
    os << name.substr(dot + 1) << " = ";
    if (e.key.redact == Redact::kAll && std::holds_alternative<std::vector<std::string>>(e.value)) {
      os << (std::get<std::vector<std::string>>(e.value).empty() ? "[]" : "[\"***\"]");
    } else if (e.key.redact == Redact::kAll && !std::get<std::string>(e.value).empty()) {
      os << "\"***\"";
    } else if (const auto* s = std::get_if<std::string>(&e.value)) {
      PrintTomlString(os, e.key.redact == Redact::kUrlPassword ? RedactUrlPassword(*s) : *s);
    } else if (const auto* i = std::get_if<int64_t>(&e.value)) {
      os << *i;
    } else if (const auto* b = std::get_if<bool>(&e.value)) {
      os << (*b ? "true" : "false");
    } else {
      os << "[";
      const auto& list = std::get<std::vector<std::string>>(e.value);
      for (size_t i = 0; i < list.size(); ++i) {
        if (i) os << ", ";
        PrintTomlString(os, list[i]);
      }
      os << "]";
    }
    os << "  # " << e.source << "\n";
  }
  return os.str();
}

std::string RedactUrlPassword(const std::string& url) {
  // scheme://user:password@host -> scheme://user:***@host
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  auto at = url.find('@', scheme + 3);
  if (at == std::string::npos) return url;
  auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace smart::config
