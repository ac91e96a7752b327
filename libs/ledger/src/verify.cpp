// Replays the whole history in one snapshot and compares it with what is stored.
#include <map>
#include <unordered_map>

#include "internal.hpp"

namespace smart::ledger {
namespace {

using store::Value;

struct Sums {
  AccountRef ref;
  Amount debits_posted = 0, credits_posted = 0, debits_pending = 0, credits_pending = 0;
  int64_t last_seq = 0;
};

struct Hold {
  Amount amount = 0;
  std::string debit_id, credit_id;
  std::string state = "pending";
  std::string stored_state;
};

constexpr int64_t kPage = 5000;

std::string Name(const Sums& s) { return s.ref.owner + "/" + s.ref.kind + "/" + s.ref.asset; }

class Replay {
 public:
  explicit Replay(VerifyReport& report) : report_(report) {}

  bool Fail(std::string what) {
    if (report_.ok) {
      report_.ok = false;
      report_.divergence = std::move(what);
    }
    return false;
  }

  Result<void> LoadAccounts(store::Tx& tx) {
    auto rows = tx.Query(
        "SELECT id, owner, kind, asset, debits_posted, credits_posted, debits_pending, credits_pending, last_seq "
        "FROM ledger_accounts ORDER BY id");
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) {
      Sums stored{{r.Text(1), r.Text(2), r.Text(3)}};
      Amount* fields[] = {&stored.debits_posted, &stored.credits_posted, &stored.debits_pending,
                          &stored.credits_pending};
      for (size_t i = 0; i < 4; ++i) {
        auto v = AmountColumn(r, i + 4);
        if (!v) return v.take_error();
        *fields[i] = *v;
      }
      stored.last_seq = r.Int(8);
      computed_[r.Text(0)] = Sums{stored.ref};
      stored_.emplace(r.Text(0), std::move(stored));
    }
    report_.accounts = static_cast<int64_t>(stored_.size());
    return Ok();
  }

  // Applies one transfer to the computed balances; false on the first divergence.
  bool Apply(const Transfer& t, std::string_view stored_hash) {
    std::string where = "transfer " + std::to_string(t.seq) + " (" + t.id + ")";
    if (t.seq != seq_ + 1) return Fail(where + ": expected chain position " + std::to_string(seq_ + 1));
    std::string h = ChainHash(hash_, t);
    if (h != stored_hash)
      return Fail(where + ": hash chain broken (stored " + std::string(stored_hash) + ", computed " + h + ")");
    seq_ = t.seq;
    hash_ = h;
    auto d = computed_.find(t.debit_id);
    auto c = computed_.find(t.credit_id);
    if (d == computed_.end() || c == computed_.end()) return Fail(where + ": refers to a missing account");
    if (d == c) return Fail(where + ": debits and credits the same account");
    if (d->second.ref.asset != t.asset || c->second.ref.asset != t.asset) {
      return Fail(where + ": asset " + t.asset + " differs from an account's");
    }
    Sums& ds = d->second;
    Sums& cs = c->second;
    if (t.debit_prev != ds.last_seq || t.credit_prev != cs.last_seq) {
      return Fail(where + ": its links to the accounts' previous transfers are wrong");
    }
    if (t.ts_ms < ts_) return Fail(where + ": its time is before the previous transfer's");
    ts_ = t.ts_ms;
    ds.last_seq = cs.last_seq = t.seq;
    switch (t.type) {
      case TransferType::kSingle:
        ds.debits_posted += t.amount;
        cs.credits_posted += t.amount;
        break;
      case TransferType::kPending:
        ds.debits_pending += t.amount;
        cs.credits_pending += t.amount;
        holds_[t.id] = Hold{t.amount, t.debit_id, t.credit_id, "pending", t.state};
        break;
      case TransferType::kPost:
      case TransferType::kVoid:
      case TransferType::kExpire: {
        auto p = holds_.find(t.pending_id);
        if (p == holds_.end()) return Fail(where + ": resolves unknown pending transfer " + t.pending_id);
        Hold& hold = p->second;
        if (hold.state != "pending") return Fail(where + ": resolves " + t.pending_id + " a second time");
        if (hold.debit_id != t.debit_id || hold.credit_id != t.credit_id) {
          return Fail(where + ": accounts differ from pending transfer " + t.pending_id);
        }
        Amount posted = t.type == TransferType::kPost ? t.amount : 0;
        if (posted > hold.amount || (t.type != TransferType::kPost && t.amount != hold.amount)) {
          return Fail(where + ": amount does not match pending transfer " + t.pending_id);
        }
        ds.debits_pending -= hold.amount;
        cs.credits_pending -= hold.amount;
        ds.debits_posted += posted;
        cs.credits_posted += posted;
        hold.state = t.type == TransferType::kPost ? "posted" : t.type == TransferType::kVoid ? "voided" : "expired";
        break;
      }
    }
    if (!KindMayGoNegative(ds.ref.kind) && ds.credits_posted < ds.debits_posted + ds.debits_pending) {
      return Fail(where + ": account " + Name(ds) + " went below zero");
    }
    ++report_.transfers;
    return true;
  }

  bool Finish(int64_t head_seq, const std::string& head_hash) {
    if (head_seq != seq_ || head_hash != hash_) {
      return Fail("ledger head (" + std::to_string(head_seq) + ") does not match the last transfer (" +
                  std::to_string(seq_) + ")");
    }
    for (const auto& [id, hold] : holds_) {
      if (hold.state != hold.stored_state) {
        return Fail("pending transfer " + id + ": stored state " + hold.stored_state + ", history gives " + hold.state);
      }
    }
    std::map<std::string, AssetTotals> totals;
    for (const auto& entry : stored_) {  // not a structured binding: clang 14 cannot capture one
      const std::string& id = entry.first;
      const Sums& stored = entry.second;
      const Sums& c = computed_[id];
      auto check = [&](const char* field, Amount s, Amount h) {
        if (s == h) return true;
        return Fail("account " + id + " (" + Name(stored) + "): stored " + field + " " + FormatAmount(s) +
                    ", history gives " + FormatAmount(h));
      };
      if (stored.last_seq != c.last_seq) {
        return Fail("account " + id + " (" + Name(stored) + "): stored last transfer " +
                    std::to_string(stored.last_seq) + ", history gives " + std::to_string(c.last_seq));
      }
      if (!check("debits_posted", stored.debits_posted, c.debits_posted) ||
          !check("credits_posted", stored.credits_posted, c.credits_posted) ||
          !check("debits_pending", stored.debits_pending, c.debits_pending) ||
          !check("credits_pending", stored.credits_pending, c.credits_pending)) {
        return false;
      }
      AssetTotals& t = totals[stored.ref.asset];
      t.asset = stored.ref.asset;
      t.debits_posted += stored.debits_posted;
      t.credits_posted += stored.credits_posted;
      t.debits_pending += stored.debits_pending;
      t.credits_pending += stored.credits_pending;
      if (!KindMayGoNegative(stored.ref.kind)) t.supply += stored.credits_posted - stored.debits_posted;
    }
    for (auto& [asset, t] : totals) {
      if (t.debits_posted != t.credits_posted || t.debits_pending != t.credits_pending) {
        Fail("asset " + asset + ": debits " + FormatAmount(t.debits_posted) + " != credits " +
             FormatAmount(t.credits_posted) + " (pending " + FormatAmount(t.debits_pending) + " / " +
             FormatAmount(t.credits_pending) + ")");
      }
      report_.totals.push_back(std::move(t));
    }
    return report_.ok;
  }

 private:
  VerifyReport& report_;
  std::unordered_map<std::string, Sums> stored_, computed_;
  std::unordered_map<std::string, Hold> holds_;
  int64_t seq_ = 0;
  int64_t ts_ = 0;
  std::string hash_{kGenesisHash};
};

}  // namespace

Result<VerifyReport> Verify(store::Database& db) {
  VerifyReport report;
  SMART_TRY(db.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    report = {};
    Replay replay(report);
    auto head = tx.QueryOne("SELECT seq, hash FROM ledger_head WHERE id = 1");
    if (!head) return head.take_error();
    if (!*head) {
      replay.Fail("the ledger head row is missing");
      return Ok();
    }
    SMART_TRY(replay.LoadAccounts(tx));
    std::string sql = "SELECT ";
    sql += kTransferColumns;
    sql += kTransferJoins;
    sql += " WHERE t.seq > $1 ORDER BY t.seq LIMIT $2";
    int64_t after = 0;
    while (true) {
      auto rows = tx.Query(sql, {Value{after}, Value{kPage}});
      if (!rows) return rows.take_error();
      for (const auto& r : *rows) {
        auto t = TransferFromRow(r);
        if (!t) {
          replay.Fail(t.error().message);
          return Ok();
        }
        if (!replay.Apply(*t, t->hash)) return Ok();
        after = t->seq;
      }
      if (rows->size() < static_cast<size_t>(kPage)) break;
    }
    replay.Finish((*head)->Int(0), (*head)->Text(1));
    return Ok();
  }));
  return report;
}

}  // namespace smart::ledger
