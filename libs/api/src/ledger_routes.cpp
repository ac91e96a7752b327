// Balances, history, transfers between users, the dev faucet, the ledger's
// accounts for admins, and the token view (supply, balance of).
#include <boost/json.hpp>

#include "json_body.hpp"
#include "routes_internal.hpp"
#include "smart/core/json_text.hpp"
#include "smart/ledger/ledger.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {

constexpr size_t kMaxMemoChars = 256;

json::value Nullable(const std::string& s) { return s.empty() ? json::value(nullptr) : json::value(s); }

std::string Display(const Deps& deps, const std::string& asset, ledger::Amount a, bool negative = false) {
  const ledger::Asset* info = deps.ledger.FindAsset(asset);
  return ledger::DisplayAmount(a, info ? info->decimals : 0, asset, negative);
}

json::object TransferJson(const Deps& deps, const ledger::Transfer& t) {
  json::value metadata = json::object{};
  boost::system::error_code ec;
  auto parsed = json::parse(t.metadata, ec);
  if (!ec) metadata = std::move(parsed);
  return json::object{
      {"id", t.id},
      {"seq", t.seq},
      {"type", std::string(ledger::ToString(t.type))},
      {"state", t.state},
      {"asset", t.asset},
      {"amount", ledger::FormatAmount(t.amount)},
      {"display", Display(deps, t.asset, t.amount)},
      {"from", json::object{{"owner", t.debit.owner}, {"kind", t.debit.kind}}},
      {"to", json::object{{"owner", t.credit.owner}, {"kind", t.credit.kind}}},
      {"code", t.code},
      {"metadata", std::move(metadata)},
      {"pending_id", Nullable(t.pending_id)},
      {"expires_at", t.expires_ms > 0 ? json::value(FormatTimestampMs(t.expires_ms)) : json::value(nullptr)},
      {"created_at", FormatTimestampMs(t.ts_ms)},
      {"hash", t.hash},
  };
}

json::object AccountJson(const Deps& deps, const ledger::Account& a) {
  bool negative = a.debits_posted > a.credits_posted;
  ledger::Amount magnitude = negative ? a.debits_posted - a.credits_posted : a.credits_posted - a.debits_posted;
  return json::object{
      {"id", Nullable(a.id)},
      {"owner", a.ref.owner},
      {"kind", a.ref.kind},
      {"asset", a.ref.asset},
      {"balance", a.Balance()},
      {"available", ledger::FormatAmount(a.Spendable())},
      {"pending_debits", ledger::FormatAmount(a.debits_pending)},
      {"pending_credits", ledger::FormatAmount(a.credits_pending)},
      {"display", Display(deps, a.ref.asset, magnitude, negative)},
  };
}

json::object PageJson(json::array items, const std::optional<std::string>& next) {
  json::object o{{"items", std::move(items)}};
  o["next_cursor"] = next ? json::value(*next) : json::value(nullptr);
  return o;
}

// The Idempotency-Key header: required where value moves.
std::variant<std::string, http::Response> IdempotencyKey(const http::Request& req) {
  auto key = req.headers.Get("Idempotency-Key");
  bool ok = key && !key->empty() && key->size() <= 200;
  if (ok) {
    for (unsigned char c : *key) ok = ok && c > 0x20 && c < 0x7f;
  }
  if (!ok) {
    return http::MakeProblem(req, {.status = 400,
                                   .code = "idempotency_key_required",
                                   .detail = "Send an Idempotency-Key header (1 to 200 visible ASCII characters); "
                                             "a retry with the same key and body returns the first answer."});
  }
  return std::string(*key);
}

http::Response AmountProblem(const http::Request& req) {
  return http::MakeProblem(req,
                           {.status = 422,
                            .code = "invalid_amount",
                            .detail = "amount must be a string of integer base units, e.g. \"250000\" for 0.25 USDC",
                            .errors = {{"amount", "a decimal string of base units, greater than zero, below 2^128"}}});
}

// A request that moves value: its Idempotency-Key and {<party>, asset, amount, memo}.
struct Move {
  std::string key, party, asset;
  ledger::Amount amount = 0;
  std::optional<std::string> memo;
};

std::variant<Move, http::Response> ParseMove(const http::Request& req, std::string_view party) {
  auto key = IdempotencyKey(req);
  if (auto* res = std::get_if<http::Response>(&key)) return std::move(*res);
  auto body = ParseJsonObject(req, {party, "asset", "amount", "memo"});
  if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
  FieldReader f(std::get<json::object>(body));
  auto who = f.String(party, true), asset = f.String("asset", true), memo = f.String("memo", false);
  auto amount = f.Amount("amount", true);
  if (f.invalid_amount()) return AmountProblem(req);
  if (!f.ok()) return f.Problem(req);
  if (*amount == 0) return AmountProblem(req);
  return Move{std::move(std::get<std::string>(key)), std::move(*who), std::move(*asset), *amount, std::move(memo)};
}

std::variant<std::string, http::Response> Metadata(const http::Request& req, const std::optional<std::string>& memo,
                                                   std::string_view by) {
  json::object m;
  if (memo) {
    if (!IsValidUtf8(*memo) || Utf8Length(*memo) > kMaxMemoChars) {
      return http::MakeProblem(req, {.status = 422,
                                     .code = "validation_failed",
                                     .detail = "memo: at most 256 characters of UTF-8",
                                     .errors = {{"memo", "at most 256 characters of UTF-8"}}});
    }
    m["memo"] = *memo;
  }
  if (!by.empty()) m["by"] = by;
  return json::serialize(m);
}

http::Response Created(const Deps& deps, const ledger::Transfer& t) {
  auto res = http::Response::Json(201, json::serialize(TransferJson(deps, t)));
  if (t.replayed) res.headers.Add("Idempotent-Replayed", "true");
  return res;
}

// Mint and burn: the issuer's account against a user's available balance.
http::Response Faucet(const Deps& deps, http::Request& req, bool mint) {
  auto who = Require(deps, req, auth::scope::kAdmin);
  if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
  if (!deps.dev_faucet) {
    return http::MakeProblem(req,
                             {.status = 403,
                              .code = "faucet_disabled",
                              .detail = "Minting and burning are off; set ledger.dev_faucet = true (development)."});
  }
  auto parsed = ParseMove(req, "user");
  if (auto* res = std::get_if<http::Response>(&parsed)) return std::move(*res);
  const Move& m = std::get<Move>(parsed);
  auto target = deps.auth.FindUser(m.party);
  if (!target) return ErrorResponse(req, target.error());
  const auto& admin = std::get<auth::Principal>(who);
  auto metadata = Metadata(req, m.memo, admin.user_id);
  if (auto* res = std::get_if<http::Response>(&metadata)) return std::move(*res);
  ledger::AccountRef issuer{std::string(ledger::kPlatform), std::string(ledger::kind::kIssuer), m.asset};
  ledger::AccountRef holder{target->id, std::string(ledger::kind::kAvailable), m.asset};
  ledger::TransferRequest t{.key = "admin/" + admin.user_id + "/" + m.key,
                            .debit = mint ? issuer : holder,
                            .credit = mint ? holder : issuer,
                            .amount = m.amount,
                            .code = mint ? "mint" : "burn",
                            .metadata = std::get<std::string>(metadata)};
  auto r = deps.ledger.Execute({std::move(t)});
  if (!r) return ErrorResponse(req, r.error());
  return Created(deps, r->front());
}

}  // namespace

void RegisterLedgerRoutes(http::Router& router, const Deps& deps) {
  router.Add(
      http::Method::kGet, "/api/v1/user/balances",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kLedgerRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        const auto& user = std::get<auth::Principal>(who).user_id;
        auto accounts = deps.ledger.AccountsOf(user);
        if (!accounts) return ErrorResponse(req, accounts.error());
        json::array items;
        // Every asset's spendable balance, even before its first transfer.
        for (const auto& asset : deps.ledger.assets()) {
          ledger::Account a{.ref = {user, std::string(ledger::kind::kAvailable), asset.code}};
          for (const auto& have : *accounts) {
            if (have.ref == a.ref) a = have;
          }
          items.push_back(AccountJson(deps, a));
        }
        for (const auto& a : *accounts) {
          if (a.ref.kind != ledger::kind::kAvailable) items.push_back(AccountJson(deps, a));
        }
        return http::Response::Json(200, json::serialize(json::object{{"items", std::move(items)}}));
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/user/transactions",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kLedgerRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto q = ParsePageQuery(req);
        if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
        ledger::HistoryFilter filter{.asset = req.Query("asset"), .kind = req.Query("kind")};
        std::vector<http::FieldError> errors;
        for (const char* name : {"since", "until"}) {
          auto v = req.Query(name);
          if (!v) continue;
          auto t = ParseTimestamp(*v);
          if (!t) {
            errors.push_back({name, "must be an RFC 3339 time such as 2026-11-22T10:30:00Z"});
            continue;
          }
          (std::string_view(name) == "since" ? filter.since_ms : filter.until_ms) = *t * 1000;
        }
        if (filter.asset && !deps.ledger.FindAsset(*filter.asset))
          errors.push_back({"asset", "not a configured asset"});
        if (filter.kind && !ledger::IsKind(*filter.kind)) errors.push_back({"kind", "not an account kind"});
        if (!errors.empty()) {
          return http::MakeProblem(
              req,
              {.status = 422, .code = "validation_failed", .detail = "Some filters are invalid.", .errors = errors});
        }
        const auto& user = std::get<auth::Principal>(who).user_id;
        auto page = deps.ledger.History(user, filter, std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor);
        if (!page) return ErrorResponse(req, page.error());
        json::array items;
        for (const auto& t : page->items) {
          auto o = TransferJson(deps, t);
          bool out = t.debit.owner == user, in = t.credit.owner == user;
          o["direction"] = out && in ? "internal" : out ? "debit" : "credit";
          items.push_back(std::move(o));
        }
        return http::Response::Json(200, json::serialize(PageJson(std::move(items), page->next_cursor)));
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/transfers",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kLedgerWrite);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto parsed = ParseMove(req, "to");
        if (auto* res = std::get_if<http::Response>(&parsed)) return std::move(*res);
        const Move& m = std::get<Move>(parsed);
        const auto& sender = std::get<auth::Principal>(who);
        auto recipient = deps.auth.FindUser(m.party);
        if (!recipient) {
          return http::MakeProblem(req, {.status = 404,
                                         .code = "recipient_not_found",
                                         .detail = "No user has that id or email.",
                                         .errors = {{"to", "no such user"}}});
        }
        if (recipient->status != "active") {
          return http::MakeProblem(req, {.status = 409,
                                         .code = "recipient_disabled",
                                         .detail = "The recipient's account is disabled.",
                                         .errors = {{"to", "disabled"}}});
        }
        auto metadata = Metadata(req, m.memo, "");
        if (auto* res = std::get_if<http::Response>(&metadata)) return std::move(*res);
        ledger::TransferRequest t{.key = "user/" + sender.user_id + "/" + m.key,
                                  .debit = {sender.user_id, std::string(ledger::kind::kAvailable), m.asset},
                                  .credit = {recipient->id, std::string(ledger::kind::kAvailable), m.asset},
                                  .amount = m.amount,
                                  .code = "transfer",
                                  .metadata = std::get<std::string>(metadata)};
        auto r = deps.ledger.Execute({std::move(t)});
        if (!r) return ErrorResponse(req, r.error());
        return Created(deps, r->front());
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/admin/mint", [&deps](http::Request& req) { return Faucet(deps, req, true); },
      kBlocking);
  router.Add(
      http::Method::kPost, "/api/v1/admin/burn", [&deps](http::Request& req) { return Faucet(deps, req, false); },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/admin/ledger/accounts",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kAdmin);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto q = ParsePageQuery(req);
        if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
        ledger::AccountFilter filter{
            .owner = req.Query("owner"), .kind = req.Query("kind"), .asset = req.Query("asset")};
        auto page = deps.ledger.ListAccounts(filter, std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor);
        if (!page) return ErrorResponse(req, page.error());
        json::array items;
        for (const auto& a : page->items) {
          auto o = AccountJson(deps, a);
          o["debits_posted"] = ledger::FormatAmount(a.debits_posted);
          o["credits_posted"] = ledger::FormatAmount(a.credits_posted);
          o["created_at"] = FormatTimestampMs(a.created_ms);
          items.push_back(std::move(o));
        }
        return http::Response::Json(200, json::serialize(PageJson(std::move(items), page->next_cursor)));
      },
      kBlocking);

  // Tokens, in the manner of a fungible-token standard: metadata and total
  // supply for every asset; balance of any holder for the platform token,
  // whose holdings are public as they would be on chain.
  router.Add(
      http::Method::kGet, "/api/v1/tokens/{asset}",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kLedgerRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        const ledger::Asset* asset = deps.ledger.FindAsset(req.Param("asset"));
        if (!asset) {
          return http::MakeProblem(req, {.status = 404, .code = "unknown_asset", .detail = "No such asset."});
        }
        auto supply = deps.ledger.Supply(asset->code);
        if (!supply) return ErrorResponse(req, supply.error());
        return http::Response::Json(
            200, json::serialize(json::object{{"symbol", asset->code},
                                              {"decimals", asset->decimals},
                                              {"total_supply", ledger::FormatAmount(*supply)},
                                              {"display", Display(deps, asset->code, *supply)},
                                              {"platform_token", asset->code == deps.ledger.platform_token()}}));
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/tokens/{asset}/balances/{holder}",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kLedgerRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        const ledger::Asset* asset = deps.ledger.FindAsset(req.Param("asset"));
        if (!asset) {
          return http::MakeProblem(req, {.status = 404, .code = "unknown_asset", .detail = "No such asset."});
        }
        auto holder = deps.auth.FindUser(req.Param("holder"));
        if (!holder) return ErrorResponse(req, holder.error());
        const auto& caller = std::get<auth::Principal>(who);
        if (asset->code != deps.ledger.platform_token() && holder->id != caller.user_id &&
            !caller.Has(auth::scope::kAdmin)) {
          return http::MakeProblem(
              req,
              {.status = 403, .code = "balance_private", .detail = "Only the platform token's balances are public."});
        }
        auto a = deps.ledger.GetAccount({holder->id, std::string(ledger::kind::kAvailable), asset->code});
        if (!a) return ErrorResponse(req, a.error());
        return http::Response::Json(200,
                                    json::serialize(json::object{
                                        {"asset", asset->code},
                                        {"holder", holder->id},
                                        {"balance", a->Balance()},
                                        {"display", Display(deps, asset->code, a->credits_posted - a->debits_posted)},
                                    }));
      },
      kBlocking);
}

}  // namespace smart::api
