// smart: the command line for Smart (docs/cli.md).
//
//   smart [--profile P] [--server URL] [--api-key KEY] [--json] COMMAND ...
//
// Every command is one or a few calls to smartd's public API. Tables by
// default, the API's JSON with --json; a refusal prints the problem's title
// and detail and exits with a documented code (client.hpp).
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "client.hpp"

namespace smart::cli {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using Args = std::vector<std::pair<std::string, std::string>>;

// ---- output

std::string Text(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "-";
  return json::serialize(v);
}

// A field by dotted path ("metrics.load"); null when absent.
json::value Field(const json::value& v, const std::string& path) {
  const json::value* cur = &v;
  std::stringstream parts(path);
  std::string part;
  while (std::getline(parts, part, '.')) {
    if (!cur->is_object()) return nullptr;
    cur = cur->as_object().if_contains(part);
    if (!cur) return nullptr;
  }
  return *cur;
}

// The items of a page ({"items": [...]}); none when absent.
json::array Items(const json::value& page) {
  json::value items = Field(page, "items");
  return items.is_array() ? items.as_array() : json::array{};
}

void Table(const json::array& rows, const std::vector<std::pair<std::string, std::string>>& columns) {
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width;
  for (const auto& [header, path] : columns) width.push_back(header.size());
  for (const auto& row : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < columns.size(); ++i) {
      std::string cell = Text(Field(row, columns[i].second));
      if (cell.size() > 60) cell = cell.substr(0, 57) + "...";
      width[i] = std::max(width[i], cell.size());
      line.push_back(std::move(cell));
    }
    cells.push_back(std::move(line));
  }
  auto print = [&](const std::vector<std::string>& line) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      out += line[i];
      if (i + 1 < line.size()) out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  std::vector<std::string> headers;
  for (const auto& [header, path] : columns) headers.push_back(header);
  print(headers);
  for (const auto& line : cells) print(line);
  if (rows.empty()) std::cout << "(none)\n";
}

// An object as "key  value" lines (nested objects and arrays as JSON).
void Show(const json::value& v, const std::vector<std::string>& skip = {}) {
  if (!v.is_object()) {
    std::cout << Text(v) << "\n";
    return;
  }
  size_t width = 0;
  for (const auto& kv : v.as_object()) width = std::max(width, kv.key().size());
  for (const auto& kv : v.as_object()) {
    if (std::find(skip.begin(), skip.end(), kv.key()) != skip.end()) continue;
    std::cout << std::string(kv.key()) << std::string(width - kv.key().size() + 2, ' ') << Text(kv.value()) << "\n";
  }
}

int Fail(const Problem& p) {
  std::cerr << "error: " << p.title;
  if (!p.detail.empty()) std::cerr << ": " << p.detail;
  std::cerr << " (" << p.code << ")\n";
  return p.exit_code;
}

std::string RandomKey() {
  std::random_device rd;
  std::uniform_int_distribution<int> d(0, 15);
  std::string s = "cli-";
  for (int i = 0; i < 24; ++i) s += "0123456789abcdef"[d(rd)];
  return s;
}

std::string Query(const Args& args) {
  std::string q;
  for (const auto& [k, v] : args) {
    if (v.empty()) continue;
    q += (q.empty() ? "?" : "&") + k + "=";
    for (unsigned char c : v) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        q += static_cast<char>(c);
      } else {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        q += buf;
      }
    }
  }
  return q;
}

// A password from stdin's first line (--password-stdin) or typed at the terminal without echo.
std::string ReadPassword(bool from_stdin, const std::string& prompt) {
  std::string password;
  if (from_stdin || !::isatty(STDIN_FILENO)) {
    std::getline(std::cin, password);
    return password;
  }
  std::cerr << prompt << std::flush;
  termios old{};
  ::tcgetattr(STDIN_FILENO, &old);
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::getline(std::cin, password);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::cerr << "\n";
  return password;
}

// Runs a call and prints its answer: `print` for humans, the JSON with --json.
int Run(Client& c, const std::string& method, const std::string& path, const std::string& body,
        const std::function<void(const json::value&)>& print, const Args& headers = {}) {
  auto r = c.Call(method, path, body, headers);
  if (auto* p = std::get_if<Problem>(&r)) return Fail(*p);
  const auto& v = std::get<json::value>(r);
  if (c.options().json) {
    std::cout << json::serialize(v) << "\n";
  } else {
    print(v);
  }
  return kExitOk;
}

bool Final(const std::string& status) {
  return status == "completed" || status == "failed" || status == "timed_out" || status == "cancelled";
}

// Follows a task until it is final; a live line on a terminal, one line per change otherwise.
// Each request after the first waits on the server for the task to change
// (If-None-Match with the ETag shown last, Prefer: wait=25).
int Watch(Client& c, const std::string& id) {
  bool tty = ::isatty(STDERR_FILENO);
  std::string last, etag;
  while (true) {
    Args ask;
    if (!etag.empty()) ask = {{"If-None-Match", etag}, {"Prefer", "wait=25"}};
    http::ClientResponse received;
    auto r = c.Call("GET", "/api/v1/tasks/" + id, "", ask, true, &received);
    if (auto* p = std::get_if<Problem>(&r)) {
      if (p->exit_code != kExitUnavailable) return Fail(*p);
      std::this_thread::sleep_for(std::chrono::seconds(1));  // smartd restarting: keep watching
      continue;
    }
    if (received.status == 304) {  // no change; a server that did not wait is asked again shortly
      if (received.Header("Preference-Applied").empty()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      continue;
    }
    etag = std::string(received.Header("ETag"));
    const auto& t = std::get<json::value>(r);
    std::string status = Text(Field(t, "status"));
    std::string line = id + "  " + status + "  " + Text(Field(t, "progress")) + "%";
    if (auto m = Text(Field(t, "progress_message")); !m.empty() && m != "-") line += "  " + m;
    if (tty) {
      std::cerr << "\r" << line << "\033[K" << std::flush;
    } else if (line != last) {
      std::cerr << line << "\n";
    }
    last = line;
    if (Final(status)) {
      if (tty) std::cerr << "\n";
      if (c.options().json) {
        std::cout << json::serialize(t) << "\n";
      } else if (status == "completed") {
        auto out = c.Call("GET", "/api/v1/tasks/" + id + "/result");
        if (auto* v = std::get_if<json::value>(&out)) std::cout << Text(Field(*v, "output")) << "\n";
      } else {
        std::cerr << "task " << status << ": " << Text(Field(t, "error")) << "\n";
      }
      return status == "completed" ? kExitOk : kExitFailed;
    }
    if (etag.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a server without ETags
  }
}

const Problem kNoInput{.code = "no_input",
                       .title = "No input",
                       .detail =
                           "give --input TEXT, --file PATH (- for stdin) or pipe it; it must not be empty (and "
                           "be valid JSON with --input-json)",
                       .exit_code = kExitUsage};

const std::vector<std::pair<std::string, std::string>> kTaskColumns = {{"ID", "id"},         {"TYPE", "type"},
                                                                       {"STATUS", "status"}, {"PROGRESS", "progress"},
                                                                       {"COST", "display"},  {"CREATED", "created_at"}};
const std::vector<std::pair<std::string, std::string>> kNodeColumns = {{"ID", "id"},
                                                                       {"NAME", "name"},
                                                                       {"STATUS", "status"},
                                                                       {"CAPABILITIES", "capabilities"},
                                                                       {"REPUTATION", "reputation"},
                                                                       {"LOAD", "load"},
                                                                       {"COMPLETED", "completed"}};

// ---- bash completion, from the command tree

void Completion(const CLI::App& app, const std::string& path, std::string& cases) {
  std::string words;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    words += sub->get_name() + " ";
  }
  for (const auto* opt : app.get_options()) {
    for (const auto& n : opt->get_lnames()) words += "--" + n + " ";
  }
  cases += "    \"" + path + "\") words=\"" + words + "\" ;;\n";
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    Completion(*sub, path.empty() ? sub->get_name() : path + " " + sub->get_name(), cases);
  }
}

std::string CompletionScript(const CLI::App& app) {
  std::string cases;
  Completion(app, "", cases);
  return "# bash completion for smart: source <(smart completion bash)\n"
         "_smart() {\n"
         "  local cur=${COMP_WORDS[COMP_CWORD]} path='' w words\n"
         "  for w in \"${COMP_WORDS[@]:1:COMP_CWORD-1}\"; do\n"
         "    case \"$w\" in -*) ;; *) case \" $(_smart_words \"$path\") \" in *\" $w \"*) path=${path:+$path }$w ;; "
         "esac ;; esac\n"
         "  done\n"
         "  COMPREPLY=($(compgen -W \"$(_smart_words \"$path\")\" -- \"$cur\"))\n"
         "}\n"
         "_smart_words() {\n"
         "  local words=''\n"
         "  case \"$1\" in\n" +
         cases +
         "  esac\n"
         "  echo \"$words\"\n"
         "}\n"
         "complete -F _smart smart\n";
}

// ---- nodes run: smart-node with a node registered by `smart nodes register`

std::string NodeFile(const Client& c, const std::string& node_id) {
  return c.config_dir() + "/nodes/" + c.options().profile + "/" + node_id + ".json";
}

std::string FindSmartNode(const char* argv0) {
  std::error_code ec;
  fs::path self = fs::canonical("/proc/self/exe", ec);
  if (ec) self = argv0;
  for (const fs::path& p :
       {self.parent_path() / "smart-node", self.parent_path().parent_path() / "smart-node" / "smart-node"}) {
    if (fs::exists(p)) return p.string();
  }
  return "smart-node";  // from PATH
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"smart: the command line for Smart"};
  app.require_subcommand(1);
  Options opt;
  app.add_option("--profile", opt.profile, "Profile in the config file (SMART_PROFILE)");
  app.add_option("--server", opt.server, "smartd's URL (SMART_SERVER)");
  app.add_option("--api-key", opt.api_key, "An API key instead of the login session (SMART_API_KEY)");
  app.add_option("--config", opt.config_path, "Profiles file (SMART_CONFIG; ~/.config/smart/config.toml)");
  app.add_flag("--json", opt.json, "Print the API's JSON instead of tables");

  std::function<int(Client&)> action;
  auto on = [&](CLI::App* cmd, std::function<int(Client&)> fn) { cmd->callback([&action, fn] { action = fn; }); };

  // auth
  std::string email, name, password_note;
  bool password_stdin = false;
  auto* auth = app.add_subcommand("auth", "Accounts and sessions")->require_subcommand(1);
  auto* reg = auth->add_subcommand("register", "Create an account");
  reg->add_option("--email", email)->required();
  reg->add_option("--name", name, "Display name");
  reg->add_flag("--password-stdin", password_stdin, "Read the password from stdin's first line");
  on(reg, [&](Client& c) {
    std::string password = ReadPassword(password_stdin, "Password (12+ characters): ");
    json::object body{{"email", email}, {"password", password}};
    if (!name.empty()) body["name"] = name;
    auto r = c.Call("POST", "/api/v1/auth/register", json::serialize(body), {}, false);
    if (auto* p = std::get_if<Problem>(&r)) return Fail(*p);
    if (opt.json) {
      std::cout << json::serialize(std::get<json::value>(r)) << "\n";
    } else {
      std::cout << "registered " << email << "; now: smart login --email " << email << "\n";
    }
    return kExitOk;
  });
  auto login_cmd = [&](CLI::App* cmd) {
    cmd->add_option("--email", email, "Account email (asked when absent)");
    cmd->add_flag("--password-stdin", password_stdin, "Read the password from stdin's first line");
    on(cmd, [&](Client& c) {
      if (email.empty()) {
        std::cerr << "Email: " << std::flush;
        std::getline(std::cin, email);
      }
      std::string password = ReadPassword(password_stdin, "Password: ");
      auto r = c.Login(email, password);
      if (auto* p = std::get_if<Problem>(&r)) return Fail(*p);
      if (!opt.server.empty()) {
        if (auto saved = c.RememberServer(); !saved) {
          return Fail({.code = saved.error().code,
                       .title = "Cannot save the profile",
                       .detail = saved.error().message,
                       .exit_code = kExitUsage});
        }
      }
      std::cout << "logged in as " << email << " on " << c.server() << " (profile " << c.options().profile << ")\n";
      return kExitOk;
    });
  };
  login_cmd(auth->add_subcommand("login", "Log in; the session is kept in a 0600 file"));
  login_cmd(app.add_subcommand("login", "Log in (as auth login)"));
  auto logout = [&](Client& c) {
    if (auto p = c.Logout()) return Fail(*p);
    std::cout << "logged out\n";
    return kExitOk;
  };
  on(auth->add_subcommand("logout", "End the session"), logout);
  on(app.add_subcommand("logout", "End the session (as auth logout)"), logout);
  auto whoami = [&](Client& c) {
    return Run(c, "GET", "/api/v1/user/profile", "", [](const json::value& v) { Show(v); });
  };
  on(auth->add_subcommand("whoami", "The account you are"), whoami);
  on(app.add_subcommand("whoami", "The account you are (as auth whoami)"), whoami);

  // keys
  std::string key_name, id;
  std::vector<std::string> scopes;
  auto* keys = app.add_subcommand("keys", "API keys")->require_subcommand(1);
  auto* key_create = keys->add_subcommand("create", "Create an API key (shown once)");
  key_create->add_option("--name", key_name)->required();
  key_create->add_option("--scope", scopes, "Scope (repeatable): tasks:read, tasks:write, ledger:read, nodes, ...")
      ->required();
  on(key_create, [&](Client& c) {
    json::array s;
    for (const auto& x : scopes) s.emplace_back(x);
    return Run(c, "POST", "/api/v1/user/api-keys", json::serialize(json::object{{"name", key_name}, {"scopes", s}}),
               [](const json::value& v) {
                 Show(v, {"key"});
                 std::cout << "key  " << Text(Field(v, "key")) << "   (shown once: keep it now)\n";
               });
  });
  on(keys->add_subcommand("list", "Your API keys"), [&](Client& c) {
    return Run(c, "GET", "/api/v1/user/api-keys", "", [](const json::value& v) {
      Table(Items(v), {{"ID", "id"},
                       {"NAME", "name"},
                       {"SCOPES", "scopes"},
                       {"CREATED", "created_at"},
                       {"LAST USED", "last_used_at"}});
    });
  });
  auto* key_revoke = keys->add_subcommand("revoke", "Revoke an API key");
  key_revoke->add_option("id", id)->required();
  on(key_revoke, [&](Client& c) {
    return Run(c, "DELETE", "/api/v1/user/api-keys/" + id, "",
               [&](const json::value&) { std::cout << "revoked " << id << "\n"; });
  });

  // ledger
  std::string asset = "USDC", amount, to, memo;
  int limit = 20;
  on(app.add_subcommand("balance", "Your balances"), [&](Client& c) {
    return Run(c, "GET", "/api/v1/user/balances", "", [](const json::value& v) {
      Table(Items(v),
            {{"ASSET", "asset"}, {"KIND", "kind"}, {"BALANCE", "display"}, {"AVAILABLE (BASE UNITS)", "available"}});
    });
  });
  auto* txs = app.add_subcommand("transactions", "Your ledger history, newest first");
  txs->add_option("--asset", asset);
  txs->add_option("--limit", limit)->check(CLI::Range(1, 500));
  on(txs, [&](Client& c) {
    return Run(c, "GET", "/api/v1/user/transactions" + Query({{"asset", asset}, {"limit", std::to_string(limit)}}), "",
               [](const json::value& v) {
                 Table(Items(v), {{"TIME", "created_at"},
                                  {"CODE", "code"},
                                  {"AMOUNT", "display"},
                                  {"FROM", "from.owner"},
                                  {"TO", "to.owner"},
                                  {"STATE", "state"}});
               });
  });
  auto* transfer = app.add_subcommand("transfer", "Pay another user");
  transfer->add_option("--to", to, "Email or user id")->required();
  transfer->add_option("--amount", amount, "Integer base units, e.g. 250000 (0.25 USDC)")->required();
  transfer->add_option("--asset", asset);
  transfer->add_option("--memo", memo);
  on(transfer, [&](Client& c) {
    json::object body{{"to", to}, {"asset", asset}, {"amount", amount}};
    if (!memo.empty()) body["memo"] = memo;
    return Run(c, "POST", "/api/v1/transfers", json::serialize(body), [](const json::value& v) { Show(v); },
               {{"Idempotency-Key", RandomKey()}});
  });

  // tasks
  std::string type, input, file, priority, max_cost, parameters, status, not_before, deadline;
  bool input_json = false, wait = false;
  int replicas = 0, timeout_s = 0;
  auto* tasks = app.add_subcommand("tasks", "Submit and follow tasks")->require_subcommand(1);
  auto input_options = [&](CLI::App* cmd) {
    cmd->add_option("--type", type, "echo, sha256, text_generation, inference, classification, embedding")->required();
    cmd->add_option("--input", input, "The input text");
    cmd->add_option("--file", file, "Read the input from a file (- for stdin)");
    cmd->add_flag("--input-json", input_json, "The input is JSON, sent as such");
  };
  auto read_input = [&]() -> std::optional<json::value> {
    std::string text = input;
    if (input.empty() && file.empty() && ::isatty(STDIN_FILENO)) return std::nullopt;  // nothing given
    if (!file.empty() || input.empty()) {
      std::stringstream s;
      if (file.empty() || file == "-") {
        s << std::cin.rdbuf();
      } else {
        std::ifstream f(file);
        if (!f) return std::nullopt;
        s << f.rdbuf();
      }
      text = s.str();
    }
    if (text.empty()) return std::nullopt;
    if (!input_json) return json::value(text);
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec) return std::nullopt;
    return v;
  };
  auto* estimate = tasks->add_subcommand("estimate", "What a task would cost");
  input_options(estimate);
  on(estimate, [&](Client& c) {
    auto in = read_input();
    if (!in) return Fail(kNoInput);
    return Run(c, "POST", "/api/v1/tasks/estimate", json::serialize(json::object{{"type", type}, {"input", *in}}),
               [](const json::value& v) { Show(v); });
  });
  auto* submit = tasks->add_subcommand("submit", "Submit a task (input from --input, --file or stdin)");
  input_options(submit);
  submit->add_option("--priority", priority, "low, normal, high, urgent");
  submit->add_option("--max-cost", max_cost, "Refuse if it costs more (base units)");
  submit->add_option("--parameters", parameters, "A JSON object for the executor");
  submit->add_option("--replicas", replicas, "Run on 2 or 3 nodes and compare")->check(CLI::Range(2, 3));
  submit->add_option("--timeout", timeout_s, "Lease timeout in seconds");
  submit->add_option("--not-before", not_before, "Not run before this RFC 3339 time");
  submit->add_option("--deadline", deadline, "Failed and refunded if not done by this RFC 3339 time");
  submit->add_flag("--wait", wait, "Watch it to the end and print its output");
  on(submit, [&](Client& c) {
    auto in = read_input();
    if (!in) return Fail(kNoInput);
    json::object body{{"type", type}, {"input", *in}};
    if (!priority.empty()) body["priority"] = priority;
    if (!max_cost.empty()) body["max_cost"] = max_cost;
    if (replicas) body["replicas"] = replicas;
    if (timeout_s) body["timeout_s"] = timeout_s;
    if (!not_before.empty()) body["not_before"] = not_before;
    if (!deadline.empty()) body["deadline"] = deadline;
    if (!parameters.empty()) {
      boost::system::error_code ec;
      auto p = json::parse(parameters, ec);
      if (ec || !p.is_object()) {
        return Fail({.code = "invalid_parameters",
                     .title = "Bad --parameters",
                     .detail = "a JSON object",
                     .exit_code = kExitUsage});
      }
      body["parameters"] = p;
    }
    auto r = c.Call("POST", "/api/v1/tasks", json::serialize(body), {{"Idempotency-Key", RandomKey()}});
    if (auto* p = std::get_if<Problem>(&r)) return Fail(*p);
    const auto& t = std::get<json::value>(r);
    std::string task_id = Text(Field(t, "id"));
    if (wait) {
      std::cerr << "submitted " << task_id << " (" << Text(Field(t, "display")) << ")\n";
      return Watch(c, task_id);
    }
    if (opt.json) {
      std::cout << json::serialize(t) << "\n";
    } else {
      std::cout << task_id << "\n";
    }
    return kExitOk;
  });
  auto* list = tasks->add_subcommand("list", "Your tasks, newest first");
  list->add_option("--status", status);
  list->add_option("--limit", limit)->check(CLI::Range(1, 500));
  on(list, [&](Client& c) {
    return Run(c, "GET", "/api/v1/tasks" + Query({{"status", status}, {"limit", std::to_string(limit)}}), "",
               [](const json::value& v) { Table(Items(v), kTaskColumns); });
  });
  auto task_cmd = [&](const char* name, const char* help, std::function<int(Client&)> fn) {
    auto* cmd = tasks->add_subcommand(name, help);
    cmd->add_option("id", id)->required();
    on(cmd, std::move(fn));
  };
  task_cmd("show", "A task with its input, output and history",
           [&](Client& c) { return Run(c, "GET", "/api/v1/tasks/" + id, "", [](const json::value& v) { Show(v); }); });
  task_cmd("watch", "Follow a task to the end (a live progress line), then print its output",
           [&](Client& c) { return Watch(c, id); });
  task_cmd("result", "A completed task's output", [&](Client& c) {
    return Run(c, "GET", "/api/v1/tasks/" + id + "/result", "",
               [](const json::value& v) { std::cout << Text(Field(v, "output")) << "\n"; });
  });
  on(tasks->add_subcommand("dead-letters", "Your tasks that used up their attempts"), [&](Client& c) {
    return Run(c, "GET", "/api/v1/tasks/dead-letter" + Query({{"limit", std::to_string(limit)}}), "",
               [](const json::value& v) { Table(Items(v), kTaskColumns); });
  });
  task_cmd("retry", "Queue a dead-lettered task again (its cost is held again)", [&](Client& c) {
    return Run(c, "POST", "/api/v1/tasks/" + id + "/retry", "", [](const json::value& v) {
      std::cout << Text(Field(v, "id")) << "  " << Text(Field(v, "status")) << "\n";
    });
  });
  task_cmd("cancel", "Cancel a task (its hold is released)", [&](Client& c) {
    return Run(c, "POST", "/api/v1/tasks/" + id + "/cancel", "", [](const json::value& v) {
      std::cout << Text(Field(v, "id")) << "  " << Text(Field(v, "status")) << "\n";
    });
  });

  // nodes
  std::vector<std::string> capabilities = {"echo", "sha256"};
  int capacity = 2;
  std::vector<std::string> node_args;
  auto* nodes = app.add_subcommand("nodes", "Worker nodes")->require_subcommand(1);
  auto* node_reg =
      nodes->add_subcommand("register", "Register a node (holds the stake); keeps its credential for `nodes run`");
  node_reg->add_option("--name", name)->required();
  node_reg->add_option("--capabilities", capabilities, "Task types it runs")->delimiter(',');
  node_reg->add_option("--capacity", capacity)->check(CLI::Range(1, 100));
  on(node_reg, [&](Client& c) {
    json::array caps;
    for (const auto& x : capabilities) caps.emplace_back(x);
    auto r = c.Call("POST", "/api/v1/nodes/register",
                    json::serialize(json::object{{"name", name}, {"capabilities", caps}, {"capacity", capacity}}));
    if (auto* p = std::get_if<Problem>(&r)) return Fail(*p);
    const auto& n = std::get<json::value>(r);
    std::string node_id = Text(Field(n, "id"));
    std::string path = NodeFile(c, node_id);
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    {
      std::ofstream f(path);
      f << json::serialize(
               json::object{{"server", c.server()}, {"id", node_id}, {"credential", Field(n, "credential")}})
        << "\n";
    }
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, ec);
    if (opt.json) {
      std::cout << json::serialize(n) << "\n";
    } else {
      Show(n, {"credential"});
      std::cout << "credential kept in " << path << "; start it with: smart nodes run " << node_id << "\n";
    }
    return kExitOk;
  });
  on(nodes->add_subcommand("list", "The network's nodes"), [&](Client& c) {
    return Run(c, "GET", "/api/v1/nodes" + Query({{"limit", std::to_string(limit)}}), "",
               [](const json::value& v) { Table(Items(v), kNodeColumns); });
  });
  auto* node_show = nodes->add_subcommand("show", "One node");
  node_show->add_option("id", id)->required();
  on(node_show,
     [&](Client& c) { return Run(c, "GET", "/api/v1/nodes/" + id, "", [](const json::value& v) { Show(v); }); });
  auto* node_off = nodes->add_subcommand("deactivate", "Deactivate your node (releases its stake)");
  node_off->add_option("id", id)->required();
  on(node_off, [&](Client& c) {
    return Run(c, "POST", "/api/v1/nodes/" + id + "/deactivate", "", [](const json::value& v) {
      std::cout << Text(Field(v, "id")) << "  " << Text(Field(v, "status")) << "\n";
    });
  });
  auto* node_run = nodes->add_subcommand("run", "Run smart-node for a node registered here (extra arguments after --)");
  node_run->add_option("id", id, "The node (the only one registered with this profile when absent)");
  node_run->add_option("args", node_args, "Passed to smart-node");
  on(node_run, [&](Client& c) {
    if (id.empty()) {
      std::error_code ec;
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(c.config_dir() + "/nodes/" + c.options().profile, ec)) {
        found.push_back(e.path().stem().string());
      }
      if (found.size() != 1) {
        return Fail(
            {.code = "which_node",
             .title = found.empty() ? "No node registered here" : "Several nodes registered here",
             .detail = found.empty() ? "run `smart nodes register --name NAME` first" : "name one: smart nodes run ID",
             .exit_code = kExitUsage});
      }
      id = found.front();
    }
    std::ifstream f(NodeFile(c, id));
    std::stringstream s;
    s << f.rdbuf();
    boost::system::error_code ec;
    auto saved = json::parse(s.str(), ec);
    if (ec || !saved.is_object()) {
      return Fail({.code = "unknown_node",
                   .title = "Not registered here",
                   .detail = "no credential kept for " + id,
                   .exit_code = kExitNotFound});
    }
    std::string bin = FindSmartNode(argv[0]);
    std::vector<std::string> args = {bin, "--server", Text(Field(saved, "server")), "--set", "node.id=" + id};
    args.insert(args.end(), node_args.begin(), node_args.end());
    ::setenv("SMART_NODE_CREDENTIAL", Text(Field(saved, "credential")).c_str(), 1);  // not on the command line
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    ::execvp(bin.c_str(), cargs.data());
    return Fail({.code = "exec_failed",
                 .title = "Cannot start smart-node",
                 .detail = bin + ": " + std::strerror(errno),
                 .exit_code = kExitFailed});
  });

  // network
  auto* network = app.add_subcommand("network", "The network")->require_subcommand(1);
  on(network->add_subcommand("stats", "Nodes online, tasks pending, running, done"),
     [&](Client& c) { return Run(c, "GET", "/api/v1/nodes/stats", "", [](const json::value& v) { Show(v); }); });

  // admin
  std::string user, action_name;
  auto* admin = app.add_subcommand("admin", "Administration (scope admin)")->require_subcommand(1);
  auto* users = admin->add_subcommand("users", "Accounts");
  users->add_option("--limit", limit)->check(CLI::Range(1, 500));
  on(users, [&](Client& c) {
    return Run(c, "GET", "/api/v1/admin/users" + Query({{"limit", std::to_string(limit)}}), "",
               [](const json::value& v) {
                 Table(Items(v), {{"ID", "id"},
                                  {"EMAIL", "email"},
                                  {"ROLE", "role"},
                                  {"STATUS", "status"},
                                  {"TIER", "tier"},
                                  {"CREATED", "created_at"}});
               });
  });
  auto* audit = admin->add_subcommand("audit", "The audit log, newest first");
  audit->add_option("--limit", limit)->check(CLI::Range(1, 500));
  audit->add_option("--action", action_name);
  on(audit, [&](Client& c) {
    return Run(
        c, "GET", "/api/v1/admin/audit" + Query({{"limit", std::to_string(limit)}, {"action", action_name}}), "",
        [](const json::value& v) {
          Table(Items(v), {{"TIME", "created_at"}, {"ACTION", "action"}, {"ACTOR", "actor_id"}, {"TARGET", "target"}});
        });
  });
  auto settings = [&](bool paused) {
    return [&, paused](Client& c) {
      return Run(c, "PATCH", "/api/v1/admin/tasks/settings", json::serialize(json::object{{"paused", paused}}),
                 [](const json::value& v) { Show(v); });
    };
  };
  on(admin->add_subcommand("pause", "Stop taking new tasks"), settings(true));
  on(admin->add_subcommand("resume", "Take new tasks again"), settings(false));
  auto* mint = admin->add_subcommand("mint", "Credit a user (dev faucet: ledger.dev_faucet)");
  mint->add_option("--user", user, "Email or user id")->required();
  mint->add_option("--amount", amount, "Integer base units")->required();
  mint->add_option("--asset", asset);
  on(mint, [&](Client& c) {
    return Run(c, "POST", "/api/v1/admin/mint",
               json::serialize(json::object{{"user", user}, {"asset", asset}, {"amount", amount}}),
               [](const json::value& v) { Show(v); }, {{"Idempotency-Key", RandomKey()}});
  });

  // completion
  auto* completion = app.add_subcommand("completion", "Print a shell completion script")->require_subcommand(1);
  bool completion_only = false;
  completion->add_subcommand("bash", "source <(smart completion bash)")->callback([&] { completion_only = true; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (completion_only) {
    std::cout << CompletionScript(app);
    return kExitOk;
  }
  Client client(opt);
  if (auto loaded = client.Load(); !loaded) {
    std::cerr << "error: " << loaded.error().message << "\n";
    return kExitUsage;
  }
  return action ? action(client) : kExitUsage;
}

}  // namespace smart::cli

int main(int argc, char** argv) {
  try {
    return smart::cli::Main(argc, argv);
  } catch (const std::exception& e) {  // an answer of an unexpected shape: said plainly, no stack trace
    std::cerr << "error: unexpected answer from the server: " << e.what() << "\n";
    return smart::cli::kExitFailed;
  }
}
