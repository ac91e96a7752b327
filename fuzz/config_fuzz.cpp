// Configuration files are trusted, but a typo must give a message, not a crash.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "smart/core/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/smart-config-fuzz-" + std::to_string(getpid()) + ".toml";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  using smart::config::Type;
  smart::config::Config cfg(
      {{.name = "http.port", .type = Type::kInt, .default_value = "8080", .min = 0, .max = 65535},
       {.name = "http.cors_origins", .type = Type::kStringList, .default_value = ""},
       {.name = "log.level", .type = Type::kString, .default_value = "info", .choices = {"info", "debug"}},
       {.name = "log.access", .type = Type::kBool, .default_value = "true"}});
  (void)cfg.LoadFile(path);
  (void)cfg.Print();
  std::remove(path.c_str());
  return 0;
}
