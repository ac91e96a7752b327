// Strict JSON request bodies: the content type must be JSON, the body a JSON
// object, unknown fields are refused (so typos never pass silently) and field
// types are checked. Failures become problem documents.
#pragma once

#include <boost/json/object.hpp>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "smart/core/result.hpp"
#include "smart/http/message.hpp"
#include "smart/ledger/amount.hpp"

namespace smart::api {

// The body as an object, or the problem response to send instead (415, 400).
std::variant<boost::json::object, http::Response> ParseJsonObject(const http::Request& req,
                                                                  std::initializer_list<std::string_view> allowed);
std::variant<boost::json::object, http::Response> ParseJsonObject(const http::Request& req,
                                                                  std::span<const std::string_view> allowed);

// Reads typed fields, collecting every problem before answering once (422).
class FieldReader {
 public:
  // `prefix` goes before field names in errors ("tasks[3]." for an item of a list).
  explicit FieldReader(const boost::json::object& o, std::string prefix = "") : o_(o), prefix_(std::move(prefix)) {}
  // nullopt when absent (an error if required) or of another type.
  std::optional<std::string> String(std::string_view key, bool required);
  std::optional<std::vector<std::string>> StringList(std::string_view key, bool required);
  // An RFC 3339 time, as seconds since the epoch.
  std::optional<int64_t> Timestamp(std::string_view key, bool required);
  // An integer within [min, max].
  std::optional<int64_t> Int(std::string_view key, bool required, int64_t min, int64_t max);
  std::optional<bool> Bool(std::string_view key, bool required);
  // A JSON object, serialized; `max_bytes` bounds its text.
  std::optional<std::string> Object(std::string_view key, bool required, size_t max_bytes);
  // An amount: a string of integer base units below 2^128 (never a JSON number).
  std::optional<ledger::Amount> Amount(std::string_view key, bool required);
  bool ok() const { return errors_.empty(); }
  void Add(http::FieldError e) { errors_.push_back(std::move(e)); }
  const std::vector<http::FieldError>& errors() const { return errors_; }
  const boost::json::object& object() const { return o_; }
  const std::string& prefix() const { return prefix_; }
  // An amount was given but is not one (routes that answer invalid_amount for it).
  bool invalid_amount() const { return invalid_amount_; }
  http::Response Problem(const http::Request& req) const;

 private:
  const boost::json::object& o_;
  std::string prefix_;
  std::vector<http::FieldError> errors_;
  bool invalid_amount_ = false;
};

// `?limit=` (default 50, 1..500) and `?cursor=`; nullopt limit means a bad value (answer 422).
struct PageQuery {
  int limit = 50;
  std::string cursor;
};
std::variant<PageQuery, http::Response> ParsePageQuery(const http::Request& req);

// An Error from the domain as a problem response. Validation errors whose
// message reads "field: text" list that field in `errors`. kInternal errors are
// bugs: they are thrown, so that the server logs them and answers 500 in one place.
http::Response ErrorResponse(const http::Request& req, const Error& e);

}  // namespace smart::api
