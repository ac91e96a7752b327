// Development mode (`smartd --dev`, what `make run` starts): on an empty
// database an admin and a demo user with a funded balance are created and
// their credentials printed once; `--with-node` also runs a local smart-node.
#pragma once

#include <sys/types.h>

#include <string>

#include "smart/core/result.hpp"

namespace smart {
namespace auth {
class AuthService;
}
namespace ledger {
class Ledger;
}
namespace log {
class Logger;
}
}  // namespace smart

namespace smart::smartd {

inline constexpr const char* kDemoEmail = "demo@smart.local";
inline constexpr const char* kAdminEmail = "admin@smart.local";
inline constexpr const char* kNodeEmail = "node@smart.local";

// When no account exists yet: the admin, the demo user (100 USDC) and the
// dev node's operator (its stake); the passwords are printed once and the
// demo user's is also kept in <data_dir>/demo.password (0600) for scripts.
Result<void> FirstRun(auth::AuthService& auth, ledger::Ledger& ledger, const std::string& data_dir,
                      const std::string& url);

// Starts smart-node (next to smartd, else from PATH) as the dev node's
// operator, registering once (state in <data_dir>/dev-node.state), logging
// to <data_dir>/dev-node.log. Answers the child's pid.
Result<pid_t> StartDevNode(const std::string& data_dir, const std::string& url, log::Logger& logger);

}  // namespace smart::smartd
