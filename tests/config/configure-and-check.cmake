# cmake -DSOURCE=.. -DBINARY=.. -DARGS=<list> -DEXPECT_FAILURE=ON|OFF [-DEXPECT_REGEX=..] -P this
# EXPECT_FAILURE=ON: configuring must fail and print EXPECT_REGEX.
# EXPECT_FAILURE=OFF: configuring must succeed; then the size-class, arena and prefixed ABI
# tests are built and run in that configuration.
file(REMOVE_RECURSE ${BINARY})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -DCMAKE_BUILD_TYPE=Debug ${ARGS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(EXPECT_FAILURE)
  if(rc EQUAL 0)
    message(FATAL_ERROR "configuring with ${ARGS} succeeded; it must fail")
  endif()
  string(REGEX REPLACE "[ \n]+" " " err "${err}") # cmake wraps long messages
  if(NOT err MATCHES "${EXPECT_REGEX}")
    message(FATAL_ERROR "configuring with ${ARGS} failed without saying '${EXPECT_REGEX}':\n${err}")
  endif()
  file(REMOVE_RECURSE ${BINARY})
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring with ${ARGS} failed:\n${out}\n${err}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} -j 2
                        --target test_sizeclass test_arena test_abi_prefixed starmalloc
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building with ${ARGS} failed:\n${out}\n${err}")
endif()
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --output-on-failure -R "^(unit\\.sizeclass|unit\\.arena|abi\\.prefixed)$"
                WORKING_DIRECTORY ${BINARY} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "100% tests passed")
  message(FATAL_ERROR "tests with ${ARGS} failed:\n${out}\n${err}")
endif()
file(REMOVE_RECURSE ${BINARY})
