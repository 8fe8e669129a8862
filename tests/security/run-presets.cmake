# cmake -DSOURCE=<project> -DBINARY=<dir> -DPRESETS=none,light,... [-DC_COMPILER=..]
#       [-DCXX_COMPILER=..] [-DGENERATOR=..] [-DSIZE_CLASSES=a,b,..] [-DARENAS=n] [-DWERROR=ON|OFF]
#       [-DPOLICIES=P1,P2,..] [-DJOBS=n] -P run-presets.cmake
#
# For each hardening preset: configures the project in <dir>/<preset> (Release, no benchmarks,
# every per-policy override cleared so the preset alone decides), builds only what the security
# tests need (libstarmalloc.so and the driver), and runs `ctest -L '^security$'` there. Every
# preset is run even when an earlier one fails; the script fails at the end when any did,
# naming them. The build trees are kept, so a rerun only rebuilds what changed.
cmake_minimum_required(VERSION 3.20)

foreach(_required SOURCE BINARY PRESETS)
  if(NOT DEFINED ${_required})
    message(FATAL_ERROR "run-presets.cmake: -D${_required}=... is required")
  endif()
endforeach()
if(NOT DEFINED JOBS)
  cmake_host_system_information(RESULT JOBS QUERY NUMBER_OF_LOGICAL_CORES)
  if(NOT JOBS OR JOBS LESS 1)
    set(JOBS 2)
  endif()
endif()

string(REPLACE "," ";" _presets "${PRESETS}")
set(_common_args -DCMAKE_BUILD_TYPE=Release -DSTARMALLOC_BUILD_BENCHMARKS=OFF -DSTARMALLOC_BUILD_TESTS=ON)
if(DEFINED C_COMPILER AND NOT C_COMPILER STREQUAL "")
  list(APPEND _common_args -DCMAKE_C_COMPILER=${C_COMPILER})
endif()
if(DEFINED CXX_COMPILER AND NOT CXX_COMPILER STREQUAL "")
  list(APPEND _common_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(DEFINED SIZE_CLASSES AND NOT SIZE_CLASSES STREQUAL "")
  list(APPEND _common_args -DSTARMALLOC_SIZE_CLASSES=${SIZE_CLASSES})
endif()
if(DEFINED ARENAS AND NOT ARENAS STREQUAL "")
  list(APPEND _common_args -DSTARMALLOC_ARENAS=${ARENAS})
endif()
if(DEFINED WERROR AND NOT WERROR STREQUAL "")
  list(APPEND _common_args -DSTARMALLOC_WERROR=${WERROR})
endif()
if(DEFINED POLICIES)
  string(REPLACE "," ";" _policies "${POLICIES}")
  foreach(_p IN LISTS _policies)
    list(APPEND _common_args "-DSTARMALLOC_${_p}=")
  endforeach()
endif()

set(_failed "")
foreach(_preset IN LISTS _presets)
  set(_dir ${BINARY}/${_preset})
  set(_generator_args "")
  if(DEFINED GENERATOR AND NOT GENERATOR STREQUAL "" AND NOT EXISTS ${_dir}/CMakeCache.txt)
    set(_generator_args -G "${GENERATOR}")
  endif()
  message(STATUS "security.presets: ${_preset}: configuring in ${_dir}")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${_dir} ${_generator_args} ${_common_args}
                          -DSTARMALLOC_HARDENING=${_preset}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(STATUS "security.presets: ${_preset}: configuring FAILED:\n${out}\n${err}")
    list(APPEND _failed "${_preset} (configure)")
    continue()
  endif()
  string(REGEX MATCH "StarMalloc policies:[^\n]*" _policy_line "${out}")
  message(STATUS "security.presets: ${_preset}: ${_policy_line}")

  execute_process(COMMAND ${CMAKE_COMMAND} --build ${_dir} -j ${JOBS} --target starmalloc security_attack
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(STATUS "security.presets: ${_preset}: building FAILED:\n${out}\n${err}")
    list(APPEND _failed "${_preset} (build)")
    continue()
  endif()

  # '^security$': the label of the per-build tests only (a plain 'security' regex would also
  # select this very test, security-presets, in the nested tree).
  execute_process(COMMAND ${CMAKE_CTEST_COMMAND} -L "^security$" --output-on-failure -j ${JOBS}
                  WORKING_DIRECTORY ${_dir} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCH "[0-9]+% tests passed[^\n]*" _summary "${out}")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "100% tests passed")
    message(STATUS "security.presets: ${_preset}: tests FAILED (${_summary}):\n${out}\n${err}")
    list(APPEND _failed "${_preset} (tests)")
    continue()
  endif()
  message(STATUS "security.presets: ${_preset}: ${_summary}")
endforeach()

if(_failed)
  string(REPLACE ";" ", " _failed "${_failed}")
  message(FATAL_ERROR "security.presets: failed for: ${_failed}")
endif()
message(STATUS "security.presets: every preset passed its security tests (${PRESETS})")
