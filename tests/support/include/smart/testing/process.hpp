// Starts a child process with its stdout captured, for tests against the real binaries.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace smart::testing {

class Process {
 public:
  // argv[0] is the program path; `env` entries ("K=V") are added to the inherited environment.
  // Its stdout is read continuously by a thread of ours, so that a talkative
  // child never blocks on a full pipe.
  Process(std::vector<std::string> argv, std::vector<std::string> env = {});
  ~Process();  // SIGKILLs the child if it still runs.
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Waits until a line not yet returned contains `needle`; returns that line.
  std::optional<std::string> WaitForLine(const std::string& needle,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Everything read from stdout so far.
  std::string output() const;
  void Signal(int sig);
  // Waits for exit; returns the exit code, 128+signal, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Waits briefly for the rest of stdout (after exit).
  void Drain();

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;
  bool eof_ = false;
  size_t scanned_ = 0;
  std::optional<int> status_;
  std::thread reader_;
};

// A fresh directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs a command, returning its exit code and combined stdout+stderr.
std::pair<int, std::string> RunCommand(std::vector<std::string> argv, std::vector<std::string> env = {});

}  // namespace smart::testing
