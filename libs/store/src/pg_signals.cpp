// Signals between processes sharing a PostgreSQL database: LISTEN/NOTIFY on
// a connection of their own, served by one thread that also sends the
// signals asked for (coalesced: those asked while one is sent go as one).
#include "pg_signals.hpp"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "smart/core/thread_name.hpp"

namespace smart::store::detail {
namespace {

bool ValidChannel(std::string_view c) {
  return !c.empty() && c.size() <= 63 &&
         std::all_of(c.begin(), c.end(), [](char ch) { return (ch >= 'a' && ch <= 'z') || ch == '_'; });
}

}  // namespace

class PgSignals::Handle final : public Database::Listening {
 public:
  Handle(PgSignals& owner, uint64_t id) : owner_(owner), id_(id) {}
  ~Handle() override { owner_.Forget(id_); }

 private:
  PgSignals& owner_;
  uint64_t id_;
};

PgSignals::PgSignals(std::string url) : url_(std::move(url)) {}

PgSignals::~PgSignals() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) {
    Poke();
    thread_.join();
  }
  if (wake_fd_ >= 0) close(wake_fd_);
}

void PgSignals::Signal(std::string_view channel) {
  if (!ValidChannel(channel)) return;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    to_send_.insert(std::string(channel));
    StartLocked();
  }
  Poke();
}

std::unique_ptr<Database::Listening> PgSignals::Listen(std::string channel, std::function<void()> fn) {
  if (!ValidChannel(channel)) return nullptr;
  uint64_t id;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return nullptr;
    id = next_id_++;
    listeners_.push_back({id, std::move(channel), std::move(fn)});
    StartLocked();
  }
  Poke();  // the thread listens on the new channel
  return std::make_unique<Handle>(*this, id);
}

void PgSignals::Forget(uint64_t id) {
  std::lock_guard calls(call_mu_);  // no call of it is in progress once this is held
  std::lock_guard lk(mu_);
  std::erase_if(listeners_, [id](const Listener& l) { return l.id == id; });
}

void PgSignals::StartLocked() {
  if (thread_.joinable()) return;
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] {
    NameThread("pg-signals");
    Run();
  });
}

void PgSignals::Poke() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

void PgSignals::Call(std::string_view channel, const std::set<std::string>& listening) {
  std::lock_guard calls(call_mu_);
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard lk(mu_);
    for (auto& l : listeners_) {
      if (channel.empty() ? !l.called && listening.count(l.channel) : l.channel == channel) {
        l.called = true;
        fns.push_back(l.fn);
      }
    }
  }
  for (auto& fn : fns) fn();
}

void PgSignals::Run() {
  auto backoff = std::chrono::milliseconds(100);
  // Before connecting again after a failure: a pause that grows (a stop request cuts it short).
  auto pause = [&] {
    pollfd wake{wake_fd_, POLLIN, 0};
    (void)poll(&wake, 1, static_cast<int>(backoff.count()));
    uint64_t drained;
    (void)!read(wake_fd_, &drained, sizeof drained);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  };
  while (true) {
    {
      std::lock_guard lk(mu_);
      if (stopping_) return;
    }
    // The URL as a connection string, with a bound on a connect that hangs
    // (stopping waits for it), named for pg_stat_activity.
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {url_.c_str(), "5", "smart-signals", nullptr};
    PGconn* conn = PQconnectdbParams(keys, values, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
      PQfinish(conn);
      pause();
      continue;
    }
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);
    const int own_pid = PQbackendPID(conn);
    std::set<std::string> listening;
    {
      std::lock_guard lk(mu_);
      for (auto& l : listeners_) l.called = false;  // signals may have been missed: each is called once more
    }
    bool failed = false;
    while (!failed && PQstatus(conn) == CONNECTION_OK) {
      std::set<std::string> want, send;
      {
        std::lock_guard lk(mu_);
        if (stopping_) break;
        for (const auto& l : listeners_) want.insert(l.channel);
        send.swap(to_send_);
      }
      for (const auto& c : want) {
        if (listening.count(c)) continue;
        PGresult* r = PQexec(conn, ("LISTEN " + c).c_str());
        failed = failed || PQresultStatus(r) != PGRES_COMMAND_OK;
        PQclear(r);
        if (!failed) listening.insert(c);
      }
      for (const auto& c : send) {
        PGresult* r = PQexec(conn, ("NOTIFY " + c).c_str());
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
          failed = true;
          std::lock_guard lk(mu_);
          to_send_.insert(c);  // sent again once reconnected
        }
        PQclear(r);
      }
      if (failed) break;  // a statement refused (a standby refuses NOTIFY) or the connection lost
      backoff = std::chrono::milliseconds(100);
      // Listening now: whatever was signalled before may have been missed.
      Call("", listening);
      if (PQconsumeInput(conn) != 1) break;
      while (PGnotify* n = PQnotifies(conn)) {
        std::string channel = n->relname;
        bool own = n->be_pid == own_pid;  // sent from here: this process knows
        PQfreemem(n);
        if (!own) Call(channel);
      }
      pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      if (poll(fds, 2, 1000) < 0 && errno != EINTR) break;
      if (fds[1].revents & POLLIN) {
        uint64_t drained;
        (void)!read(wake_fd_, &drained, sizeof drained);
      }
    }
    PQfinish(conn);
    if (failed) pause();
  }
}

}  // namespace smart::store::detail
