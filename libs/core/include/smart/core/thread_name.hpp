// Thread names, as top -H, ps -L, perf and gdb show them.
#pragma once

#include <string_view>

namespace smart {

// Names the calling thread (Linux keeps the first 15 bytes). Cheap when the
// thread already has this name, so a pool's task may call it every time.
void NameThread(std::string_view name);

}  // namespace smart
