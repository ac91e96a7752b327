# Turns the file IN into a C++ source OUT defining smart::embedded::VAR.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT}
  "#include <string_view>\n"
  "namespace smart::embedded {\n"
  "static const unsigned char kData[] = {${bytes} 0};  // unsigned: UTF-8 bytes above 0x7f\n"
  "extern const std::string_view ${VAR};\n"
  "const std::string_view ${VAR}(reinterpret_cast<const char*>(kData), ${size});\n"
  "}\n")
