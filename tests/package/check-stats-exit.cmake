# cmake -DPROGRAM=<stats_workload> -P check-stats-exit.cmake
# STARMALLOC_STATS=1: the table printed at exit shows what the program kept (1000 blocks of
# 100 bytes in class 112, 10 large objects of 1 MiB) and every part of the table.
# Without the variable, or with STARMALLOC_STATS=0, nothing is printed.
execute_process(COMMAND ${CMAKE_COMMAND} -E env STARMALLOC_STATS=1 ${PROGRAM} exit
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "stats_workload exit failed (${rc}):\n${out}\n${err}")
endif()
message(STATUS "the table printed at exit:\n${err}")

foreach(expected
        "starmalloc: statistics of process [0-9]+ \\(StarMalloc [0-9.]+ hardening=[a-z]+ arenas=[0-9]+ size-classes=[^)]+\\)\n"
        "small objects by size class \\(classes never used are not shown\\):\n"
        "   class        slabs   slots in use       bytes in use  empty slabs  decommitted  quarantined\n"
        "\n   total +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+\n"
        "\nlarge objects: 10, 10485760 bytes \\(10.0 MiB\\)\n"
        "\nguard failures: 0\n"
        "\nslab guards: (guard markers|PROT_NONE mappings)\n"
        "\ncommitted memory: [0-9]+ bytes \\([0-9.]+ [KMG]iB\\) now, [0-9]+ bytes \\([0-9.]+ [KMG]iB\\) at peak\n")
  if(NOT err MATCHES "${expected}")
    message(FATAL_ERROR "the statistics at exit lack '${expected}'")
  endif()
endforeach()

# The class-112 row: slots in use at least the 1000 blocks kept, bytes = slots x 112.
if(NOT err MATCHES "\n +112 +([0-9]+) +([0-9]+) +([0-9]+) +[0-9]+ +[0-9]+ +[0-9]+\n")
  message(FATAL_ERROR "no row for size class 112")
endif()
set(slabs ${CMAKE_MATCH_1})
set(slots ${CMAKE_MATCH_2})
set(bytes ${CMAKE_MATCH_3})
math(EXPR expected_bytes "${slots} * 112")
if(slots LESS 1000 OR slots GREATER 1100 OR NOT bytes EQUAL expected_bytes OR slabs LESS 1)
  message(FATAL_ERROR "class 112: ${slabs} slabs, ${slots} slots, ${bytes} bytes; expected "
                      "1000..1100 slots of 112 bytes in at least one slab")
endif()
# Committed memory covers at least what is in use.
string(REGEX MATCH "committed memory: ([0-9]+) bytes [^,]*, ([0-9]+) bytes" _ "${err}")
set(committed ${CMAKE_MATCH_1})
set(peak ${CMAKE_MATCH_2})
math(EXPR in_use "${bytes} + 10485760")
if(committed LESS in_use OR peak LESS committed)
  message(FATAL_ERROR "committed ${committed}, peak ${peak}: less than the ${in_use} bytes in use")
endif()

foreach(setting "" "STARMALLOC_STATS=0" "STARMALLOC_STATS=")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=STARMALLOC_STATS ${setting} ${PROGRAM} exit
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR err MATCHES "starmalloc")
    message(FATAL_ERROR "with '${setting}' (${rc}), stderr must stay empty:\n${err}")
  endif()
endforeach()
