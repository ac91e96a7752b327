#include "smart/http/message.hpp"

#include <algorithm>
#include <cctype>

#include "later.hpp"
#include "smart/core/json_text.hpp"

namespace smart::http {

std::string_view ToString(Method m) {
  switch (m) {
    case Method::kGet: return "GET";
    case Method::kHead: return "HEAD";
    case Method::kPost: return "POST";
    case Method::kPut: return "PUT";
    case Method::kPatch: return "PATCH";
    case Method::kDelete: return "DELETE";
    case Method::kOptions: return "OPTIONS";
    case Method::kOther: return "OTHER";
  }
  return "OTHER";
}

Method ParseMethod(std::string_view text) {
  for (auto m :
       {Method::kGet, Method::kHead, Method::kPost, Method::kPut, Method::kPatch, Method::kDelete, Method::kOptions}) {
    if (ToString(m) == text) return m;
  }
  return Method::kOther;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::optional<std::string_view> Headers::Get(std::string_view name) const {
  for (const auto& [k, v] : fields_) {
    if (IEquals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

void Headers::Set(std::string_view name, std::string value) {
  Remove(name);
  fields_.emplace_back(std::string(name), std::move(value));
}

void Headers::Remove(std::string_view name) {
  std::erase_if(fields_, [&](const auto& f) { return IEquals(f.first, name); });
}

std::string_view Request::Param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return {};
}

std::optional<std::string> Request::Query(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    auto eq = pair.find('=');
    auto key = PercentDecode(pair.substr(0, eq), true);
    if (key && *key == name) {
      if (eq == std::string_view::npos) return std::string();
      return PercentDecode(pair.substr(eq + 1), true);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

Response Response::Json(int status, std::string body) {
  Response r;
  r.status = status;
  r.headers.Add("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

Response Response::Text(int status, std::string body, std::string content_type) {
  Response r;
  r.status = status;
  r.headers.Add("Content-Type", std::move(content_type));
  r.body = std::move(body);
  return r;
}

Response Response::Empty(int status) {
  Response r;
  r.status = status;
  return r;
}

void Reply::operator()(std::function<Response()> make) const { state_->later->Give(std::move(make)); }

std::pair<Response, Reply> Response::Later() {
  Response placeholder = Empty(0);
  placeholder.later = std::make_shared<detail::Later>();
  Reply reply;
  reply.state_ = std::make_shared<detail::ReplyState>();
  reply.state_->later = placeholder.later;
  return {std::move(placeholder), std::move(reply)};
}

std::pair<Response, Reply> Response::Later(std::chrono::milliseconds wait, std::function<Response()> on_timeout) {
  auto later = Later();
  later.first.later->deadline = std::chrono::steady_clock::now() + wait;
  later.first.later->on_timeout = std::move(on_timeout);
  return later;
}

void Response::ThenLater(std::function<void(Response&)> fn) { later->then.push_back(std::move(fn)); }

Response MakeProblem(const Request& req, const Problem& problem) { return MakeProblem(req.request_id, problem); }

Response MakeProblem(std::string_view request_id, const Problem& p) {
  std::string body;
  body.reserve(256);
  body.append("{\"type\":");
  AppendJsonString(body, "urn:smart:problem:" + p.code);
  body.append(",\"title\":");
  AppendJsonString(body, p.title.empty() ? ReasonPhrase(p.status) : std::string_view(p.title));
  body.append(",\"status\":").append(std::to_string(p.status));
  body.append(",\"detail\":");
  AppendJsonString(body, p.detail);
  body.append(",\"code\":");
  AppendJsonString(body, p.code);
  body.append(",\"request_id\":");
  AppendJsonString(body, request_id);
  if (!p.errors.empty()) {
    body.append(",\"errors\":[");
    for (size_t i = 0; i < p.errors.size(); ++i) {
      if (i) body.push_back(',');
      body.append("{\"field\":");
      AppendJsonString(body, p.errors[i].field);
      body.append(",\"message\":");
      AppendJsonString(body, p.errors[i].message);
      body.push_back('}');
    }
    body.push_back(']');
  }
  body.push_back('}');
  Response r;
  r.status = p.status;
  r.headers.Add("Content-Type", "application/problem+json");
  r.body = std::move(body);
  return r;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace smart::http
