#include "smart/core/thread_name.hpp"

#include <pthread.h>

#include <string>

namespace smart {

void NameThread(std::string_view name) {
  thread_local std::string current;
  std::string_view kept = name.substr(0, 15);
  if (current == kept) return;
  current = kept;
  pthread_setname_np(pthread_self(), current.c_str());
}

}  // namespace smart
