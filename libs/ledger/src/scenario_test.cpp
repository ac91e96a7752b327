// Data-driven ledger scenarios: every testdata/*.scenario file is a list of
// commands, each with its expected outcome after "=>", so that a new case needs
// no C++. Accounts are written OWNER (its available account) or OWNER/KIND.
//
//   mint KEY OWNER AMOUNT ASSET                 => ok | <error code>
//   transfer KEY FROM TO AMOUNT ASSET [code=C] [metadata=JSON]
//   pending KEY FROM TO AMOUNT ASSET [timeout=S]
//   post KEY PENDING_KEY [amount=N]             (0 or absent: the whole hold)
//   void KEY PENDING_KEY
//   advance SECONDS
//   expire                                      => how many holds expired
//   balance ACCOUNT ASSET => [balance=N] [spendable=N] [debits_pending=N] [credits_pending=N]
//   state PENDING_KEY                           => pending | posted | voided | expired
//   supply ASSET                                => N
//
// Outcomes of transfers: ok, replayed, or the error code. Every scenario ends
// with `ledger verify` passing.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "test_fixture.hpp"

namespace smart::ledger {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> ScenarioFiles() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(LEDGER_TESTDATA)) {
    if (e.path().extension() == ".scenario") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class Scenario : public LedgerTest, public ::testing::WithParamInterface<fs::path> {
 protected:
  AccountRef Account(const std::string& spec, const std::string& asset) {
    auto slash = spec.find('/');
    if (slash == std::string::npos) return Ref(spec, kind::kAvailable, asset);
    return Ref(spec.substr(0, slash), spec.substr(slash + 1), asset);
  }

  // Runs one command; returns its outcome as the scenario files spell it.
  std::string Run(const std::vector<std::string>& args, const std::map<std::string, std::string>& opts) {
    const std::string& cmd = args.at(0);
    auto amount = [](const std::string& s) {
      auto a = ParseAmount(s);
      if (!a) throw std::runtime_error("not an amount: " + s);
      return *a;
    };
    TransferRequest req;
    if (cmd == "advance") {
      clock_.Advance(std::chrono::seconds(std::stoll(args.at(1))));
      return "ok";
    }
    if (cmd == "expire") {
      auto n = ledger_->ExpirePending();
      return n.ok() ? std::to_string(*n) : n.error().code;
    }
    if (cmd == "supply") {
      auto s = ledger_->Supply(args.at(1));
      return s.ok() ? FormatAmount(*s) : s.error().code;
    }
    if (cmd == "state") {
      auto t = ledger_->GetTransfer(ids_.at(args.at(1)));
      return t.ok() ? t->state : t.error().code;
    }
    if (cmd == "balance") {
      auto a = ledger_->GetAccount(Account(args.at(1), args.at(2)));
      if (!a) return a.error().code;
      return "balance=" + a->Balance() + " spendable=" + FormatAmount(a->Spendable()) +
             " debits_pending=" + FormatAmount(a->debits_pending) +
             " credits_pending=" + FormatAmount(a->credits_pending);
    }
    req.key = args.at(1);
    req.code = opts.count("code") ? opts.at("code") : cmd;
    if (opts.count("metadata")) req.metadata = opts.at("metadata");
    if (cmd == "mint") {
      req.debit = Ref("platform", kind::kIssuer, args.at(4));
      req.credit = Ref(args.at(2), kind::kAvailable, args.at(4));
      req.amount = amount(args.at(3));
    } else if (cmd == "transfer" || cmd == "pending") {
      req.type = cmd == "pending" ? TransferType::kPending : TransferType::kSingle;
      req.debit = Account(args.at(2), args.at(5));
      req.credit = Account(args.at(3), args.at(5));
      req.amount = amount(args.at(4));
      if (opts.count("timeout")) req.timeout_s = std::stoll(opts.at("timeout"));
    } else if (cmd == "post" || cmd == "void") {
      req.type = cmd == "post" ? TransferType::kPost : TransferType::kVoid;
      req.pending_id = ids_.count(args.at(2)) ? ids_.at(args.at(2)) : args.at(2);
      if (opts.count("amount")) req.amount = amount(opts.at("amount"));
    } else {
      throw std::runtime_error("unknown command " + cmd);
    }
    auto r = ledger_->Execute({req});
    if (!r) return r.error().code;
    ids_[req.key] = (*r)[0].id;
    return (*r)[0].replayed ? "replayed" : "ok";
  }

  std::map<std::string, std::string> ids_;  // key -> transfer id
};

TEST_P(Scenario, Runs) {
  std::ifstream in(GetParam());
  ASSERT_TRUE(in) << GetParam();
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    auto arrow = line.find("=>");
    std::istringstream words(line.substr(0, arrow));
    std::vector<std::string> args;
    std::map<std::string, std::string> opts;
    for (std::string w; words >> w;) {
      auto eq = w.find('=');
      if (eq != std::string::npos && eq > 0) {
        opts[w.substr(0, eq)] = w.substr(eq + 1);
      } else {
        args.push_back(w);
      }
    }
    if (args.empty()) continue;
    ASSERT_NE(arrow, std::string::npos) << GetParam().filename() << ":" << n << ": no '=>'";
    std::istringstream expected_words(line.substr(arrow + 2));
    std::vector<std::string> expected;
    for (std::string w; expected_words >> w;) expected.push_back(w);
    std::string got = Run(args, opts);
    if (args[0] == "balance") {
      // Only the fields the line names are compared.
      for (const auto& e : expected) {
        EXPECT_NE((" " + got + " ").find(" " + e + " "), std::string::npos)
            << GetParam().filename() << ":" << n << ": expected " << e << ", got " << got;
      }
    } else {
      ASSERT_EQ(expected.size(), 1u) << GetParam().filename() << ":" << n;
      EXPECT_EQ(got, expected[0]) << GetParam().filename() << ":" << n << ": " << line;
    }
  }
  ExpectVerifies();
}

INSTANTIATE_TEST_SUITE_P(Files, Scenario, ::testing::ValuesIn(ScenarioFiles()),
                         [](const auto& info) { return info.param.stem().string(); });

}  // namespace
}  // namespace smart::ledger
