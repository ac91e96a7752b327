// Small parsers of client text: emails, timestamps, base64url, percent
// escapes, query strings, placeholder rewriting, JSON string escaping.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "smart/auth/service.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/json_text.hpp"
#include "smart/http/message.hpp"
#include "smart/store/store.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto email = smart::auth::AuthService::NormalizeEmail(in)) {
    // Normalising is idempotent and yields valid UTF-8.
    if (smart::auth::AuthService::NormalizeEmail(*email) != email || !smart::IsValidUtf8(*email)) std::abort();
  }
  (void)smart::ParseTimestamp(in);
  if (auto decoded = smart::crypto::Base64UrlDecode(in)) {
    if (smart::crypto::Base64UrlEncode(*decoded) != in) std::abort();  // one encoding per byte string
  }
  (void)smart::http::PercentDecode(in, true);
  smart::http::Request req;
  req.query = std::string(in);
  (void)req.Query("limit");
  (void)smart::store::TranslatePlaceholders(in);
  std::string quoted;
  smart::AppendJsonString(quoted, in);
  if (!smart::IsValidUtf8(quoted)) std::abort();  // logs stay valid JSON whatever the input
  return 0;
}
