# starmalloc_warnings: the warning set every StarMalloc target compiles with.
add_library(starmalloc_warnings INTERFACE)
target_compile_options(starmalloc_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-align -Wformat=2 -Wundef
  $<$<COMPILE_LANGUAGE:C>:-Wstrict-prototypes -Wmissing-prototypes>
  $<$<BOOL:${STARMALLOC_WERROR}>:-Werror>)
