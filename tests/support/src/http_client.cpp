#include "smart/testing/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace smart::testing {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

RawConnection::RawConnection(uint16_t port, bool may_fail) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (may_fail) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = -1;
      return;
    }
    std::perror("test client connect");
    std::abort();
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawConnection::~RawConnection() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawConnection::Send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool RawConnection::Fill(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char tmp[16384];
  ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

std::optional<HttpResponse> RawConnection::ReadResponse(bool head, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(deadline)) return std::nullopt;
  }
  HttpResponse res;
  std::string head_text = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  size_t line_end = head_text.find("\r\n");
  std::string status_line = head_text.substr(0, line_end);
  if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0) return std::nullopt;
  res.status = std::atoi(status_line.c_str() + 9);
  res.reason = status_line.size() > 13 ? status_line.substr(13) : "";
  size_t pos = line_end == std::string::npos ? head_text.size() : line_end + 2;
  while (pos < head_text.size()) {
    size_t e = head_text.find("\r\n", pos);
    if (e == std::string::npos) e = head_text.size();
    std::string line = head_text.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      res.headers[Lower(line.substr(0, colon))] = value;
    }
    pos = e + 2;
  }
  if (head || res.status < 200 || res.status == 204 || res.status == 304) return res;
  if (Lower(res.Header("transfer-encoding")) == "chunked") {
    for (;;) {
      size_t le;
      while ((le = buf_.find("\r\n")) == std::string::npos) {
        if (!Fill(deadline)) return std::nullopt;
      }
      size_t size = std::strtoul(buf_.c_str(), nullptr, 16);
      buf_.erase(0, le + 2);
      while (buf_.size() < size + 2) {
        if (!Fill(deadline)) return std::nullopt;
      }
      res.body.append(buf_, 0, size);
      buf_.erase(0, size + 2);
      if (size == 0) break;
    }
    return res;
  }
  auto cl = res.Header("content-length");
  if (cl.empty()) {
    while (Fill(deadline)) {
    }
    res.body = std::move(buf_);
    buf_.clear();
    return res;
  }
  size_t len = std::strtoul(cl.c_str(), nullptr, 10);
  while (buf_.size() < len) {
    if (!Fill(deadline)) return std::nullopt;
  }
  res.body = buf_.substr(0, len);
  buf_.erase(0, len);
  return res;
}

bool RawConnection::WaitClosed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) return false;
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return true;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

std::optional<HttpResponse> Request(uint16_t port, std::string_view method, std::string_view target,
                                    std::string_view body, std::string_view extra_headers) {
  RawConnection c(port, /*may_fail=*/true);
  if (!c.connected()) return std::nullopt;
  std::string req;
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
  req.append(extra_headers);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  req.append("\r\n").append(body);
  if (!c.Send(req)) return std::nullopt;
  return c.ReadResponse(method == "HEAD");
}

}  // namespace smart::testing
