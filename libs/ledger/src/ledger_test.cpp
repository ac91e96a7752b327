// The ledger against a real database: SQLite by default, the fixture's
// PostgreSQL when run as ledger_pgtest.
#include <random>
#include <thread>

#include "smart/store/group_commit.hpp"
#include "test_fixture.hpp"

namespace smart::ledger {
namespace {

using namespace std::chrono_literals;

TEST_F(LedgerTest, TransfersMoveValueAndKeepBothSides) {
  Mint("usr_a", 1000);
  auto r = ledger_->Execute({Single("k1", Ref("usr_a"), Ref("usr_b"), 300)});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  const Transfer& t = (*r)[0];
  EXPECT_EQ(t.id.substr(0, 3), "tr_");
  EXPECT_EQ(t.seq, 2);
  EXPECT_EQ(t.state, "posted");
  EXPECT_EQ(t.debit, Ref("usr_a"));
  EXPECT_EQ(t.credit, Ref("usr_b"));
  EXPECT_EQ(t.hash.size(), 64u);
  EXPECT_FALSE(t.replayed);
  EXPECT_EQ(Balance("usr_a"), "700");
  EXPECT_EQ(Balance("usr_b"), "300");
  EXPECT_EQ(Balance("usr_nobody"), "0");
  auto issuer = ledger_->GetAccount(Ref("platform", kind::kIssuer));
  ASSERT_TRUE(issuer.ok());
  EXPECT_EQ(issuer->Balance(), "-1000");
  auto supply = ledger_->Supply("USDC");
  ASSERT_TRUE(supply.ok());
  EXPECT_EQ(FormatAmount(*supply), "1000");
  auto got = ledger_->GetTransfer(t.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->hash, t.hash);
  EXPECT_EQ(got->key, "k1");
  ExpectVerifies();
}

TEST_F(LedgerTest, SameKeySameRequestReplaysAndAnotherRequestIsRefused) {
  Mint("usr_a", 1000);
  auto first = ledger_->Execute({Single("pay-1", Ref("usr_a"), Ref("usr_b"), 100)});
  ASSERT_TRUE(first.ok());
  auto again = ledger_->Execute({Single("pay-1", Ref("usr_a"), Ref("usr_b"), 100)});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)[0].replayed);
  EXPECT_EQ((*again)[0].id, (*first)[0].id);
  EXPECT_EQ((*again)[0].hash, (*first)[0].hash);
  EXPECT_EQ(Balance("usr_b"), "100");
  auto other = ledger_->Execute({Single("pay-1", Ref("usr_a"), Ref("usr_b"), 101)});
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, "idempotency_key_reused");
  EXPECT_EQ(other.error().kind, ErrorKind::kConflict);
  auto meta = Single("pay-1", Ref("usr_a"), Ref("usr_b"), 100);
  meta.metadata = R"({"note":"x"})";
  EXPECT_EQ(ledger_->Execute({meta}).error().code, "idempotency_key_reused");
  EXPECT_EQ(Balance("usr_b"), "100");
  ExpectVerifies();
}

TEST_F(LedgerTest, BadRequestsAreRefusedWithStableCodes) {
  Mint("usr_a", 1000);
  struct Case {
    TransferRequest req;
    std::string code;
  };
  auto with = [&](auto change) {
    auto r = Single("bad", Ref("usr_a"), Ref("usr_b"), 10);
    change(r);
    return r;
  };
  std::vector<Case> cases = {
      {with([](auto& r) { r.amount = 0; }), "invalid_amount"},
      {with([](auto& r) { r.credit.asset = "EUR"; }), "asset_mismatch"},
      {with([](auto& r) { r.debit.asset = r.credit.asset = "DOGE"; }), "unknown_asset"},
      {with([](auto& r) { r.credit = r.debit; }), "same_account"},
      {with([](auto& r) { r.amount = 1001; }), "insufficient_funds"},
      {with([](auto& r) { r.key = ""; }), "invalid_key"},
      {with([](auto& r) { r.key = std::string(257, 'k'); }), "invalid_key"},
      {with([](auto& r) { r.key = "bad\nkey"; }), "invalid_key"},
      {with([](auto& r) { r.key = "bad\xff"; }), "invalid_key"},
      {with([](auto& r) { r.code = "Not-A-Code"; }), "invalid_code"},
      {with([](auto& r) { r.code = ""; }), "invalid_code"},
      {with([](auto& r) { r.metadata = "[1]"; }), "invalid_metadata"},
      {with([](auto& r) { r.metadata = "{"; }), "invalid_metadata"},
      {with([](auto& r) { r.metadata = "{\"a\":\"" + std::string(5000, 'x') + "\"}"; }), "invalid_metadata"},
      {with([](auto& r) { r.debit.owner = "'; DROP TABLE ledger_accounts; --"; }), "invalid_account"},
      {with([](auto& r) { r.credit.kind = "vault"; }), "invalid_account"},
      {with([](auto& r) { r.timeout_s = 5; }), "invalid_timeout"},
      {with([](auto& r) { r.pending_id = "tr_x"; }), "invalid_pending_id"},
      {with([](auto& r) { r.type = TransferType::kExpire; }), "invalid_type"},
      {with([](auto& r) { r.type = TransferType::kPost; }), "invalid_pending_id"},
      {with([](auto& r) {
         r.type = TransferType::kVoid;
         r.pending_id = "tr_missing";
         r.debit = r.credit = {};
       }),
       "invalid_amount"},
      {with([](auto& r) {
         r.type = TransferType::kVoid;
         r.pending_id = "tr_missing";
         r.amount = 0;
         r.debit = r.credit = {};
       }),
       "pending_not_found"},
  };
  for (const auto& c : cases) {
    auto r = ledger_->Execute({c.req});
    ASSERT_FALSE(r.ok()) << c.code;
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
  }
  EXPECT_EQ(ledger_->Execute({}).error().code, "invalid_batch");
  std::vector<TransferRequest> big(config_.max_batch + 1, Single("x", Ref("usr_a"), Ref("usr_b"), 1));
  EXPECT_EQ(ledger_->Execute(big).error().code, "batch_too_large");
  // Nothing of the above left a trace, and the key "bad" is still free.
  EXPECT_EQ(Balance("usr_a"), "1000");
  auto ok = ledger_->Execute({Single("bad", Ref("usr_a"), Ref("usr_b"), 10)});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_FALSE((*ok)[0].replayed);
  ExpectVerifies();
}

TEST_F(LedgerTest, OverflowIsRefusedNotWrapped) {
  Mint("usr_a", kMaxAmount);
  auto r = ledger_->Execute({Single("more", Ref("platform", kind::kIssuer), Ref("usr_a"), 1, "mint")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "amount_overflow");
  EXPECT_EQ(Balance("usr_a"), FormatAmount(kMaxAmount));
  ExpectVerifies();
}

TEST_F(LedgerTest, LinkedBatchIsAllOrNothing) {
  Mint("usr_a", 100);
  auto r =
      ledger_->Execute({Single("b1", Ref("usr_a"), Ref("usr_b"), 60), Single("b2", Ref("usr_a"), Ref("usr_c"), 60)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "insufficient_funds");
  EXPECT_NE(r.error().message.find("transfers[1]"), std::string::npos) << r.error().message;
  EXPECT_EQ(Balance("usr_a"), "100");
  EXPECT_EQ(Balance("usr_b"), "0");
  auto accounts = ledger_->AccountsOf("usr_c");
  ASSERT_TRUE(accounts.ok());
  EXPECT_TRUE(accounts->empty());  // a refused batch creates no account
  // Value moved earlier in a batch can be spent later in it.
  auto chain =
      ledger_->Execute({Single("c1", Ref("usr_a"), Ref("usr_b"), 100), Single("c2", Ref("usr_b"), Ref("usr_c"), 70)});
  ASSERT_TRUE(chain.ok()) << chain.error().message;
  EXPECT_EQ(Balance("usr_b"), "30");
  EXPECT_EQ(Balance("usr_c"), "70");
  ExpectVerifies();
}

TransferRequest Pending(std::string key, AccountRef d, AccountRef c, Amount amount, int64_t timeout_s) {
  TransferRequest r;
  r.key = std::move(key);
  r.type = TransferType::kPending;
  r.debit = std::move(d);
  r.credit = std::move(c);
  r.amount = amount;
  r.timeout_s = timeout_s;
  r.code = "hold";
  return r;
}

TransferRequest Resolve(std::string key, TransferType type, std::string pending_id, Amount amount = 0) {
  TransferRequest r;
  r.key = std::move(key);
  r.type = type;
  r.pending_id = std::move(pending_id);
  r.amount = amount;
  r.code = "settle";
  return r;
}

TEST_F(LedgerTest, PendingHoldsPostPartlyVoidAndExpire) {
  Mint("usr_a", 1000);
  auto hold = ledger_->Execute({Pending("h1", Ref("usr_a"), Ref("platform", kind::kEscrow), 400, 60)});
  ASSERT_TRUE(hold.ok()) << hold.error().message;
  const std::string h1 = (*hold)[0].id;
  EXPECT_EQ((*hold)[0].state, "pending");
  EXPECT_EQ((*hold)[0].expires_ms, clock_.NowMs() + 60'000);
  auto a = ledger_->GetAccount(Ref("usr_a"));
  EXPECT_EQ(a->Balance(), "1000");
  EXPECT_EQ(FormatAmount(a->debits_pending), "400");
  EXPECT_EQ(FormatAmount(a->Spendable()), "600");
  // Held value cannot be spent twice.
  EXPECT_EQ(ledger_->Execute({Single("spend", Ref("usr_a"), Ref("usr_b"), 601)}).error().code, "insufficient_funds");

  EXPECT_EQ(ledger_->Execute({Resolve("p-too-much", TransferType::kPost, h1, 401)}).error().code, "invalid_amount");
  auto post = ledger_->Execute({Resolve("p1", TransferType::kPost, h1, 250)});
  ASSERT_TRUE(post.ok()) << post.error().message;
  EXPECT_EQ(FormatAmount((*post)[0].amount), "250");
  EXPECT_EQ((*post)[0].pending_id, h1);
  a = ledger_->GetAccount(Ref("usr_a"));
  EXPECT_EQ(a->Balance(), "750");
  EXPECT_EQ(FormatAmount(a->debits_pending), "0");
  EXPECT_EQ(ledger_->GetTransfer(h1)->state, "posted");
  EXPECT_EQ(ledger_->Execute({Resolve("v1", TransferType::kVoid, h1)}).error().code, "pending_already_resolved");
  EXPECT_EQ(ledger_->Execute({Resolve("p1", TransferType::kPost, h1, 250)})->at(0).replayed, true);

  auto h2 = ledger_->Execute({Pending("h2", Ref("usr_a"), Ref("platform", kind::kEscrow), 100, 0)});
  ASSERT_TRUE(h2.ok());
  ASSERT_TRUE(ledger_->Execute({Resolve("v2", TransferType::kVoid, (*h2)[0].id)}).ok());
  EXPECT_EQ(Balance("usr_a"), "750");
  EXPECT_EQ(FormatAmount(ledger_->GetAccount(Ref("usr_a"))->debits_pending), "0");

  auto h3 = ledger_->Execute({Pending("h3", Ref("usr_a"), Ref("platform", kind::kEscrow), 50, 10)});
  ASSERT_TRUE(h3.ok());
  EXPECT_EQ(*ledger_->ExpirePending(), 0);
  clock_.Advance(10s);
  EXPECT_EQ(ledger_->Execute({Resolve("p3", TransferType::kPost, (*h3)[0].id)}).error().code, "pending_expired");
  EXPECT_EQ(*ledger_->ExpirePending(), 1);
  EXPECT_EQ(*ledger_->ExpirePending(), 0);
  EXPECT_EQ(ledger_->GetTransfer((*h3)[0].id)->state, "expired");
  EXPECT_EQ(FormatAmount(ledger_->GetAccount(Ref("usr_a"))->Spendable()), "750");
  auto escrow = ledger_->GetAccount(Ref("platform", kind::kEscrow));
  EXPECT_EQ(escrow->Balance(), "250");
  EXPECT_EQ(FormatAmount(escrow->credits_pending), "0");
  ExpectVerifies();
}

// A call's posts and voids read their holds together: one naming a transfer
// that is not pending refuses the call and nothing of it stays; holds posted
// and voided in one call each end as asked.
TEST_F(LedgerTest, PostsAndVoidsOfOneCall) {
  Mint("usr_a", 100);
  auto holds = ledger_->Execute({Pending("h1", Ref("usr_a"), Ref("platform", kind::kEscrow), 10, 0),
                                 Pending("h2", Ref("usr_a"), Ref("platform", kind::kEscrow), 20, 0)});
  ASSERT_TRUE(holds.ok()) << holds.error().message;
  auto single = ledger_->Execute({Single("s", Ref("usr_a"), Ref("usr_b"), 1)});
  ASSERT_TRUE(single.ok());
  auto mixed = ledger_->Execute(
      {Resolve("p1", TransferType::kPost, (*holds)[0].id), Resolve("p-single", TransferType::kPost, (*single)[0].id)});
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.error().code, "pending_not_found");
  EXPECT_NE(mixed.error().message.find("is not a pending transfer"), std::string::npos) << mixed.error().message;
  EXPECT_EQ(ledger_->GetTransfer((*holds)[0].id)->state, "pending");
  auto both = ledger_->Execute(
      {Resolve("p1", TransferType::kPost, (*holds)[0].id), Resolve("v2", TransferType::kVoid, (*holds)[1].id)});
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ(ledger_->GetTransfer((*holds)[0].id)->state, "posted");
  EXPECT_EQ(ledger_->GetTransfer((*holds)[1].id)->state, "voided");
  EXPECT_EQ(Balance("usr_a"), "89");
  EXPECT_EQ(ledger_->GetAccount(Ref("platform", kind::kEscrow))->Balance(), "10");
  ExpectVerifies();
}

TEST_F(LedgerTest, HoldAndPostInOneBatch) {
  Mint("usr_a", 100);
  // The id of a pending transfer is known only after it is made, so a batch
  // can post a hold made by an earlier call, not by itself.
  auto hold = ledger_->Execute({Pending("h", Ref("usr_a"), Ref("platform", kind::kEscrow), 100, 0)});
  ASSERT_TRUE(hold.ok());
  auto settle =
      ledger_->Execute({Resolve("post", TransferType::kPost, (*hold)[0].id),
                        Single("pay", Ref("platform", kind::kEscrow), Ref("node_1", kind::kRewards), 90, "reward"),
                        Single("fee", Ref("platform", kind::kEscrow), Ref("platform", kind::kFees), 10, "fee")});
  ASSERT_TRUE(settle.ok()) << settle.error().message;
  EXPECT_EQ(ledger_->GetAccount(Ref("node_1", kind::kRewards))->Balance(), "90");
  EXPECT_EQ(ledger_->GetAccount(Ref("platform", kind::kFees))->Balance(), "10");
  EXPECT_EQ(ledger_->GetAccount(Ref("platform", kind::kEscrow))->Balance(), "0");
  ExpectVerifies();
}

TEST_F(LedgerTest, LargeBatchesWriteEveryRowAndAccount) {
  // Past the multi-row statements' sizes (32 transfers, 64 accounts a
  // statement) and not a multiple of them: new accounts, then existing ones
  // changed, then holds posted by a later call (read back without a join).
  constexpr int kOwners = 70;
  std::vector<TransferRequest> issue, holds;
  for (int i = 0; i < kOwners; ++i) {
    issue.push_back(Single("issue/" + std::to_string(i), Ref("platform", kind::kIssuer),
                           Ref("usr_" + std::to_string(i)), 1000 + i, "mint"));
    holds.push_back(Pending("hold/" + std::to_string(i), Ref("usr_" + std::to_string(i)),
                            Ref("platform", kind::kEscrow), 100 + i, 0));
  }
  ASSERT_TRUE(ledger_->Execute(issue).ok());
  auto held = ledger_->Execute(holds);
  ASSERT_TRUE(held.ok()) << held.error().message;
  std::vector<TransferRequest> settle;
  for (int i = 0; i < kOwners; ++i) {
    settle.push_back(i % 2 == 0 ? Resolve("post/" + std::to_string(i), TransferType::kPost, (*held)[i].id)
                                : Resolve("void/" + std::to_string(i), TransferType::kVoid, (*held)[i].id));
  }
  ASSERT_TRUE(ledger_->Execute(settle).ok());
  for (int i = 0; i < kOwners; ++i) {
    auto a = ledger_->GetAccount(Ref("usr_" + std::to_string(i)));
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->Balance(), std::to_string(i % 2 == 0 ? 900 : 1000 + i)) << i;
    EXPECT_EQ(FormatAmount(a->debits_pending), "0") << i;
    auto t = ledger_->GetTransfer((*held)[i].id);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->state, i % 2 == 0 ? "posted" : "voided") << i;
  }
  // The evens' holds: 100, 102, ... 168.
  EXPECT_EQ(ledger_->GetAccount(Ref("platform", kind::kEscrow))->Balance(), std::to_string(35 * 100 + 2 * 595));
  ExpectVerifies();
}

TEST_F(LedgerTest, ExecuteInCommitsOrRollsBackWithTheCaller) {
  Mint("usr_a", 100);
  auto failed = db_->Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto r = ledger_->ExecuteIn(tx, std::vector{Single("in1", Ref("usr_a"), Ref("usr_b"), 40)});
    if (!r) return r.take_error();
    return Error::Conflict("caller_changed_its_mind", "roll back");
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(Balance("usr_b"), "0");
  auto done = db_->Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto r = ledger_->ExecuteIn(tx, std::vector{Single("in1", Ref("usr_a"), Ref("usr_b"), 40)});
    if (!r) return r.take_error();
    return Ok();
  });
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(Balance("usr_b"), "40");
  ExpectVerifies();
}

// A key the caller vouches is new is not looked up, but its unique index
// still refuses a reuse: the transaction fails and nothing of it stays.
TEST_F(LedgerTest, ANewKeyIsNotLookedUpYetCannotBeUsedTwice) {
  Mint("usr_a", 100);
  auto in = [&](TransferRequest r) {
    return db_->Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
      auto done = ledger_->ExecuteIn(tx, std::vector{r});
      if (!done) return done.take_error();
      return Ok();
    });
  };
  TransferRequest first = Single("fresh/1", Ref("usr_a"), Ref("usr_b"), 40);
  first.new_key = true;
  ASSERT_TRUE(in(first).ok());
  EXPECT_EQ(Balance("usr_b"), "40");
  auto again = in(first);  // without the flag this is a replay; with it, a reuse the index refuses
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(Balance("usr_b"), "40");
  EXPECT_EQ(Balance("usr_a"), "60");
  first.new_key = false;
  EXPECT_TRUE(in(first).ok()) << "looked up: the same request replays";
  EXPECT_EQ(Balance("usr_b"), "40");
  // The committer's path looks every key up, whatever the flag says.
  TransferRequest api = Single("fresh/1", Ref("usr_a"), Ref("usr_b"), 40);
  api.new_key = true;
  auto replayed = ledger_->Execute({api});
  ASSERT_TRUE(replayed.ok()) << replayed.error().message;
  EXPECT_TRUE(replayed->at(0).replayed);
  EXPECT_EQ(Balance("usr_b"), "40");
  ExpectVerifies();
}

// Jobs of one group commit share one Applier (Ledger::ExecuteIn keeps it for
// the transaction): a refused job's transfers vanish with its savepoint, the
// others' are written once at commit, and the chain stays whole.
TEST_F(LedgerTest, ExecuteInSharesAGroupCommitAndUndoesARefusedJob) {
  Mint("usr_a", 1000);
  store::GroupCommitter group(*db_);
  constexpr int kJobs = 60;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, refused{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kJobs; i += 4) {
        auto r = group.Transact([&, i](store::Tx& tx) -> Result<void> {
          std::string k = "grp" + std::to_string(i);
          SMART_TRY(ledger_->ExecuteIn(tx, std::vector{Single(k + "a", Ref("usr_a"), Ref("usr_b"), 3)}));
          SMART_TRY(ledger_->ExecuteIn(tx, std::vector{Single(k + "b", Ref("usr_b"), Ref("usr_c"), 1)}));
          if (i % 3 == 0) return Error::Conflict("refused", "after the ledger wrote");
          return Ok();
        });
        (r ? ok : refused)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok + refused, kJobs);
  EXPECT_EQ(refused.load(), kJobs / 3);
  EXPECT_EQ(Balance("usr_a"), std::to_string(1000 - 3 * ok));
  EXPECT_EQ(Balance("usr_b"), std::to_string(2 * ok));
  EXPECT_EQ(Balance("usr_c"), std::to_string(ok.load()));
  auto replay = ledger_->Execute({Single("grp0a", Ref("usr_a"), Ref("usr_b"), 3)});
  ASSERT_TRUE(replay.ok()) << replay.error().message;
  EXPECT_FALSE((*replay)[0].replayed) << "a refused job's key was never written";
  ExpectVerifies();
}

TEST_F(LedgerTest, HistoryPagesAndFilters) {
  Mint("usr_a", 1000);
  Mint("usr_a", 5, "EUR");
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(ledger_->Execute({Single("h" + std::to_string(i), Ref("usr_a"), Ref("usr_b"), 1)}).ok());
    clock_.Advance(1s);
  }
  std::vector<std::string> seen;
  std::string cursor;
  do {
    auto page = ledger_->History("usr_a", {}, 3, cursor);
    ASSERT_TRUE(page.ok()) << page.error().message;
    for (const auto& t : page->items) seen.push_back(t.key);
    cursor = page->next_cursor.value_or("");
  } while (!cursor.empty());
  ASSERT_EQ(seen.size(), 9u);
  EXPECT_EQ(seen.front(), "h6");  // newest first
  auto eur = ledger_->History("usr_a", {.asset = "EUR"}, 50, "");
  ASSERT_EQ(eur->items.size(), 1u);
  EXPECT_EQ(eur->items[0].code, "mint");
  auto since = ledger_->History("usr_b", {.since_ms = clock_.NowMs() - 2000}, 50, "");
  EXPECT_EQ(since->items.size(), 2u);
  EXPECT_TRUE(ledger_->History("usr_b", {.kind = "stake"}, 50, "")->items.empty());
  auto until = ledger_->History("usr_b", {.until_ms = clock_.NowMs() - 5000}, 50, "");
  EXPECT_EQ(until->items.size(), 2u);  // h0 and h1
  EXPECT_TRUE(ledger_->History("usr_nobody", {}, 50, "")->items.empty());
  EXPECT_EQ(ledger_->History("usr_a", {}, 50, "not-a-cursor").error().code, "invalid_cursor");
  auto a_page = ledger_->History("usr_a", {}, 2, "");
  ASSERT_TRUE(a_page->next_cursor.has_value());
  EXPECT_EQ(ledger_->History("usr_b", {}, 2, *a_page->next_cursor).error().code, "invalid_cursor");
  // Between two accounts of one owner: listed once.
  ASSERT_TRUE(ledger_->Execute({Single("own", Ref("usr_b"), Ref("usr_b", kind::kStake), 2, "stake")}).ok());
  auto own = ledger_->History("usr_b", {}, 50, "");
  ASSERT_EQ(own->items.size(), 8u);
  EXPECT_EQ(own->items[0].key, "own");
  EXPECT_EQ(own->items[1].key, "h6");
  auto stake_only = ledger_->History("usr_b", {.kind = "stake"}, 50, "");
  EXPECT_EQ(stake_only->items.size(), 1u);

  auto accounts = ledger_->ListAccounts({.owner = "usr_a"}, 50, "");
  ASSERT_TRUE(accounts.ok());
  EXPECT_EQ(accounts->items.size(), 2u);
  auto first = ledger_->ListAccounts({}, 2, "");
  ASSERT_TRUE(first->next_cursor.has_value());
  auto rest = ledger_->ListAccounts({}, 50, *first->next_cursor);
  EXPECT_EQ(first->items.size() + rest->items.size(), 6u);  // issuer x2, usr_a x2, usr_b x2
}

// Many threads moving value at random between a few accounts: the totals are
// conserved, no balance goes negative, and the history replays to the state.
TEST_F(LedgerTest, ConcurrentRandomTransfersKeepTheInvariants) {
  constexpr int kAccounts = 12, kThreads = 8, kPerThread = 300;
  for (int i = 0; i < kAccounts; ++i) Mint("usr_" + std::to_string(i), 1000);
  std::atomic<int> ok{0}, refused{0}, failed{0}, moved{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t + 1));
      for (int i = 0; i < kPerThread; ++i) {
        int from = static_cast<int>(rng() % kAccounts), to = static_cast<int>(rng() % kAccounts);
        if (from == to) to = (to + 1) % kAccounts;
        std::vector<TransferRequest> batch{Single("t" + std::to_string(t) + "-" + std::to_string(i),
                                                  Ref("usr_" + std::to_string(from)), Ref("usr_" + std::to_string(to)),
                                                  1 + rng() % 300)};
        if (i % 10 == 0) {  // sometimes a linked pair
          batch.push_back(Single("t" + std::to_string(t) + "-" + std::to_string(i) + "b",
                                 Ref("usr_" + std::to_string(to)), Ref("usr_" + std::to_string(from)), 1 + rng() % 50));
        }
        auto r = ledger_->Execute(std::move(batch));
        if (r.ok()) {
          ++ok;
          moved += static_cast<int>(r->size());
        } else if (r.error().code == "insufficient_funds") {
          ++refused;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), kThreads * kPerThread / 2);
  Amount total = 0;
  for (int i = 0; i < kAccounts; ++i) {
    auto a = ledger_->GetAccount(Ref("usr_" + std::to_string(i)));
    ASSERT_TRUE(a.ok());
    ASSERT_GE(a->credits_posted, a->debits_posted);
    total += a->credits_posted - a->debits_posted;
  }
  EXPECT_EQ(FormatAmount(total), std::to_string(kAccounts * 1000));
  auto v = Verify(*db_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->divergence;
  EXPECT_EQ(v->transfers, kAccounts + moved.load());
}

TEST_F(LedgerTest, TheCommitterExpiresHoldsByItself) {
  ledger_.reset();
  config_.sweep_interval_ms = 20;
  ledger_ = std::make_unique<Ledger>(*db_, config_, clock_);
  Mint("usr_a", 100);
  auto hold = ledger_->Execute({Pending("auto", Ref("usr_a"), Ref("platform", kind::kEscrow), 60, 5)});
  ASSERT_TRUE(hold.ok());
  clock_.Advance(5s);
  std::string state;
  for (int i = 0; i < 200 && state != "expired"; ++i) {
    std::this_thread::sleep_for(10ms);
    state = ledger_->GetTransfer((*hold)[0].id)->state;
  }
  EXPECT_EQ(state, "expired");
  EXPECT_EQ(FormatAmount(ledger_->GetAccount(Ref("usr_a"))->Spendable()), "100");
  ExpectVerifies();
}

// Two ledgers on one database, as two smartd instances would share one
// PostgreSQL: the chain stays linear and every total adds up.
TEST_F(LedgerTest, TwoLedgersShareOneDatabase) {
  for (int i = 0; i < 6; ++i) Mint("usr_" + std::to_string(i), 1000);
  std::string url = std::getenv("SMART_TEST_PG_URL_FILE") ? pg_url_ : "sqlite:" + dir_.path() + "/l.db";
  auto other_db = store::Open(url);
  ASSERT_TRUE(other_db.ok()) << other_db.error().message;
  Ledger other(**other_db, config_, clock_);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      Ledger& l = t % 2 ? other : *ledger_;
      std::mt19937 rng(static_cast<unsigned>(t + 7));
      for (int i = 0; i < 150; ++i) {
        int from = static_cast<int>(rng() % 6), to = (from + 1 + static_cast<int>(rng() % 5)) % 6;
        auto r =
            l.Execute({Single("two-" + std::to_string(t) + "-" + std::to_string(i), Ref("usr_" + std::to_string(from)),
                              Ref("usr_" + std::to_string(to)), 1 + rng() % 100)});
        if (!r && r.error().code != "insufficient_funds") {
          ++failed;
          ADD_FAILURE() << r.error().code << ": " << r.error().message;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  ExpectVerifies();
}

TEST_F(LedgerTest, VerifyNamesTheFirstDivergence) {
  Mint("usr_a", 100);
  ASSERT_TRUE(ledger_->Execute({Single("x", Ref("usr_a"), Ref("usr_b"), 30)}).ok());
  ExpectVerifies();
  auto tamper = [&](const std::string& sql) {
    ASSERT_TRUE(db_->Transact(store::TxMode::kWrite,
                              [&](store::Tx& tx) -> Result<void> {
                                auto r = tx.Exec(sql);
                                if (!r) return r.take_error();
                                return Ok();
                              })
                    .ok());
  };
  tamper("UPDATE ledger_accounts SET credits_posted = '31' WHERE owner = 'usr_b'");
  auto v = Verify(*db_);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->ok);
  EXPECT_NE(v->divergence.find("usr_b/available/USDC"), std::string::npos) << v->divergence;
  EXPECT_NE(v->divergence.find("credits_posted"), std::string::npos) << v->divergence;
  tamper("UPDATE ledger_accounts SET credits_posted = '30' WHERE owner = 'usr_b'");
  ExpectVerifies();
  tamper("UPDATE ledger_transfers SET amount = '29' WHERE idem_key = 'x'");
  v = Verify(*db_);
  EXPECT_FALSE(v->ok);
  EXPECT_NE(v->divergence.find("hash chain broken"), std::string::npos) << v->divergence;
  EXPECT_NE(v->divergence.find("transfer 2 "), std::string::npos) << v->divergence;
}

}  // namespace
}  // namespace smart::ledger
