// The `smart` CLI against the real smartd in development mode (first-run
// accounts, a local node): the commands a user types, their output and exit codes.
#include <fstream>
#include <regex>

#include "harness.hpp"

namespace smart::itest {
namespace {

using namespace std::chrono_literals;

class Cli {
 public:
  Cli(uint16_t port, std::string home) : port_(port), home_(std::move(home)) {}
  // Runs `smart ARGS` through sh (stdin redirections allowed); stdout and stderr together.
  std::pair<int, std::string> operator()(const std::string& args) const {
    return testing::RunCommand({"/bin/sh", "-c", std::string(SMART_CLI_PATH) + " " + args + " 2>&1"},
                               {"HOME=" + home_, "SMART_SERVER=http://127.0.0.1:" + std::to_string(port_)});
  }

 private:
  uint16_t port_;
  std::string home_;
};

TEST(SmartCli, FromFirstRunToACompletedTask) {
  std::vector<std::string> env = kFastAuth;
  Smartd s(env, {"--dev", "--with-node"});
  ASSERT_NE(s.port(), 0);
  auto first = s.proc().WaitForLine("password", 10s);
  ASSERT_TRUE(first) << s.proc().output();
  std::smatch m;
  std::string out = s.proc().output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("admin@smart\\.local  password (\\S+)")));
  std::string admin_password = m[1];
  testing::TempDir home;
  Cli smart(s.port(), home.path());
  const std::string demo_password = s.data_dir() + "/demo.password";

  auto [code, text] = smart("whoami");
  EXPECT_EQ(code, 3) << text;
  EXPECT_NE(text.find("Not logged in"), std::string::npos) << text;
  std::tie(code, text) = smart("login --email demo@smart.local --password-stdin < " + demo_password);
  ASSERT_EQ(code, 0) << text;
  std::tie(code, text) = smart("whoami");
  EXPECT_NE(text.find("demo@smart.local"), std::string::npos) << text;
  std::tie(code, text) = smart("balance");
  EXPECT_NE(text.find("100 USDC"), std::string::npos) << text;

  // The dev node takes it.
  std::tie(code, text) = smart("tasks submit --type echo --input 'hello, Smart' --wait");
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("hello, Smart"), std::string::npos) << text;
  EXPECT_NE(text.find("completed"), std::string::npos) << text;
  std::tie(code, text) = smart("balance");
  EXPECT_NE(text.find("99.975 USDC"), std::string::npos) << text;
  std::tie(code, text) = smart("--json tasks list");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(text.front(), '{') << text;
  EXPECT_NE(text.find("\"status\":\"completed\""), std::string::npos) << text;
  {
    std::ofstream f(home.path() + "/input.txt");
    f << "abc\n";
  }
  std::tie(code, text) = smart("tasks submit --type sha256 --file - < " + home.path() + "/input.txt");
  ASSERT_EQ(code, 0) << text;
  std::string id = text.substr(0, text.find('\n'));
  std::tie(code, text) = smart("tasks watch " + id);
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("tasks result " + id);
  EXPECT_NE(text.find("edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"), std::string::npos)
      << "sha256 of abc and a newline: " << text;

  // Refusals print the problem and a documented exit code.
  std::tie(code, text) = smart("tasks show task_nope");
  EXPECT_EQ(code, 4) << text;
  EXPECT_NE(text.find("error: "), std::string::npos) << text;
  EXPECT_NE(text.find("task_not_found"), std::string::npos) << text;
  std::tie(code, text) = smart("tasks submit --type mining --input x");
  EXPECT_EQ(code, 1) << text;
  EXPECT_NE(text.find("unknown_task_type"), std::string::npos) << text;
  std::tie(code, text) = smart("transfer --to admin@smart.local --amount 999999999999 --asset USDC");
  EXPECT_EQ(code, 6) << text;
  std::tie(code, text) = smart("tasks submit --type echo < /dev/null");
  EXPECT_EQ(code, 2) << "no input: " << text;
  std::tie(code, text) = smart("tasks frobnicate");
  EXPECT_EQ(code, 2) << text;

  // Keys, transfers, the network.
  std::tie(code, text) = smart("keys create --name ci --scope tasks:read");
  ASSERT_EQ(code, 0) << text;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("key  (sk_\\S+)")));
  std::string key = m[1];
  std::tie(code, text) = smart("--api-key " + key + " tasks list");
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("completed"), std::string::npos) << text;
  std::tie(code, text) = smart("keys list");
  EXPECT_NE(text.find("ci"), std::string::npos) << text;
  std::tie(code, text) = smart("transfer --to admin@smart.local --amount 1000000 --asset USDC");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("nodes list");
  EXPECT_NE(text.find("dev-node"), std::string::npos) << text;
  std::tie(code, text) = smart("network stats");
  EXPECT_NE(text.find("nodes_online"), std::string::npos) << text;

  // An admin profile next to the demo one.
  {
    std::ofstream f(home.path() + "/admin.password");
    f << admin_password << "\n";
  }
  std::tie(code, text) =
      smart("--profile admin login --email admin@smart.local --password-stdin < " + home.path() + "/admin.password");
  ASSERT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--profile admin admin users");
  EXPECT_NE(text.find("demo@smart.local"), std::string::npos) << text;
  std::tie(code, text) = smart("--profile admin balance");
  EXPECT_NE(text.find("1 USDC"), std::string::npos) << "the transfer arrived: " << text;
  std::tie(code, text) = smart("--profile admin admin pause");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("tasks submit --type echo --input x");
  EXPECT_EQ(code, 5) << "paused: " << text;
  std::tie(code, text) = smart("--profile admin admin resume");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--profile admin admin mint --user demo@smart.local --amount 5000000");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--profile admin admin audit");
  EXPECT_NE(text.find("ACTION"), std::string::npos) << text;
  std::tie(code, text) = smart("admin users");
  EXPECT_EQ(code, 3) << "the demo user is no admin: " << text;

  // A node registered from the CLI, run by it (smart-node with the kept credential).
  std::tie(code, text) = smart("nodes register --name cli-node --capabilities echo --capacity 1");
  ASSERT_EQ(code, 0) << text;
  EXPECT_NE(text.find("smart nodes run"), std::string::npos) << text;
  {
    testing::Process runner({"/bin/sh", "-c", "exec " + std::string(SMART_CLI_PATH) + " nodes run 2>&1"},
                            {"HOME=" + home.path(), "SMART_SERVER=http://127.0.0.1:" + std::to_string(s.port())});
    EXPECT_TRUE(runner.WaitForLine("node socket open", 20s)) << runner.output();
    std::tie(code, text) = smart("nodes list");
    EXPECT_NE(text.find("cli-node"), std::string::npos) << text;
  }
  std::tie(code, text) = smart("tasks dead-letters");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--json nodes list");
  ASSERT_TRUE(std::regex_search(text, m, std::regex("\"id\":\"(node_[^\"]+)\",\"name\":\"cli-node\""))) << text;
  std::string cli_node = m[1];
  std::tie(code, text) = smart("nodes show " + cli_node);
  EXPECT_NE(text.find("cli-node"), std::string::npos) << text;
  std::tie(code, text) = smart("nodes deactivate " + cli_node);
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("deactivated"), std::string::npos) << text;

  // The rest of the everyday commands.
  std::tie(code, text) = smart("tasks estimate --type text_generation --input hi");
  EXPECT_NE(text.find("0.05 USDC"), std::string::npos) << text;
  std::tie(code, text) = smart(
      "tasks submit --type echo --input later --priority low --not-before $(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)");
  ASSERT_EQ(code, 0) << text;
  std::string later = text.substr(0, text.find('\n'));
  std::tie(code, text) = smart("tasks cancel " + later);
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("tasks show " + later);
  EXPECT_NE(text.find("cancelled"), std::string::npos) << text;
  std::tie(code, text) = smart("transactions --limit 5");
  EXPECT_NE(text.find("task_"), std::string::npos) << "task escrow entries: " << text;
  std::tie(code, text) = smart("keys list");
  ASSERT_TRUE(std::regex_search(text, m, std::regex("(key_\\S+)\\s+ci")));
  std::tie(code, text) = smart("keys revoke " + std::string(m[1]));
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--api-key " + key + " tasks list");
  EXPECT_EQ(code, 3) << "a revoked key: " << text;
  {
    std::ofstream f(home.path() + "/new.password");
    f << "a long enough passphrase\n";
  }
  std::tie(code, text) = smart("auth register --email newbie@example.com --name Newbie --password-stdin < " +
                               home.path() + "/new.password");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) =
      smart("--profile newbie login --email newbie@example.com --password-stdin < " + home.path() + "/new.password");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("--profile newbie whoami");
  EXPECT_NE(text.find("newbie@example.com"), std::string::npos) << text;

  std::tie(code, text) = smart("completion bash");
  EXPECT_NE(text.find("complete -F _smart smart"), std::string::npos);
  EXPECT_NE(text.find("\"tasks\") words=\"estimate submit list show watch result"), std::string::npos) << text;

  std::tie(code, text) = smart("logout");
  EXPECT_EQ(code, 0) << text;
  std::tie(code, text) = smart("whoami");
  EXPECT_EQ(code, 3) << text;
}

}  // namespace
}  // namespace smart::itest
