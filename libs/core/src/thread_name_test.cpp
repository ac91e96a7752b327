#include "smart/core/thread_name.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <string>
#include <thread>

namespace smart {
namespace {

std::string CurrentName() {
  char buf[32] = {};
  pthread_getname_np(pthread_self(), buf, sizeof buf);
  return buf;
}

TEST(ThreadName, NamesTheCallingThreadKeepingFifteenBytes) {
  std::string first, renamed, again;
  std::thread([&] {
    NameThread("http-worker");
    first = CurrentName();
    NameThread("a-name-longer-than-fifteen");
    renamed = CurrentName();
    NameThread("http-worker");
    again = CurrentName();
  }).join();
  EXPECT_EQ(first, "http-worker");
  EXPECT_EQ(renamed, "a-name-longer-t");
  EXPECT_EQ(again, "http-worker");
}

}  // namespace
}  // namespace smart
