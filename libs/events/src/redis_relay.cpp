#include "smart/events/redis_relay.hpp"

#include <charconv>

#include "smart/core/crypto.hpp"
#include "smart/core/thread_name.hpp"
#include "smart/kv/redis.hpp"

namespace smart::events {
namespace {

constexpr size_t kBatchEvents = 512;
constexpr size_t kBatchBytes = 512 * 1024;
constexpr size_t kReadEntries = 256;  // stream entries one read asks for

// Appends a batch atomically: numbers its events from the shared counter
// (seeded from Redis's clock, or past the stream's last entry, when missing),
// leaves ARGV[2] ids unused first (events dropped), adds one stream entry
// whose id is the batch's first event id, and trims what is older than the
// window. A batch sent again (its reply was lost) is appended once: KEYS[3]
// remembers each batch's first id for ten minutes. KEYS: seq, stream, the
// batch's key. ARGV: n, skip, window, payload, the sending instance. Lua
// numbers are doubles: exact below 2^53, printed with %.0f.
constexpr std::string_view kAppendScript = R"lua(
local done = redis.call('GET', KEYS[3])
if done then return tonumber(done) end
local n = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if top then
    local after = tonumber(string.match(top[1], '^%d+')) + tonumber(top[2][2])
    if after > seed then seed = after end
  end
  redis.call('SET', KEYS[1], string.format('%.0f', seed))
end
local last = redis.call('INCRBY', KEYS[1], n + tonumber(ARGV[2]))
local first = last - n + 1
local oldest = math.max(0, first - tonumber(ARGV[3]))
redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%.0f', oldest), string.format('%.0f', first) .. '-0',
  'n', ARGV[1], 'e', ARGV[4], 'o', ARGV[5])
redis.call('SET', KEYS[3], string.format('%.0f', first), 'EX', 600)
return first
)lua";

// An event in a batch: its fields as netstrings ("<length>:<bytes>").
void AppendField(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

void Encode(std::string& out, const Event& e) {
  AppendField(out, std::to_string(e.ts_ms));
  AppendField(out, e.type);
  AppendField(out, e.owner);
  AppendField(out, e.subject);
  AppendField(out, e.data);
}

bool NextField(std::string_view& in, std::string_view& field) {
  auto colon = in.find(':');
  size_t len = 0;
  if (colon == std::string_view::npos) return false;
  auto [end, ec] = std::from_chars(in.data(), in.data() + colon, len);
  if (ec != std::errc() || end != in.data() + colon || len > in.size() - colon - 1) return false;
  field = in.substr(colon + 1, len);
  in.remove_prefix(colon + 1 + len);
  return true;
}

template <typename T>
bool Number(std::string_view text, T& n) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  return ec == std::errc() && end == text.data() + text.size();
}

// A stream entry's events, numbered from the entry's id ("<first>-0"), and
// the instance that sent them (empty if the entry does not say).
bool Decode(const kv::RedisReply& entry, std::vector<Event>& out, std::string_view* origin = nullptr) {
  if (entry.elements.size() != 2 || entry.elements[1].kind != kv::RedisReply::Kind::kArray) return false;
  std::string_view id = entry.elements[0].str;
  uint64_t first = 0;
  if (!Number(id.substr(0, id.find('-')), first)) return false;
  const auto& fields = entry.elements[1].elements;
  for (size_t i = 0; origin && i + 1 < fields.size(); i += 2) {
    if (fields[i].str == "o") *origin = fields[i + 1].str;
  }
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    if (fields[i].str != "e") continue;
    std::string_view in = fields[i + 1].str;
    while (!in.empty()) {
      std::string_view ts, type, owner, subject, data;
      Event e;
      if (!NextField(in, ts) || !NextField(in, type) || !NextField(in, owner) || !NextField(in, subject) ||
          !NextField(in, data) || !Number(ts, e.ts_ms)) {
        return false;
      }
      e.id = first + out.size();
      e.type = type, e.owner = owner, e.subject = subject, e.data = data;
      out.push_back(std::move(e));
    }
    return true;
  }
  return false;
}

}  // namespace

RedisRelay::RedisRelay(Bus& bus, RelayOptions options)
    : bus_(bus),
      options_(std::move(options)),
      stream_key_(options_.prefix + "events"),
      seq_key_(options_.prefix + "events:seq"),
      origin_(crypto::RandomToken(12)) {}

Result<std::unique_ptr<RedisRelay>> RedisRelay::Start(Bus& bus, RelayOptions options) {
  std::unique_ptr<RedisRelay> relay(new RedisRelay(bus, std::move(options)));
  auto redis = kv::Redis::Connect(relay->options_.url, relay->options_.timeout);
  if (redis) {
    SMART_TRY(relay->LoadWindow(**redis));
    relay->reader_ = std::move(*redis);
  } else if (redis.error().kind == ErrorKind::kUnavailable) {
    relay->Failed(redis.error());  // started all the same: the reader loads the window once Redis answers
  } else {
    return redis.take_error();  // a URL or credentials that cannot work
  }
  bus.Forward([r = relay.get()](Event e) { r->Enqueue(std::move(e)); });
  relay->sender_ = std::thread([r = relay.get()] { r->SendLoop(); });
  relay->reader_thread_ = std::thread([r = relay.get()] { r->ReadLoop(); });
  return relay;
}

RedisRelay::~RedisRelay() {
  bus_.Forward(nullptr);
  {
    // What is queued goes first (a stopping instance's last events), for as
    // long as a command may take.
    std::unique_lock lk(mu_);
    drained_.wait_for(lk, options_.timeout, [&] { return queue_.empty() && !sending_; });
    stop_ = true;
  }
  cv_.notify_all();
  paused_.notify_all();
  {
    std::lock_guard lk(reader_mu_);
    if (reader_) reader_->Interrupt();
  }
  if (sender_.joinable()) sender_.join();
  if (reader_thread_.joinable()) reader_thread_.join();
}

Result<void> RedisRelay::LoadWindow(kv::Redis& redis) {
  // The stream's last entries, from about `window` events back.
  auto top = redis.Command({"XREVRANGE", stream_key_, "+", "-", "COUNT", "1"});
  if (!top) return top.take_error();
  if (!top->elements.empty()) {
    std::vector<Event> last;
    if (Decode(top->elements[0], last) && !last.empty() && last.back().id > options_.window) {
      last_entry_ = std::to_string(last.back().id - options_.window) + "-0";
    }
    SMART_TRY(ReadAfter(redis, false, std::chrono::milliseconds(0)));
  }
  {
    std::lock_guard lk(mu_);
    loaded_.store(true);
  }
  cv_.notify_all();
  return Ok();
}

void RedisRelay::Enqueue(Event e) {
  {
    std::lock_guard lk(mu_);
    if (queue_.size() >= options_.max_queued) {
      queue_.pop_front();
      ++skip_;
      dropped_.fetch_add(1);
    }
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
}

void RedisRelay::Failed(const Error& e) {
  if (!failing_.exchange(true) && options_.on_error) options_.on_error(e);
}

void RedisRelay::Succeeded() {
  if (failing_.exchange(false) && options_.on_recovered) options_.on_recovered();
}

void RedisRelay::Pause(int& backoff_ms) {
  std::unique_lock lk(mu_);
  paused_.wait_for(lk, std::chrono::milliseconds(backoff_ms), [&] { return stop_; });
  backoff_ms = std::min(backoff_ms * 2, 2000);
}

void RedisRelay::SendLoop() {
  NameThread("event-send");
  std::unique_ptr<kv::Redis> redis;
  size_t batched = 0;  // events in `payload`, waiting to be sent
  std::string payload;
  uint64_t skip = 0;
  int backoff_ms = 50;
  // Names each batch, so that one sent again is appended once.
  const std::string batch_prefix = options_.prefix + "events:batch:" + origin_ + ":";
  uint64_t batches = 0;
  std::string batch_key;
  for (;;) {
    if (batched == 0) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      payload.clear();
      while (!queue_.empty() && batched < kBatchEvents && payload.size() < kBatchBytes) {
        Encode(payload, queue_.front());
        queue_.pop_front();
        ++batched;
      }
      skip = std::exchange(skip_, 0);
      sending_ = true;
      batch_key = batch_prefix + std::to_string(++batches);
    }
    if (!loaded_.load()) {
      // Started while Redis was away: this instance's events go after the
      // reader has loaded the window, so that they are read back and delivered.
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || loaded_.load(); });
      if (stop_) return;
    }
    if (!redis) {
      auto c = kv::Redis::Connect(options_.url, options_.timeout);
      if (!c) {
        Failed(c.error());
        Pause(backoff_ms);
        if (std::lock_guard lk(mu_); stop_) return;
        continue;
      }
      redis = std::move(*c);
    }
    std::string n = std::to_string(batched), skipped = std::to_string(skip), window = std::to_string(options_.window);
    auto r = redis->Command(
        {"EVAL", kAppendScript, "3", seq_key_, stream_key_, batch_key, n, skipped, window, payload, origin_});
    if (!r && r.error().kind == ErrorKind::kUnavailable) {
      // Sent again on a new connection: it may have been appended already.
      redis.reset();
      Failed(r.error());
      Pause(backoff_ms);
      if (std::lock_guard lk(mu_); stop_) return;
      continue;
    }
    if (!r) {
      // Refused (out of memory, a read-only replica): these are lost, and the
      // ids they would have had stay unused so that readers see the break.
      Failed(r.error());
      dropped_.fetch_add(batched);
      Sent(batched, skip);
      batched = 0;
      Pause(backoff_ms);
      if (std::lock_guard lk(mu_); stop_) return;
      continue;
    }
    sent_.fetch_add(batched);
    Sent(0, 0);
    batched = 0;
    Succeeded();
    backoff_ms = 50;
  }
}

void RedisRelay::Sent(size_t lost, uint64_t skipped) {
  std::lock_guard lk(mu_);
  skip_ += lost > 0 ? skipped + lost : 0;
  sending_ = false;
  if (queue_.empty()) drained_.notify_all();
}

Result<void> RedisRelay::ReadAfter(kv::Redis& redis, bool deliver, std::chrono::milliseconds block) {
  const std::string count = std::to_string(kReadEntries);
  for (;;) {
    std::string blocked = std::to_string(block.count());
    auto r = deliver ? redis.Command({"XREAD", "COUNT", count, "BLOCK", blocked, "STREAMS", stream_key_, last_entry_},
                                     options_.timeout + block)
                     : redis.Command({"XRANGE", stream_key_, "(" + last_entry_, "+", "COUNT", count});
    if (!r) return r.take_error();
    // XREAD: [[stream, [entry...]]] or nil; XRANGE: [entry...].
    const std::vector<kv::RedisReply>* entries = &r->elements;
    if (deliver) {
      if (r->elements.empty()) return Ok();
      if (r->elements[0].elements.size() != 2) return Error::Internal("redis_reply", "unexpected XREAD reply");
      entries = &r->elements[0].elements[1].elements;
    }
    std::vector<Event> events;
    for (const auto& entry : *entries) {
      events.clear();
      std::string_view origin;
      if (!Decode(entry, events, &origin)) {
        events.clear();  // its ids are skipped: the next event's breaks the window's run
        Failed(Error::Internal("redis_reply", "an event batch in " + stream_key_ + " could not be read; skipped"));
      }
      // This instance's own events were heard at once by Bus::SubscribeOwn's subscribers.
      const bool own = origin == origin_;
      for (auto& e : events) bus_.Receive(std::move(e), deliver, own);
      received_.fetch_add(events.size());
      if (!entry.elements.empty()) last_entry_ = entry.elements[0].str;
    }
    if (deliver || entries->size() < kReadEntries) return Ok();
  }
}

void RedisRelay::ReadLoop() {
  NameThread("event-read");
  int backoff_ms = 50;
  bool reconnected = false;
  for (;;) {
    if (std::lock_guard lk(mu_); stop_) return;
    kv::Redis* redis;
    {
      std::lock_guard lk(reader_mu_);
      redis = reader_.get();
    }
    if (!redis) {
      auto c = kv::Redis::Connect(options_.url, options_.timeout);
      if (!c) {
        Failed(c.error());
        Pause(backoff_ms);
        continue;
      }
      std::lock_guard lk(reader_mu_);
      reader_ = std::move(*c);
      redis = reader_.get();
      reconnected = true;
    }
    if (reconnected && loaded_.load()) {
      // A Redis that lost its data (restarted without persistence) numbers
      // from its clock again: read its stream from the start if it is behind
      // our place.
      auto top = redis->Command({"XREVRANGE", stream_key_, "+", "-", "COUNT", "1"});
      uint64_t place = 0;
      Number(std::string_view(last_entry_).substr(0, last_entry_.find('-')), place);
      if (top) {
        std::vector<Event> last;
        if (top->elements.empty() || !Decode(top->elements[0], last) || last.empty() || last.back().id < place) {
          last_entry_ = "0-0";
        }
      }
    }
    reconnected = false;
    // Started while Redis was away: the window first (not delivered: what
    // this instance's clients missed is for them to resume).
    Result<void> r = loaded_.load() ? Ok() : LoadWindow(*redis);
    if (r) r = ReadAfter(*redis, true, std::chrono::milliseconds(2000));
    if (!r) {
      if (std::lock_guard lk(mu_); stop_) return;
      Failed(r.error());
      if (r.error().kind == ErrorKind::kUnavailable) {
        std::lock_guard lk(reader_mu_);
        reader_.reset();
      }
      Pause(backoff_ms);
      continue;
    }
    Succeeded();
    backoff_ms = 50;
  }
}

bool RedisRelay::Elect(std::string_view name, std::chrono::milliseconds period) {
  std::lock_guard lk(elect_mu_);
  if (!elect_) {
    auto c = kv::Redis::Connect(options_.url, options_.timeout);
    if (!c) return false;
    elect_ = std::move(*c);
  }
  auto now = elect_->Command({"TIME"});
  if (!now || now->elements.size() != 2) {
    elect_.reset();
    return false;
  }
  int64_t ms = 0;
  if (!Number(now->elements[0].str, ms)) return false;
  ms *= 1000;
  std::string key = stream_key_ + ":elect:" + std::string(name) + ":" + std::to_string(ms / period.count());
  std::string ttl = std::to_string(period.count() * 2);
  auto won = elect_->Command({"SET", key, "1", "NX", "PX", ttl});
  if (!won) {
    elect_.reset();
    return false;
  }
  return won->kind == kv::RedisReply::Kind::kStatus;
}

}  // namespace smart::events
