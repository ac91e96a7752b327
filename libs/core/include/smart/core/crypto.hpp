// Small cryptographic helpers over OpenSSL 3. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace smart::crypto {

// `n` bytes from the operating system's CSPRNG (aborts if it fails: nothing secret can be made without it).
std::string RandomBytes(size_t n);
// A random token of `n` bytes, base64url without padding.
std::string RandomToken(size_t n);

std::string Sha256(std::string_view data);  // 32 raw bytes
std::string Sha256Hex(std::string_view data);
std::string HmacSha256(std::string_view key, std::string_view data);  // 32 raw bytes

std::string Base64UrlEncode(std::string_view data);                 // no padding
std::optional<std::string> Base64UrlDecode(std::string_view text);  // rejects padding and bad characters
std::string HexEncode(std::string_view data);

// Compares without an early exit, so timing does not reveal where inputs differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace smart::crypto
