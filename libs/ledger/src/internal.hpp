// Shared by the ledger's sources: the row formats and the hash chain.
#pragma once

#include <string>
#include <string_view>

#include "smart/ledger/ledger.hpp"

namespace smart::ledger {

inline constexpr std::string_view kGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000";

// The columns every transfer query selects, in the order TransferFromRow reads.
inline constexpr std::string_view kTransferColumns =
    "t.seq, t.id, t.idem_key, t.type, t.debit_id, t.credit_id, t.asset, t.amount, t.pending_id, t.expires_ms, "
    "t.state, t.code, t.metadata, t.ts_ms, t.hash, d.owner, d.kind, c.owner, c.kind, t.fingerprint, t.debit_prev, "
    "t.credit_prev";
inline constexpr std::string_view kTransferJoins =
    " FROM ledger_transfers t JOIN ledger_accounts d ON d.id = t.debit_id JOIN ledger_accounts c ON c.id = t.credit_id";

// The columns every account query selects, in the order AccountFromRow reads.
inline constexpr std::string_view kAccountColumns =
    "id, owner, kind, asset, debits_posted, credits_posted, debits_pending, credits_pending, created_ms, last_seq";
Result<Account> AccountFromRow(const store::Row& r);

// Fails (kInternal) on a row the ledger could not have written.
Result<Transfer> TransferFromRow(const store::Row& row);
std::optional<TransferType> ParseTransferType(std::string_view s);
Result<Amount> AmountColumn(const store::Row& row, size_t i);

// The transfer with this id, if any (with both accounts' owners and kinds).
Result<std::optional<Transfer>> LoadTransfer(store::Tx& tx, std::string_view id);

// sha256(previous hash || the transfer's immutable fields, length-prefixed).
std::string ChainHash(std::string_view prev_hash, const Transfer& t);

}  // namespace smart::ledger
