// The ledger's parsers of client text: amounts, and history cursors through
// the real History() on an in-memory ledger (a cursor is opaque to clients,
// who can send anything back).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "smart/core/crypto.hpp"
#include "smart/ledger/ledger.hpp"

namespace {

struct Fixture {
  smart::FakeClock clock;
  std::unique_ptr<smart::store::Database> db;
  std::unique_ptr<smart::ledger::Ledger> ledger;
  std::string cursor;  // a real cursor, for inputs to mutate

  Fixture() {
    db = std::move(smart::store::Open("sqlite::memory:")).value();
    if (!smart::store::Migrate(*db, smart::ledger::Ledger::Migrations())) std::abort();
    ledger = std::make_unique<smart::ledger::Ledger>(
        *db, smart::ledger::LedgerConfig{.assets = {{"USDC", 6}}, .sweep_interval_ms = 0}, clock);
    for (int i = 0; i < 5; ++i) {
      smart::ledger::TransferRequest t{.key = "k" + std::to_string(i),
                                       .debit = {"platform", "issuer", "USDC"},
                                       .credit = {i % 2 ? "usr_a" : "usr_b", "available", "USDC"},
                                       .amount = 10,
                                       .code = "mint"};
      if (!ledger->Execute({t})) std::abort();
    }
    cursor = ledger->History("usr_a", {}, 1, "")->next_cursor.value_or("");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture f;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto a = smart::ledger::ParseAmount(in)) {
    if (smart::ledger::FormatAmount(*a) != in) std::abort();  // one spelling per amount
  }
  for (const std::string& cursor : {std::string(in), smart::crypto::Base64UrlEncode(in)}) {
    auto page = f.ledger->History("usr_a", {}, 3, cursor);
    if (!page && page.error().code != "invalid_cursor") std::abort();
    if (page && page->items.size() > 3) std::abort();
  }
  return 0;
}
