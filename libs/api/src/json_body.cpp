#include "json_body.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <stdexcept>

#include "smart/core/json_text.hpp"

namespace smart::api {
namespace json = boost::json;

std::variant<json::object, http::Response> ParseJsonObject(const http::Request& req,
                                                           std::initializer_list<std::string_view> allowed) {
  return ParseJsonObject(req, std::span<const std::string_view>(allowed.begin(), allowed.size()));
}

std::variant<json::object, http::Response> ParseJsonObject(const http::Request& req,
                                                           std::span<const std::string_view> allowed) {
  auto type = req.headers.Get("Content-Type").value_or("");
  auto semi = type.find(';');
  auto media = type.substr(0, semi);
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  if (!http::IEquals(media, "application/json")) {
    return http::MakeProblem(
        req, {.status = 415, .code = "unsupported_media_type", .detail = "Send the body as application/json."});
  }
  json::parse_options opt;
  opt.max_depth = 32;
  boost::system::error_code ec;
  json::value v = json::parse(req.body, ec, {}, opt);
  if (ec) {
    return http::MakeProblem(
        req, {.status = 400, .code = "invalid_json", .detail = "The body is not valid JSON: " + ec.message() + "."});
  }
  if (!v.is_object()) {
    return http::MakeProblem(req, {.status = 400, .code = "invalid_json", .detail = "The body must be a JSON object."});
  }
  std::vector<http::FieldError> unknown;
  for (const auto& [key, value] : v.as_object()) {
    (void)value;
    bool known = false;
    for (auto a : allowed) known = known || a == key;
    if (!known) unknown.push_back({std::string(key), "unknown field"});
  }
  if (!unknown.empty()) {
    return http::MakeProblem(req, {.status = 400,
                                   .code = "unknown_field",
                                   .detail = "The body has fields this endpoint does not take.",
                                   .errors = std::move(unknown)});
  }
  return std::move(v.as_object());
}

std::optional<std::string> FieldReader::String(std::string_view key, bool required) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) errors_.push_back({prefix_ + std::string(key), "is required"});
    return std::nullopt;
  }
  if (!it->value().is_string()) {
    errors_.push_back({prefix_ + std::string(key), "must be a string"});
    return std::nullopt;
  }
  return std::string(it->value().as_string());
}

std::optional<std::vector<std::string>> FieldReader::StringList(std::string_view key, bool required) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) errors_.push_back({prefix_ + std::string(key), "is required"});
    return std::nullopt;
  }
  if (!it->value().is_array()) {
    errors_.push_back({prefix_ + std::string(key), "must be an array of strings"});
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const auto& v : it->value().as_array()) {
    if (!v.is_string()) {
      errors_.push_back({prefix_ + std::string(key), "must be an array of strings"});
      return std::nullopt;
    }
    out.emplace_back(v.as_string());
  }
  return out;
}

std::optional<int64_t> FieldReader::Timestamp(std::string_view key, bool required) {
  auto text = String(key, required);
  if (!text) return std::nullopt;
  auto t = ParseTimestamp(*text);
  if (!t) errors_.push_back({prefix_ + std::string(key), "must be an RFC 3339 time such as 2026-11-22T10:30:00Z"});
  return t;
}

std::optional<int64_t> FieldReader::Int(std::string_view key, bool required, int64_t min, int64_t max) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) errors_.push_back({prefix_ + std::string(key), "is required"});
    return std::nullopt;
  }
  const auto& v = it->value();
  std::optional<int64_t> n;
  if (v.is_int64()) n = v.as_int64();
  if (v.is_uint64() && v.as_uint64() <= static_cast<uint64_t>(INT64_MAX)) n = static_cast<int64_t>(v.as_uint64());
  if (!n || *n < min || *n > max) {
    errors_.push_back(
        {prefix_ + std::string(key), "must be an integer from " + std::to_string(min) + " to " + std::to_string(max)});
    return std::nullopt;
  }
  return n;
}

std::optional<bool> FieldReader::Bool(std::string_view key, bool required) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) errors_.push_back({prefix_ + std::string(key), "is required"});
    return std::nullopt;
  }
  if (!it->value().is_bool()) {
    errors_.push_back({prefix_ + std::string(key), "must be true or false"});
    return std::nullopt;
  }
  return it->value().as_bool();
}

std::optional<std::string> FieldReader::Object(std::string_view key, bool required, size_t max_bytes) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) errors_.push_back({prefix_ + std::string(key), "is required"});
    return std::nullopt;
  }
  if (!it->value().is_object()) {
    errors_.push_back({prefix_ + std::string(key), "must be a JSON object"});
    return std::nullopt;
  }
  std::string text = boost::json::serialize(it->value());
  if (text.size() > max_bytes) {
    errors_.push_back({prefix_ + std::string(key), "is larger than " + std::to_string(max_bytes) + " bytes"});
    return std::nullopt;
  }
  return text;
}

std::optional<ledger::Amount> FieldReader::Amount(std::string_view key, bool required) {
  auto it = o_.find(key);
  if (it != o_.end() && it->value().is_number()) {
    errors_.push_back(
        {prefix_ + std::string(key), "must be a string of integer base units, e.g. \"250000\", not a number"});
    invalid_amount_ = true;
    return std::nullopt;
  }
  auto text = String(key, required);
  if (!text) return std::nullopt;
  auto amount = ledger::ParseAmount(*text);
  if (!amount) {
    errors_.push_back(
        {prefix_ + std::string(key), "must be a string of integer base units below 2^128, e.g. \"250000\""});
    invalid_amount_ = true;
  }
  return amount;
}

std::variant<PageQuery, http::Response> ParsePageQuery(const http::Request& req) {
  PageQuery q;
  if (auto limit = req.Query("limit")) {
    int v = 0;
    auto [p, ec] = std::from_chars(limit->data(), limit->data() + limit->size(), v);
    if (ec != std::errc() || p != limit->data() + limit->size() || v < 1 || v > 500) {
      return http::MakeProblem(req, {.status = 422,
                                     .code = "validation_failed",
                                     .detail = "Bad query parameter.",
                                     .errors = {{"limit", "must be an integer from 1 to 500"}}});
    }
    q.limit = v;
  }
  if (auto cursor = req.Query("cursor")) {
    if (cursor->size() > 128) {
      return http::MakeProblem(req, {.status = 422,
                                     .code = "validation_failed",
                                     .detail = "Bad query parameter.",
                                     .errors = {{"cursor", "is not a cursor from this API"}}});
    }
    q.cursor = *cursor;
  }
  return q;
}

http::Response FieldReader::Problem(const http::Request& req) const {
  return http::MakeProblem(req, {.status = 422,
                                 .code = "validation_failed",
                                 .detail = "Some fields are missing or have the wrong type.",
                                 .errors = errors_});
}

http::Response ErrorResponse(const http::Request& req, const Error& e) {
  int status = 500;
  switch (e.kind) {
    case ErrorKind::kInvalid: status = 422; break;
    case ErrorKind::kNotFound: status = 404; break;
    case ErrorKind::kConflict: status = 409; break;
    case ErrorKind::kRetryable:
    case ErrorKind::kUnavailable: status = 503; break;
    case ErrorKind::kInternal:
      // A broken invariant is a bug: the server's dispatch logs it with the
      // request id and answers the one opaque 500, as for any exception.
      throw std::runtime_error(e.code + ": " + e.message);
    case ErrorKind::kUnauthenticated: status = 401; break;
    case ErrorKind::kPermissionDenied: status = 403; break;
  }
  http::Problem p{.status = status, .code = e.code, .detail = e.message};
  if (status == 503) p.detail = "A dependency is unavailable; retry shortly.";  // internals stay out of answers
  if (e.kind == ErrorKind::kInvalid || e.kind == ErrorKind::kConflict) {
    auto colon = e.message.find(": ");
    if (colon != std::string::npos && colon < 40 && e.message.find(' ') > colon) {
      p.errors.push_back({e.message.substr(0, colon), e.message.substr(colon + 2)});
    }
  }
  http::Response res = http::MakeProblem(req, p);
  if (status == 401) res.headers.Add("WWW-Authenticate", "Bearer realm=\"smart\", error=\"invalid_token\"");
  if (status == 503) res.headers.Add("Retry-After", "1");
  return res;
}

}  // namespace smart::api
