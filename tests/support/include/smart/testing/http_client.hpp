// A deliberately small blocking HTTP/1.1 client over POSIX sockets, for tests
// that must send exactly the bytes they choose (malformed, slow, oversized).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace smart::testing {

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class RawConnection {
 public:
  // Connects to 127.0.0.1:port; aborts the test process on failure (a setup
  // error) unless `may_fail`, then connected() says.
  explicit RawConnection(uint16_t port, bool may_fail = false);
  bool connected() const { return fd_ >= 0; }
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Sends all bytes; false when the peer has closed.
  bool Send(std::string_view bytes);
  // Reads one response (Content-Length or chunked; no body for HEAD/1xx/204/304).
  std::optional<HttpResponse> ReadResponse(bool head = false,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // True when the server has closed the connection (EOF or reset) within `timeout`.
  bool WaitClosed(std::chrono::milliseconds timeout);
  int fd() const { return fd_; }

 private:
  bool Fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buf_;
};

// One request on a fresh connection.
// nullopt when the server cannot be reached or answers nothing.
std::optional<HttpResponse> Request(uint16_t port, std::string_view method, std::string_view target,
                                    std::string_view body = {}, std::string_view extra_headers = {});

}  // namespace smart::testing
