#include "smart/http/client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <memory>
#include <mutex>

#include "smart/http/message.hpp"

namespace smart::http {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Sink {
  std::string* body;
  const std::function<bool(std::string_view)>* on_data;
};

// One header line of a response; a status line starts the fields over (redirects, 100 Continue).
size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  auto* fields = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  std::string_view line(data, size * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.starts_with("HTTP/")) {
    fields->clear();
  } else if (auto colon = line.find(':'); colon != std::string_view::npos && colon > 0) {
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    fields->emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  return size * n;
}

size_t Write(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  std::string_view chunk(data, size * n);
  if (sink->on_data && *sink->on_data) {
    if (!(*sink->on_data)(chunk)) return 0;  // abort
  } else {
    sink->body->append(chunk);
  }
  return chunk.size();
}

// Each thread keeps one handle, and with it libcurl's pool of open
// connections: the next request to the same server reuses a kept-alive
// connection instead of a new TCP (and TLS) handshake. A Send made while the
// thread's handle is busy (from an on_data callback) uses a handle of its own.
struct ThreadHandle {
  CURL* curl = nullptr;
  bool busy = false;
  ~ThreadHandle() {
    if (curl) curl_easy_cleanup(curl);
  }
};

class Lease {
 public:
  Lease() {
    thread_local ThreadHandle mine;
    if (!mine.busy) {
      if (!mine.curl) mine.curl = curl_easy_init();
      if (mine.curl) {
        curl_easy_reset(mine.curl);  // options back to defaults; connections stay
        mine.busy = true;
        owner_ = &mine;
        curl_ = mine.curl;
        return;
      }
    }
    curl_ = curl_easy_init();
  }
  ~Lease() {
    if (owner_) {
      owner_->busy = false;
    } else if (curl_) {
      curl_easy_cleanup(curl_);
    }
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  CURL* get() const { return curl_; }

 private:
  ThreadHandle* owner_ = nullptr;
  CURL* curl_ = nullptr;
};

}  // namespace

Result<ClientResponse> Send(const ClientRequest& req, const std::function<bool(std::string_view)>& on_data) {
  GlobalInit();
  Lease curl;
  if (!curl.get()) return Error::Internal("http_client", "curl_easy_init failed");
  ClientResponse res;
  Sink sink{&res.body, &on_data};
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : req.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_guard(headers, curl_slist_free_all);
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<int64_t>(req.timeout.count(), 10'000)));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &res.headers);
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  }
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return Error::Unavailable("http_timeout",
                              req.url + ": no complete answer within " + std::to_string(req.timeout.count()) + " ms");
  }
  if (rc == CURLE_WRITE_ERROR && on_data) return Error::Unavailable("http_aborted", req.url + ": transfer aborted");
  if (rc != CURLE_OK) return Error::Unavailable("http_unreachable", req.url + ": " + curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  res.status = static_cast<int>(status);
  char* type = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
  if (type) res.content_type = type;
  return res;
}

std::string_view ClientResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return {};
}

}  // namespace smart::http
