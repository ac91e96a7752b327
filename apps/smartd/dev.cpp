#include "dev.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "smart/auth/service.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/log.hpp"
#include "smart/ledger/ledger.hpp"

extern char** environ;

namespace smart::smartd {
namespace fs = std::filesystem;

namespace {

Result<void> WritePrivate(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Error::Unavailable("write_failed", "cannot write " + path);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok) return Error::Unavailable("write_failed", "cannot write " + path);
  return Ok();
}

// A user with a random password, credited `amount` USDC base units (0: none).
Result<std::string> CreateUser(auth::AuthService& auth, ledger::Ledger& ledger, const char* email, const char* name,
                               std::string_view role, ledger::Amount amount) {
  std::string password = crypto::RandomToken(12);
  auto user = auth.Register(email, password, name, role);
  if (!user) return user.take_error();
  if (amount > 0) {
    auto funded =
        ledger.Execute({{.key = std::string("dev/fund/") + email,
                         .debit = {std::string(ledger::kPlatform), std::string(ledger::kind::kIssuer), "USDC"},
                         .credit = {user->id, std::string(ledger::kind::kAvailable), "USDC"},
                         .amount = amount,
                         .code = "dev_faucet"}});
    if (!funded) return funded.take_error();
  }
  return password;
}

}  // namespace

Result<void> FirstRun(auth::AuthService& auth, ledger::Ledger& ledger, const std::string& data_dir,
                      const std::string& url) {
  auto users = auth.ListUsers(1, "");
  if (!users) return users.take_error();
  if (!users->items.empty()) return Ok();  // not the first run
  auto admin = CreateUser(auth, ledger, kAdminEmail, "Administrator", "admin", 0);
  if (!admin) return admin.take_error();
  auto demo = CreateUser(auth, ledger, kDemoEmail, "Demo", "user", 100'000'000);  // 100 USDC
  if (!demo) return demo.take_error();
  auto node = CreateUser(auth, ledger, kNodeEmail, "Dev node operator", "user", 20'000'000);  // its stake
  if (!node) return node.take_error();
  // The dev node's key (scope nodes), for --with-node now or later.
  auto tokens = auth.Login(kNodeEmail, *node, "smartd --dev");
  if (!tokens) return tokens.take_error();
  auto who = auth.Authenticate(tokens->access_token);
  if (!who) return who.take_error();
  auto key = auth.CreateApiKey(*who, "dev node", {"nodes"}, std::nullopt);
  if (!key) return key.take_error();
  SMART_TRY(WritePrivate(data_dir + "/dev-node.key", key->secret + "\n"));
  SMART_TRY(WritePrivate(data_dir + "/demo.password", *demo + "\n"));
  std::cout << "\nFirst run (development mode): accounts created on " << url << "\n"
            << "  admin  " << kAdminEmail << "  password " << *admin << "\n"
            << "  demo   " << kDemoEmail << "  password " << *demo << "  (100 USDC to spend; also in " << data_dir
            << "/demo.password)\n"
            << "The passwords are shown once. Next: smart login --email " << kDemoEmail << "\n\n"
            << std::flush;
  return Ok();
}

Result<pid_t> StartDevNode(const std::string& data_dir, const std::string& url, log::Logger& logger) {
  std::ifstream f(data_dir + "/dev-node.key");
  std::string key;
  std::getline(f, key);
  if (key.empty()) {
    return Error::Invalid("no_dev_node", "--with-node needs a data directory first started with --dev (" + data_dir +
                                             "/dev-node.key is missing)");
  }
  std::error_code ec;
  fs::path self = fs::canonical("/proc/self/exe", ec);
  std::string bin = "smart-node";
  for (const fs::path& p :
       {self.parent_path() / "smart-node", self.parent_path().parent_path() / "smart-node" / "smart-node"}) {
    if (!ec && fs::exists(p)) {
      bin = p.string();
      break;
    }
  }
  std::vector<std::string> args = {bin,
                                   "--server",
                                   url,
                                   "--set",
                                   "node.name=dev-node",
                                   "--set",
                                   "node.capabilities=echo,sha256,text_generation,inference,classification,embedding",
                                   "--set",
                                   "node.capacity=4",
                                   "--set",
                                   "node.state_file=" + data_dir + "/dev-node.state"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string_view(*e).rfind("SMART_", 0) != 0 || std::string_view(*e).rfind("SMART_NODE_", 0) == 0 ||
        std::string_view(*e).rfind("SMART_OPENAI_", 0) == 0) {
      env.emplace_back(*e);  // smartd's own SMART_* settings are not the node's
    }
  }
  env.push_back("SMART_NODE_USER_KEY=" + key);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string log_path = data_dir + "/dev-node.log";
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Error::Unavailable("spawn_failed", std::string("cannot fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec. It gets SIGTERM when
    // smartd dies, however it dies, so a dev node never outlives its server.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // smartd blocks SIGTERM for its own waiter; the node must not
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execvpe(bin.c_str(), argv.data(), envp.data());  // PATH when not next to smartd
    ::_exit(127);
  }
  logger.Info("dev node started", {{"pid", static_cast<int64_t>(pid)}, {"log", log_path}});
  return pid;
}

}  // namespace smart::smartd
