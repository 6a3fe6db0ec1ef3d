// The SQL migrations from sql/, embedded at build time (embed_sql.cmake).
#pragma once

#include <string>
#include <vector>

namespace ipayout {

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

const std::vector<Migration>& migrations();

}  // namespace ipayout
