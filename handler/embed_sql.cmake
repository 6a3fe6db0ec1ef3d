# Generates migrations.cpp: every sql/NNN_*.sql embedded in order, so the
# binary can migrate a database without finding files at run time.
file(GLOB files "${SQL_DIR}/[0-9][0-9][0-9]_*.sql")
list(SORT files)
set(body "")
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME)
  string(SUBSTRING "${name}" 0 3 version)
  # "008" is not a C++ number (a leading 0 means octal): 8.
  string(REGEX REPLACE "^0+([0-9])" "\\1" version "${version}")
  file(READ "${f}" sql)
  string(APPEND body "    {${version}, \"${name}\", R\"ipayout_sql(${sql})ipayout_sql\"},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from sql/ by embed_sql.cmake. Do not edit.\n#include \"migrations.h\"\n\nnamespace ipayout {\n\nconst std::vector<Migration>& migrations() {\n  static const std::vector<Migration> all = {\n${body}  };\n  return all;\n}\n\n}  // namespace ipayout\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
