// Untrusted: every request path.
#include <cstdint>
#include <string_view>

#include "smart/http/router.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const smart::http::Router* router = [] {
    auto* r = new smart::http::Router();
    auto ok = [](smart::http::Request&) { return smart::http::Response::Empty(204); };
    r->Add(smart::http::Method::kGet, "/api/v1/tasks", ok);
    r->Add(smart::http::Method::kGet, "/api/v1/tasks/{id}", ok);
    r->Add(smart::http::Method::kPost, "/api/v1/tasks/{id}/cancel", ok);
    r->Add(smart::http::Method::kGet, "/api/v1/tasks/stats", ok);
    r->Add(smart::http::Method::kGet, "/", ok);
    return r;
  }();
  std::string_view path(reinterpret_cast<const char*>(data), size);
  for (auto m : {smart::http::Method::kGet, smart::http::Method::kHead, smart::http::Method::kPost,
                 smart::http::Method::kOther}) {
    (void)router->Find(m, path);
  }
  return 0;
}
