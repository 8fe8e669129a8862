# Runs PROGRAM with ARGS (a space-separated string) with PRELOAD in LD_PRELOAD; fails unless it
# exits with status 0 and, when EXPECT is not empty, its standard output matches EXPECT.
#   cmake -DPRELOAD=lib.so -DPROGRAM=prog "-DARGS=--scale 0.02" "-DEXPECT=^RESULT " -P smoke.cmake
separate_arguments(_args UNIX_COMMAND "${ARGS}")
execute_process(COMMAND ${CMAKE_COMMAND} -E env LD_PRELOAD=${PRELOAD} ${PROGRAM} ${_args}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
message("${_out}${_err}")
if(NOT _rc STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} ${ARGS} under LD_PRELOAD=${PRELOAD}: exit status '${_rc}'")
endif()
if(NOT EXPECT STREQUAL "" AND NOT _out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: no output line matching '${EXPECT}'")
endif()
