#include "smart/kv/redis.hpp"

#include <hiredis.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/url/parse.hpp>
#include <charconv>
#include <csignal>
#include <mutex>

#include "smart/core/config.hpp"

namespace smart::kv {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  return timeval{.tv_sec = static_cast<time_t>(ms.count() / 1000),
                 .tv_usec = static_cast<suseconds_t>(ms.count() % 1000 * 1000)};
}

RedisReply Convert(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      out.kind = RedisReply::Kind::kInteger;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      out.kind = r.type == REDIS_REPLY_STRING ? RedisReply::Kind::kString : RedisReply::Kind::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = RedisReply::Kind::kArray;
      out.elements.reserve(r.elements);
      for (size_t i = 0; i < r.elements; ++i) out.elements.push_back(Convert(*r.element[i]));
      break;
    default: break;  // nil
  }
  return out;
}

struct Target {
  std::string host, socket, user, password;
  int port = 6379;
  int db = 0;
};

Result<int> Number(std::string_view text, std::string_view what) {
  int n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 0) {
    return Error::Invalid("invalid_redis_url", std::string(what) + " must be a non-negative integer");
  }
  return n;
}

Result<Target> ParseTarget(std::string_view url) {
  auto u = boost::urls::parse_uri(url);
  if (!u) return Error::Invalid("invalid_redis_url", "redis.url must be redis://host[:port][/db] or unix:///path");
  Target t;
  if (u->has_userinfo()) {
    t.user = std::string(u->user());
    t.password = std::string(u->password());
  }
  if (u->scheme() == "unix") {
    t.socket = std::string(u->path());
    if (t.socket.empty()) return Error::Invalid("invalid_redis_url", "a unix: Redis URL needs the socket's path");
    for (auto param : u->params()) {
      if (param.key != "db") continue;
      auto db = Number(param.value, "db");
      if (!db) return db.take_error();
      t.db = *db;
    }
    return t;
  }
  if (u->scheme() != "redis") return Error::Invalid("invalid_redis_url", "a Redis URL starts redis:// or unix://");
  t.host = std::string(u->host_address());
  if (t.host.empty()) return Error::Invalid("invalid_redis_url", "a redis:// URL needs a host");
  if (u->has_port()) {
    auto port = Number(u->port(), "the port");
    if (!port) return port.take_error();
    t.port = *port;
  }
  std::string_view path = u->encoded_path();
  if (!path.empty() && path != "/") {
    auto db = Number(path.substr(1), "the database number");
    if (!db) return db.take_error();
    t.db = *db;
  }
  return t;
}

}  // namespace

struct Redis::Impl {
  redisContext* ctx = nullptr;
  std::chrono::milliseconds timeout{0};
  std::atomic<int> fd{-1};
  ~Impl() {
    if (ctx) redisFree(ctx);
  }
};

Redis::Redis(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Redis::~Redis() = default;

Result<std::unique_ptr<Redis>> Redis::Connect(std::string_view url, std::chrono::milliseconds timeout) {
  // hiredis writes with write(2): a server gone would raise SIGPIPE, whose
  // default ends the process. Ignored once, unless the program handles it.
  static std::once_flag sigpipe;
  std::call_once(sigpipe, [] {
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
  auto target = ParseTarget(url);
  if (!target) return target.take_error();
  auto impl = std::make_unique<Impl>();
  impl->timeout = timeout;
  impl->ctx = target->socket.empty() ? redisConnectWithTimeout(target->host.c_str(), target->port, ToTimeval(timeout))
                                     : redisConnectUnixWithTimeout(target->socket.c_str(), ToTimeval(timeout));
  if (!impl->ctx) return Error::Unavailable("redis_unavailable", "cannot allocate a Redis connection");
  if (impl->ctx->err) {
    return Error::Unavailable("redis_unavailable", "cannot connect to Redis at " +
                                                       config::RedactUrlPassword(std::string(url)) + ": " +
                                                       std::string(impl->ctx->errstr));
  }
  redisSetTimeout(impl->ctx, ToTimeval(timeout));
  impl->fd = impl->ctx->fd;
  std::unique_ptr<Redis> redis(new Redis(std::move(impl)));
  if (!target->password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!target->user.empty()) auth.push_back(target->user);
    auth.push_back(target->password);
    if (auto r = redis->Command(auth); !r) {
      // Refused (an error reply): a configuration error; the connection lost: an outage.
      if (r.error().kind == ErrorKind::kInvalid) {
        return Error::Invalid("redis_auth_refused", "Redis refused the credentials: " + r.error().message);
      }
      return r.take_error();
    }
  }
  if (target->db != 0) {
    std::string db = std::to_string(target->db);
    if (auto r = redis->Command({"SELECT", db}); !r) return r.take_error();
  }
  return redis;
}

Result<RedisReply> Redis::Command(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (auto a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* raw =
      static_cast<redisReply*>(redisCommandArgv(impl_->ctx, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (!raw) {
    return Error::Unavailable("redis_unavailable", "Redis connection lost: " + std::string(impl_->ctx->errstr));
  }
  std::unique_ptr<redisReply, void (*)(void*)> reply(raw, freeReplyObject);
  if (reply->type == REDIS_REPLY_ERROR) {
    return Error::Invalid("redis_error", std::string(reply->str, reply->len));
  }
  return Convert(*reply);
}

Result<RedisReply> Redis::Command(const std::vector<std::string_view>& args, std::chrono::milliseconds timeout) {
  redisSetTimeout(impl_->ctx, ToTimeval(timeout));
  auto r = Command(args);
  if (impl_->ctx->err == 0) redisSetTimeout(impl_->ctx, ToTimeval(impl_->timeout));
  return r;
}

void Redis::Interrupt() {
  if (int fd = impl_->fd.load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

}  // namespace smart::kv
