// One page of a listing: the items, and the cursor of the next page (none on the last).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace smart {

template <class T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next_cursor;
};

}  // namespace smart
