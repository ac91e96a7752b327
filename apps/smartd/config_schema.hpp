// smartd's configuration keys: the one list that defaults, --print-config,
// the README and environment overrides (SMART_<SECTION>_<KEY>) all follow.
#pragma once

#include <vector>

#include "smart/core/config.hpp"

namespace smart::smartd {

inline std::vector<config::Key> ConfigSchema() {
  using config::Key;
  using config::Redact;
  using config::Type;
  constexpr int64_t kMaxSeconds = 86400;
  return {
      {.name = "server.data_dir", .type = Type::kString, .default_value = "./data", .help = "Directory for the embedded database and other state."},
      {.name = "http.host", .type = Type::kString, .default_value = "127.0.0.1", .help = "Address to listen on."},
      {.name = "http.port", .type = Type::kInt, .default_value = "8080", .help = "Port to listen on; 0 picks a free one.", .min = 0, .max = 65535},
      {.name = "http.threads", .type = Type::kInt, .default_value = "0", .help = "I/O threads; 0 means one per core.", .min = 0, .max = 256},
      {.name = "http.max_connections", .type = Type::kInt, .default_value = "10000", .help = "Open connections beyond this get 503.", .min = 1, .max = 1000000},
      {.name = "http.max_header_bytes", .type = Type::kInt, .default_value = "16384", .help = "Largest request header; beyond it 431.", .min = 1024, .max = 1048576},
      {.name = "http.max_body_bytes", .type = Type::kInt, .default_value = "1048576", .help = "Largest request body; beyond it 413.", .min = 0, .max = 1073741824},
      {.name = "http.header_timeout_s", .type = Type::kInt, .default_value = "10", .help = "Time to receive a request's header once it starts.", .min = 1, .max = kMaxSeconds},
      {.name = "http.body_timeout_s", .type = Type::kInt, .default_value = "30", .help = "Time to receive a request's body.", .min = 1, .max = kMaxSeconds},
      {.name = "http.idle_timeout_s", .type = Type::kInt, .default_value = "60", .help = "Keep-alive connections idle this long are closed.", .min = 1, .max = kMaxSeconds},
      {.name = "http.write_timeout_s", .type = Type::kInt, .default_value = "30", .help = "Time to send a response.", .min = 1, .max = kMaxSeconds},
      {.name = "http.shutdown_grace_s", .type = Type::kInt, .default_value = "10", .help = "In-flight work allowed to finish on SIGTERM.", .min = 0, .max = 3600},
      {.name = "http.cors_origins", .type = Type::kStringList, .default_value = "", .help = "Origins allowed by CORS; \"*\" allows any."},
      {.name = "http.ws_max_message_bytes", .type = Type::kInt, .default_value = "1048576", .help = "Largest WebSocket message; beyond it close 1009.", .min = 128, .max = 67108864},
      {.name = "http.ws_send_queue_limit", .type = Type::kInt, .default_value = "1024", .help = "Messages queued per WebSocket before sends are refused.", .min = 1, .max = 1000000},
      {.name = "http.ws_idle_timeout_s", .type = Type::kInt, .default_value = "30", .help = "WebSocket with no traffic this long is closed; pings at half.", .min = 2, .max = kMaxSeconds},
      {.name = "database.url", .type = Type::kString, .default_value = "", .help = "sqlite:PATH or postgresql://...; empty means sqlite:<data_dir>/smart.db.", .redact = Redact::kUrlPassword},
      {.name = "database.pool_size", .type = Type::kInt, .default_value = "8", .help = "Connections (PostgreSQL) or readers (SQLite).", .min = 1, .max = 1000},
      {.name = "database.busy_timeout_ms", .type = Type::kInt, .default_value = "5000", .help = "Wait for a lock or a pooled connection.", .min = 0, .max = 600000},
      {.name = "database.sqlite_synchronous", .type = Type::kString, .default_value = "full", .help = "full: fsync each commit; normal: survive process crashes only.", .choices = {"full", "normal"}},
      {.name = "database.migrate_on_start", .type = Type::kBool, .default_value = "true", .help = "Apply pending migrations when serve starts."},
      {.name = "log.level", .type = Type::kString, .default_value = "info", .help = "debug, info, warn or error.", .choices = {"debug", "info", "warn", "error"}},
      {.name = "log.access", .type = Type::kBool, .default_value = "true", .help = "One JSON line per request."},
  };
}

}  // namespace smart::smartd
