// A cap on what each key holds at once (an account's open event
// connections), counted over every instance that uses the same Redis.
//
// Decisions stay in process: the caller admits a holder while its own count
// plus what the other instances were last heard to hold stays under the cap
// (Others). A thread exchanges, every `period`, the counts of the keys that
// changed or were asked about (and every key it knows, each lease/3, to
// renew its lease): one Lua call per 256 keys sets this instance's count in
// the key's shared tally and answers the others' total. The tally grants each instance at most what
// leaves the others' places under the cap, and never less than it was
// granted before: of two instances that both admitted past the cap within
// one period, the first to exchange keeps its holders and the other is told
// which of its newest, ungranted holders to let go (`on_over`: the caller
// closes them). The cap holds across instances, then, within about a period.
//
// Each instance's count is a lease (`lease`, renewed every lease/3): a
// crashed instance's places free themselves; a stopping one frees them at
// once. While Redis is away each instance caps on its own (with the others'
// last known counts) and, when it is back, lets go of what it admitted
// meanwhile past the cap.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace smart::kv {

class SharedCap {
 public:
  struct Options {
    std::string url;
    std::string prefix = "smart:";  // keys <prefix>cap:<name>:<key>
    std::string name;               // what is capped ("ws")
    std::chrono::milliseconds period{100};
    std::chrono::milliseconds lease{30000};
    // Holders admitted past the cap, to let go; called on the exchange
    // thread, outside the cap's lock (the callee may call Remove).
    std::function<void(std::vector<uint64_t>)> on_over;
  };
  // Frees this instance's places (one last exchange), then stops.
  virtual ~SharedCap() = default;

  // What the other instances hold for `key`, as last heard (0 before this
  // instance held any; heard of again at the next exchange). Thread-safe, as
  // are the rest.
  virtual size_t Others(std::string_view key) = 0;
  // Counts `holder` (a caller's id, growing: a higher one is newer) for `key`
  // under `cap`. The caller decided already (its count plus Others).
  virtual void Add(std::string_view key, uint64_t holder, size_t cap) = 0;
  // Forgets `holder` (a no-op for one unknown or already let go).
  virtual void Remove(std::string_view key, uint64_t holder) = 0;
};

std::unique_ptr<SharedCap> NewSharedCap(SharedCap::Options options);

}  // namespace smart::kv
