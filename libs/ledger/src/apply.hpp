// Applies batches of transfer requests inside one database transaction.
// Accounts and pending transfers are read once per transaction and kept in
// memory; each batch either applies whole or leaves no trace (an undo log);
// Flush() writes everything that changed. Ledger::ExecuteIn keeps one for the
// whole transaction (a TxState), so a group commit writes each account once. The chain head is locked first, so
// ledger writers are serialized on every backend.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "internal.hpp"

namespace smart::ledger {

class Applier {
 public:
  Applier(store::Tx& tx, const LedgerConfig& config, const Clock& clock) : tx_(tx), config_(config), clock_(clock) {}

  Result<void> Begin();
  // Reads, in a few statements, the keys, accounts and pending transfers
  // that `requests` will need, so that applying them costs no round trip each (PostgreSQL).
  Result<void> Prefetch(const std::vector<const TransferRequest*>& requests);
  // Transfers in request order, or the first failure (and nothing applied).
  // `internal` admits kExpire, which only the ledger writes.
  // With `full` false each has only its id and `replayed` (nothing copied out of the rows to write).
  Result<std::vector<Transfer>> ApplyBatch(std::span<const TransferRequest> batch, bool internal = false,
                                           bool full = true);
  Result<void> Flush();

  // A point to return to: a job's start in a group commit.
  void Mark();
  void RollbackToMark();

 private:
  struct Position {
    size_t account_undo = 0, pending_undo = 0, rows = 0;
    int64_t seq = 0, ts = 0;
    std::string hash;
  };
  struct AccountState {
    Account account;
    bool persisted = false;
    bool dirty = false;
    uint64_t saved_in = 0;  // the epoch whose undo log entry holds this state
  };
  struct PendingState {
    Transfer transfer;
    bool persisted = false;
    bool dirty = false;
    uint64_t saved_in = 0;
  };

  // The transfer made or replayed; with `full` false only its id and `replayed`.
  Result<Transfer> ApplyOne(const TransferRequest& req, bool internal, bool full = true);
  Result<AccountState*> LoadAccount(const AccountRef& ref);
  // A pending transfer as a post or void needs it (not its key, code, metadata or hash).
  Result<PendingState*> LoadPending(const std::string& id);
  // Into pendings_ from a row of kPendingColumns (pending_not_found if it is not one).
  Result<PendingState*> RememberPending(const store::Row& r);
  Result<AccountState*> AccountById(const std::string& id);
  AccountState* Remember(AccountState s);  // into accounts_ and by_id_
  // `new_key`: the caller vouches it is unused (TransferRequest::new_key): not looked up in the table.
  Result<std::optional<Transfer>> FindByKey(const std::string& key, bool new_key, std::string* fingerprint);
  void Touch(AccountState* a);
  void TouchPending(const std::string& id, PendingState* p);
  Position Here();
  void UndoTo(const Position& p);

  store::Tx& tx_;
  const LedgerConfig& config_;
  const Clock& clock_;
  int64_t seq_ = 0;
  int64_t ts_ = 0;
  std::string hash_;
  bool began_ = false;
  uint64_t epoch_ = 1;  // advanced by every Here(): a change records its undo once per epoch
  Position mark_;

  struct RefHash {
    size_t operator()(const AccountRef& r) const {
      std::hash<std::string_view> h;
      return h(r.owner) ^ (h(r.kind) * 31) ^ (h(r.asset) * 1031);
    }
  };
  std::unordered_map<AccountRef, AccountState, RefHash> accounts_;
  std::unordered_map<std::string, AccountState*> by_id_;    // the same accounts by id
  std::unordered_map<std::string, PendingState> pendings_;  // by transfer id
  struct NewRow {
    Transfer transfer;
    std::string fingerprint;
  };
  std::vector<NewRow> rows_;
  std::unordered_map<std::string, size_t> keys_;  // idempotency key -> index in rows_
  // From Prefetch: keys already in the ledger (-> fingerprint, id), keys known
  // to be new, and owners whose accounts are all in accounts_.
  std::unordered_map<std::string, std::pair<std::string, std::string>> stored_keys_;
  std::unordered_set<std::string> new_keys_;
  std::unordered_set<std::string> loaded_owners_;

  // Since the mark: states before their first change in each epoch.
  std::vector<std::pair<AccountState*, AccountState>> account_undo_;
  std::vector<std::pair<std::string, std::optional<PendingState>>> pending_undo_;
};

// An Applier kept for the rest of a transaction (Ledger::ExecuteIn).
struct ApplierState final : store::TxState {
  ApplierState(store::Tx& tx, const LedgerConfig& config, const Clock& clock) : applier(tx, config, clock) {}
  Result<void> Flush(store::Tx&) override { return applier.Flush(); }
  void Mark() override { applier.Mark(); }
  void RollbackToMark() override { applier.RollbackToMark(); }
  Applier applier;
};

}  // namespace smart::ledger
