// The double-entry ledger: every unit of value in Smart moves here.
//
// Accounts are named by (owner, kind, asset) and created on first use.
// A transfer debits one account and credits another of the same asset; a
// pending transfer holds value until it is posted (all or part) or voided,
// by a call or by its expiry. Transfers carry a caller-chosen idempotency key:
// the same key with the same request returns the first result, with another
// request it is refused (idempotency_key_reused). A batch is all or nothing.
// Each transfer is chained to the one before it by SHA-256, and Verify()
// recomputes the chain and every balance from the history.
//
// Thread-safe. Execute() is group-committed: concurrent calls share one
// database transaction (one fsync) and each returns once its batch is durable.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "smart/core/clock.hpp"
#include "smart/core/page.hpp"
#include "smart/core/result.hpp"
#include "smart/ledger/amount.hpp"
#include "smart/store/migrations.hpp"
#include "smart/store/store.hpp"

namespace smart::ledger {

struct Asset {
  std::string code;  // "USDC"
  int decimals = 0;  // 0..36
};
// "USDC:6" specs, as in the configuration; codes are 2..12 of [A-Z0-9], unique.
Result<std::vector<Asset>> ParseAssets(const std::vector<std::string>& specs);

// The owner of the platform's own accounts (fees, escrow, treasury, issuer).
inline constexpr std::string_view kPlatform = "platform";

// Account kinds. Only `issuer` (the other side of every mint) and `external`
// (the other side of on-chain deposits and withdrawals) may go negative.
namespace kind {
inline constexpr std::string_view kAvailable = "available";
inline constexpr std::string_view kEscrow = "escrow";
inline constexpr std::string_view kStake = "stake";
inline constexpr std::string_view kRewards = "rewards";
inline constexpr std::string_view kFees = "fees";
inline constexpr std::string_view kTreasury = "treasury";
inline constexpr std::string_view kExternal = "external";
inline constexpr std::string_view kIssuer = "issuer";
}  // namespace kind
bool IsKind(std::string_view k);
bool KindMayGoNegative(std::string_view k);

struct AccountRef {
  std::string owner;  // "usr_…", "node_…" or "platform"
  std::string kind;
  std::string asset;
  bool operator==(const AccountRef&) const = default;
};

struct Account {
  std::string id;  // "acc_…"; empty for an account that does not exist yet
  AccountRef ref;
  Amount debits_posted = 0, credits_posted = 0;
  Amount debits_pending = 0, credits_pending = 0;
  int64_t created_ms = 0;
  int64_t last_seq = 0;  // the newest transfer of this account; 0 for none
  // credits_posted - debits_posted, signed.
  std::string Balance() const { return FormatDifference(credits_posted, debits_posted); }
  // What a debit may still take: the balance less pending debits (0 when below).
  Amount Spendable() const;
};

enum class TransferType {
  kSingle,   // moves `amount` at once
  kPending,  // holds `amount` until posted, voided or expired
  kPost,     // settles a pending transfer (the whole, or `amount` of it)
  kVoid,     // releases a pending transfer
  kExpire,   // a pending transfer's expiry, written by the ledger itself
};
std::string_view ToString(TransferType t);

struct TransferRequest {
  std::string key;  // idempotency key, unique forever; 1..256 bytes of UTF-8 without controls
  TransferType type = TransferType::kSingle;
  AccountRef debit;             // kSingle, kPending
  AccountRef credit;            // kSingle, kPending
  Amount amount = 0;            // kSingle, kPending: > 0; kPost: 0 means the whole pending amount
  std::string pending_id;       // kPost, kVoid: the pending transfer's id
  int64_t timeout_s = 0;        // kPending: 0 never expires
  std::string code;             // the reason, [a-z0-9_]{1,32}: "transfer", "mint", "task_escrow", …
  std::string metadata = "{}";  // a JSON object, at most 4 KiB
  // ExecuteIn only: the caller vouches that `key` was never used (it names
  // something new in this transaction, or a step that happens once, in it),
  // so the ledger does not look it up; the key's unique index still refuses
  // a reuse, which fails the transaction.
  bool new_key = false;
};

struct Transfer {
  int64_t seq = 0;  // position in the ledger's chain, from 1
  std::string id;   // "tr_…"
  std::string key;
  TransferType type = TransferType::kSingle;
  AccountRef debit, credit;
  std::string debit_id, credit_id;
  std::string asset;
  Amount amount = 0;
  std::string pending_id;
  int64_t expires_ms = 0;  // pending transfers with a timeout
  // pending transfers: pending | posted | voided | expired; others: posted | voided | expired
  std::string state;
  std::string code;
  std::string metadata;
  int64_t ts_ms = 0;  // never decreases along the chain
  // The previous transfers of the debit and credit accounts (0: none): each
  // account's history is a list through these.
  int64_t debit_prev = 0, credit_prev = 0;
  std::string hash;       // hex SHA-256 of the previous transfer's hash and this transfer
  bool replayed = false;  // this call found it already done (same key, same request)
};

using smart::Page;  // smart/core/page.hpp

struct HistoryFilter {
  std::optional<std::string> asset;
  std::optional<std::string> kind;  // of the owner's side
  std::optional<int64_t> since_ms, until_ms;
};

struct AccountFilter {
  std::optional<std::string> owner, kind, asset;
};

struct LedgerConfig {
  std::vector<Asset> assets;
  std::string platform_token = "SMART";              // the asset only the platform issues
  size_t max_batch = 1000;                           // transfers per Execute() call
  size_t max_group = 8192;                           // transfers per group commit
  int64_t sweep_interval_ms = 1000;                  // how often expired holds are voided; 0: never
  std::function<void(const Error&)> on_sweep_error;  // called on the committer thread
};

class Ledger {
 public:
  // Starts the committer thread; `db` must be migrated with Migrations().
  Ledger(store::Database& db, LedgerConfig config, const Clock& clock);
  // Finishes queued batches, then stops.
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Applies a batch atomically and durably; shares the commit with concurrent
  // callers. Errors (kind, code): kInvalid invalid_* / unknown_asset /
  // same_account / batch_too_large; kConflict insufficient_funds,
  // idempotency_key_reused, pending_already_resolved, pending_expired,
  // amount_overflow; kNotFound pending_not_found. The message starts with
  // "transfers[i]" for the failing one.
  Result<std::vector<Transfer>> Execute(std::vector<TransferRequest> batch);
  // The same inside a transaction of the caller's, who commits it (so that a
  // task and its escrow are written together). The calls of one transaction
  // share the chain head and accounts in memory; their rows are written when
  // it commits (Tx::FlushStates), so SQL on the ledger's tables in the same
  // transaction does not see them. A savepoint rollback undoes them too.
  // Returns the transfers' ids in request order (a replayed one's too): the
  // rows stay with the transaction until it commits, not copied out.
  Result<std::vector<std::string>> ExecuteIn(store::Tx& tx, std::span<const TransferRequest> batch);
  // Voids pending transfers whose expiry has passed; returns how many. The
  // committer does this every sweep_interval_ms; tests call it directly.
  Result<int> ExpirePending(int limit = 1000);

  // Reads, each from one consistent snapshot.
  Result<Account> GetAccount(const AccountRef& ref);  // zeros (and no id) when never used
  Result<std::vector<Account>> AccountsOf(std::string_view owner);
  Result<Page<Account>> ListAccounts(const AccountFilter& filter, int limit, std::string_view cursor);
  Result<Transfer> GetTransfer(std::string_view id);
  // Transfers touching the owner's accounts, newest first.
  Result<Page<Transfer>> History(std::string_view owner, const HistoryFilter& filter, int limit,
                                 std::string_view cursor);
  // What is in circulation: the sum of balances of accounts that cannot go
  // negative (equal to minus the issuer and external accounts' balances).
  Result<Amount> Supply(std::string_view asset);

  const std::vector<Asset>& assets() const { return config_.assets; }
  const Asset* FindAsset(std::string_view code) const;
  const std::string& platform_token() const { return config_.platform_token; }

  static std::vector<store::Migration> Migrations();

 private:
  struct Job {
    std::vector<TransferRequest> batch;
    std::promise<Result<std::vector<Transfer>>> done;
  };
  void RunCommitter();
  // Answers the group's callers once it is durable, maybe while the next group runs.
  void CommitGroup(std::vector<Job> group);

  store::Database& db_;
  LedgerConfig config_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread committer_;  // last: it stops first
};

struct AssetTotals {
  std::string asset;
  Amount debits_posted = 0, credits_posted = 0, debits_pending = 0, credits_pending = 0;
  Amount supply = 0;
};

struct VerifyReport {
  bool ok = true;
  std::string divergence;  // the first problem found, for people
  int64_t transfers = 0;
  int64_t accounts = 0;
  std::vector<AssetTotals> totals;
};

// Recomputes the hash chain and every account's balances from the history and
// compares them with what is stored; checks, per asset, that debits equal
// credits and that no account that may not go negative is below zero. Reads
// in pages, so the ledger may be any size.
Result<VerifyReport> Verify(store::Database& db);

}  // namespace smart::ledger
