#include "smart/kv/shared_cap.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "periodic.hpp"
#include "redis_link.hpp"
#include "smart/core/crypto.hpp"

namespace smart::kv {
namespace {

// Each key's tally is a hash: a field per instance holding what that instance
// was granted and until when ("<count>:<expires ms>", Redis's clock). For
// each key: drops the fields whose lease ran out, sums the others', grants
// this instance what leaves them under the cap but never less than it was
// granted before (ARGV `held`), and records it for a lease (a grant of 0
// removes the field). KEYS: the tallies. ARGV: this instance's field, the
// lease in ms, then per key: its count, what it was granted, the cap.
// Returns per key {granted, others}.
constexpr std::string_view kExchangeScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, lease = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 3
  local want, held, cap = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local others = 0
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    if fields[j] ~= me then
      local n, expires = string.match(fields[j + 1], '^(%d+):(%d+)$')
      if n and tonumber(expires) > now then
        others = others + tonumber(n)
      else
        redis.call('HDEL', KEYS[i], fields[j])
      end
    end
  end
  local granted = math.max(held, math.min(want, math.max(0, cap - others)))
  if granted > 0 then
    redis.call('HSET', KEYS[i], me, string.format('%.0f:%.0f', granted, now + lease))
    redis.call('PEXPIRE', KEYS[i], lease)
  else
    redis.call('HDEL', KEYS[i], me)
  end
  out[i] = {granted, others}
end
return out
)lua";

constexpr size_t kKeysPerCall = 256;

class Cap final : public SharedCap {
 public:
  explicit Cap(Options options)
      : options_(std::move(options)),
        prefix_(options_.prefix + "cap:" + options_.name + ":"),
        instance_(crypto::RandomToken(12)),
        link_(options_.url),
        exchange_("cap-share", options_.period, [this](bool last) { Exchange(last); }) {}

  size_t Others(std::string_view key) override {
    std::lock_guard lk(mu_);
    auto it = held_.find(key);
    if (it == held_.end()) return 0;
    it->second.due = true;  // asked about: heard of again at the next exchange
    return it->second.others;
  }

  void Add(std::string_view key, uint64_t holder, size_t cap) override {
    std::lock_guard lk(mu_);
    auto it = held_.find(key);
    if (it == held_.end()) it = held_.emplace(std::string(key), Held{}).first;
    Held& h = it->second;
    if (!h.holders.insert(holder).second) return;
    h.fresh.insert(holder);
    h.cap = cap;
    h.due = true;
  }

  void Remove(std::string_view key, uint64_t holder) override {
    std::lock_guard lk(mu_);
    auto it = held_.find(key);
    if (it == held_.end() || it->second.holders.erase(holder) == 0) return;
    Held& h = it->second;
    if (h.fresh.erase(holder) == 0) --h.granted;
    h.due = true;
  }

 private:
  struct Held {
    std::unordered_set<uint64_t> holders;
    std::set<uint64_t> fresh;  // not granted yet (the rest of `holders` are)
    size_t granted = 0;
    size_t others = 0;  // what the other instances hold, as last heard
    size_t cap = 0;
    bool due = false;  // to exchange next: changed, or asked about, since the last
  };
  // A key as sent: its counts then, and which holders were fresh.
  struct Sent {
    std::string key;
    size_t want = 0, granted = 0, cap = 0;
    std::vector<uint64_t> fresh;
  };

  // Sends the keys due (every key each lease/3, after a failure, and as the
  // instance stops: then each as holding nothing), takes in the grants and
  // the others' counts, and lets go of the fresh holders past the cap. A
  // failed call is sent again in full at the next exchange (a lease may have
  // run out meanwhile).
  void Exchange(bool last) {
    std::vector<Sent> sent;
    {
      std::lock_guard lk(mu_);
      auto now = std::chrono::steady_clock::now();
      bool all = last || resend_all_ || now - renewed_ >= options_.lease / 3;  // leases renewed every lease/3
      if (all) renewed_ = now, resend_all_ = false;
      for (auto& [key, h] : held_) {
        if (!all && !h.due) continue;
        h.due = false;
        if (last) {
          sent.push_back({.key = key, .cap = h.cap});
        } else {
          sent.push_back({.key = key,
                          .want = h.holders.size(),
                          .granted = h.granted,
                          .cap = h.cap,
                          .fresh = std::vector<uint64_t>(h.fresh.begin(), h.fresh.end())});
        }
      }
    }
    std::vector<uint64_t> over;
    const std::string lease = std::to_string(options_.lease.count());
    for (size_t at = 0; at < sent.size(); at += kKeysPerCall) {
      size_t n = std::min(kKeysPerCall, sent.size() - at);
      std::vector<std::string> owned;
      owned.reserve(n * 4 + 1);
      std::vector<std::string_view> args{"EVAL", kExchangeScript, owned.emplace_back(std::to_string(n))};
      for (size_t i = at; i < at + n; ++i) args.push_back(owned.emplace_back(prefix_ + sent[i].key));
      args.push_back(instance_);
      args.push_back(lease);
      for (size_t i = at; i < at + n; ++i) {
        args.push_back(owned.emplace_back(std::to_string(sent[i].want)));
        args.push_back(owned.emplace_back(std::to_string(sent[i].granted)));
        args.push_back(owned.emplace_back(std::to_string(sent[i].cap)));
      }
      auto r = link_.Command(args);
      if (!r || r->elements.size() != n) {
        std::lock_guard lk(mu_);
        resend_all_ = true;
        break;
      }
      if (last) continue;
      std::lock_guard lk(mu_);
      for (size_t i = 0; i < n; ++i) {
        const RedisReply& answer = r->elements[i];
        if (answer.elements.size() != 2) continue;
        TakeIn(sent[at + i], static_cast<size_t>(std::max<int64_t>(0, answer.elements[0].integer)),
               static_cast<size_t>(std::max<int64_t>(0, answer.elements[1].integer)), over);
      }
    }
    if (!over.empty() && options_.on_over) options_.on_over(std::move(over));
  }

  // `granted` places for what `s` sent: its fresh holders still held become
  // granted, but for the newest past the grant, which are let go. Under mu_.
  void TakeIn(const Sent& s, size_t granted, size_t others, std::vector<uint64_t>& over) {
    auto it = held_.find(s.key);
    if (it == held_.end()) return;
    Held& h = it->second;
    h.others = others;
    std::vector<uint64_t> still;
    for (uint64_t f : s.fresh) {
      if (h.fresh.contains(f)) still.push_back(f);
    }
    size_t past = h.granted + still.size() > granted ? h.granted + still.size() - granted : 0;
    past = std::min(past, still.size());
    for (size_t i = still.size() - past; i < still.size(); ++i) {  // `s.fresh` is in order: the newest last
      h.holders.erase(still[i]);
      over.push_back(still[i]);
    }
    for (uint64_t f : still) h.fresh.erase(f);
    h.granted += still.size() - past;
    // Kept while the others hold some: what this instance decides with.
    if (h.holders.empty() && !h.due && granted == 0 && others == 0) held_.erase(it);
  }

  const Options options_;
  const std::string prefix_;    // <prefix>cap:<name>:
  const std::string instance_;  // this instance's field in each key's tally
  RedisLink link_;              // the exchanging thread's
  std::mutex mu_;
  std::map<std::string, Held, std::less<>> held_;
  bool resend_all_ = false;
  std::chrono::steady_clock::time_point renewed_ = std::chrono::steady_clock::now();  // every key sent
  Periodic exchange_;  // last: stops first (one last exchange), starts last
};

}  // namespace

std::unique_ptr<SharedCap> NewSharedCap(SharedCap::Options options) {
  return std::make_unique<Cap>(std::move(options));
}

}  // namespace smart::kv
