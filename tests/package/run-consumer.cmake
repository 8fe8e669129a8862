# Package tests: StarMalloc as its users get it. One step per run:
#   cmake -DSTEP=<step> -DBUILD_DIR=<StarMalloc build> -DPREFIX=<install prefix> -DWORK=<scratch>
#         -DSOURCE_DIR=<tests/package> -DLIBDIR=<lib dir, relative to the prefix> -DC_COMPILER=<cc>
#         -DVERSION=<x.y.z> -DHARDENING=.. -DARENAS=.. -DSIZE_CLASSES=.. [-DPKG_CONFIG=<pkg-config>]
#         [-DREADELF=<readelf>] -P run-consumer.cmake
# Steps:
#   install       cmake --install into an empty PREFIX; every documented file is there
#   find_package  the consumer project with CMAKE_PREFIX_PATH=PREFIX: both targets, built and run
#   build_tree    the consumer project with StarMalloc_DIR=BUILD_DIR (no install)
#   pkg_config    consumer.c compiled with `pkg-config --cflags --libs starmalloc` (and
#                 starmalloc-static) against PREFIX, and run
#   run           PREFIX/bin/starmalloc-run: --stats, exit status, the preloaded library, and
#                 a moved copy of the prefix
cmake_minimum_required(VERSION 3.20)

function(run_checked what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}): ${ARGN}\n--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  set(run_out "${out}" PARENT_SCOPE)
  set(run_err "${err}" PARENT_SCOPE)
endfunction()

# expect_consumer_ok(<label> <output>): the consumer said it was served by StarMalloc.
function(expect_consumer_ok label output)
  if(NOT output MATCHES "consumer: ok \\(StarMalloc ${VERSION} hardening=${HARDENING} arenas=${ARENAS} ")
    message(FATAL_ERROR "${label}: unexpected output:\n${output}")
  endif()
  message(STATUS "${label}: ${output}")
endfunction()

# consumer_project(<binary dir> <cmake -D args...>): configure, build and run tests/package/consumer.
function(consumer_project binary)
  file(REMOVE_RECURSE ${binary})
  run_checked("configuring the consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/consumer -B ${binary}
              -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=${C_COMPILER}
              -DEXPECT_HARDENING=${HARDENING} -DEXPECT_ARENAS=${ARENAS}
              "-DEXPECT_SIZE_CLASSES=${SIZE_CLASSES}" ${ARGN})
  foreach(line "StarMalloc_HARDENING=${HARDENING}" "StarMalloc_ARENAS=${ARENAS}"
          "StarMalloc ${VERSION} from ")
    string(FIND "${run_out}" "${line}" at)
    if(at LESS 0)
      message(FATAL_ERROR "configuring the consumer did not print '${line}':\n${run_out}")
    endif()
  endforeach()
  string(REGEX MATCH "-- StarMalloc [^\n]*\n-- StarMalloc_HARDENING[^\n]*\n-- StarMalloc_ARENAS[^\n]*\n-- StarMalloc_SIZE_CLASSES[^\n]*" summary "${run_out}")
  message(STATUS "consumer configured:\n${summary}")
  run_checked("building the consumer" ${CMAKE_COMMAND} --build ${binary})
  foreach(kind shared static)
    run_checked("running consumer_${kind}" ${binary}/consumer_${kind})
    expect_consumer_ok("consumer_${kind}" "${run_out}")
  endforeach()
endfunction()

if(STEP STREQUAL "install")
  file(REMOVE_RECURSE ${PREFIX})
  run_checked("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})
  foreach(file include/starmalloc.h ${LIBDIR}/libstarmalloc.so.${VERSION} ${LIBDIR}/libstarmalloc.a
          ${LIBDIR}/cmake/StarMalloc/StarMallocConfig.cmake
          ${LIBDIR}/cmake/StarMalloc/StarMallocConfigVersion.cmake
          ${LIBDIR}/cmake/StarMalloc/StarMallocTargets.cmake
          ${LIBDIR}/pkgconfig/starmalloc.pc ${LIBDIR}/pkgconfig/starmalloc-static.pc
          bin/starmalloc-run share/doc/StarMalloc/usage.md share/doc/StarMalloc/configuration.md)
    if(NOT EXISTS ${PREFIX}/${file})
      message(FATAL_ERROR "cmake --install did not install ${file}")
    endif()
  endforeach()
  # The SONAME chain: libstarmalloc.so -> .so.<major> -> .so.<version>.
  string(REGEX MATCH "^[0-9]+" major "${VERSION}")
  foreach(link libstarmalloc.so libstarmalloc.so.${major})
    if(NOT IS_SYMLINK ${PREFIX}/${LIBDIR}/${link})
      message(FATAL_ERROR "${LIBDIR}/${link} is not a symbolic link")
    endif()
  endforeach()
  if(READELF)
    run_checked("readelf" ${READELF} -d ${PREFIX}/${LIBDIR}/libstarmalloc.so.${VERSION})
    if(NOT run_out MATCHES "SONAME[^\n]*\\[libstarmalloc\\.so\\.${major}\\]")
      message(FATAL_ERROR "libstarmalloc.so.${VERSION} has no SONAME libstarmalloc.so.${major}:\n${run_out}")
    endif()
  endif()
  # The installed header says the version it is.
  file(READ ${PREFIX}/include/starmalloc.h header)
  string(REPLACE "." ";" parts "${VERSION}")
  list(GET parts 0 v_major)
  list(GET parts 1 v_minor)
  list(GET parts 2 v_patch)
  if(NOT header MATCHES "#define STARMALLOC_VERSION_MAJOR ${v_major}\n#define STARMALLOC_VERSION_MINOR ${v_minor}\n#define STARMALLOC_VERSION_PATCH ${v_patch}\n")
    message(FATAL_ERROR "the installed starmalloc.h does not say version ${VERSION}")
  endif()
  # The pkg-config files carry the prefix given at install time, not the configured one.
  file(READ ${PREFIX}/${LIBDIR}/pkgconfig/starmalloc.pc pc)
  string(FIND "${pc}" "\nprefix=${PREFIX}\n" at)
  if(at LESS 0)
    message(FATAL_ERROR "starmalloc.pc does not say prefix=${PREFIX}:\n${pc}")
  endif()
  message(STATUS "installed into ${PREFIX}")

elseif(STEP STREQUAL "find_package")
  consumer_project(${WORK}/find-package -DCMAKE_PREFIX_PATH=${PREFIX})

elseif(STEP STREQUAL "build_tree")
  # Only the build tree: the install prefix must not be found instead.
  consumer_project(${WORK}/build-tree -DStarMalloc_DIR=${BUILD_DIR} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)

elseif(STEP STREQUAL "pkg_config")
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "pkg-config was not found when StarMalloc was configured")
  endif()
  set(ENV{PKG_CONFIG_PATH} ${PREFIX}/${LIBDIR}/pkgconfig)
  unset(ENV{PKG_CONFIG_LIBDIR})
  run_checked("pkg-config --modversion" ${PKG_CONFIG} --modversion starmalloc)
  string(STRIP "${run_out}" modversion)
  if(NOT modversion STREQUAL VERSION)
    message(FATAL_ERROR "pkg-config --modversion starmalloc says '${modversion}', expected ${VERSION}")
  endif()
  file(REMOVE_RECURSE ${WORK}/pkg-config)
  file(MAKE_DIRECTORY ${WORK}/pkg-config)
  foreach(module starmalloc starmalloc-static)
    run_checked("pkg-config --cflags --libs ${module}" ${PKG_CONFIG} --cflags --libs ${module})
    string(STRIP "${run_out}" flags)
    message(STATUS "pkg-config --cflags --libs ${module}: ${flags}")
    separate_arguments(flags UNIX_COMMAND "${flags}")
    set(defines -DEXPECT_VERSION="${VERSION}" -DEXPECT_HARDENING="${HARDENING}" -DEXPECT_ARENAS="${ARENAS}")
    if(module STREQUAL "starmalloc-static")
      list(APPEND defines -DCONSUMER_STATIC)
    endif()
    set(exe ${WORK}/pkg-config/consumer-${module})
    run_checked("compiling with ${module}.pc" ${C_COMPILER} -std=gnu17 -O2 ${defines}
                ${SOURCE_DIR}/consumer/consumer.c -o ${exe} ${flags})
    # No rpath in the .pc file: the dynamic loader is told where the library is.
    run_checked("running consumer-${module}" ${CMAKE_COMMAND} -E env
                LD_LIBRARY_PATH=${PREFIX}/${LIBDIR} ${exe})
    expect_consumer_ok("consumer-${module} (pkg-config)" "${run_out}")
  endforeach()

elseif(STEP STREQUAL "run")
  set(run ${PREFIX}/bin/starmalloc-run)
  # --stats on the smallest program: the table appears on stderr.
  run_checked("starmalloc-run --stats true" ${run} --stats /bin/true)
  if(NOT run_err MATCHES "starmalloc: statistics of process [0-9]+ \\(StarMalloc ${VERSION} hardening=${HARDENING} "
     OR NOT run_err MATCHES "\ncommitted memory: [0-9]+ bytes")
    message(FATAL_ERROR "starmalloc-run --stats /bin/true printed no statistics:\n${run_err}")
  endif()
  message(STATUS "starmalloc-run --stats /bin/true:\n${run_err}")
  # Without --stats: no output of its own.
  run_checked("starmalloc-run true" ${run} /bin/true)
  if(run_err MATCHES "starmalloc")
    message(FATAL_ERROR "starmalloc-run /bin/true printed:\n${run_err}")
  endif()
  # A real interpreter, with a table that has size-class rows.
  # The system's interpreter first: a version-manager shim (pyenv) is a script that starts more
  # processes, each printing its own table.
  find_program(PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  find_program(PYTHON3 NAMES python3)
  if(PYTHON3)
    run_checked("starmalloc-run --stats python3" ${run} --stats ${PYTHON3} -c
                "d = {i: str(i) * 10 for i in range(100000)}\nprint(len(d))") # (no ';': run_checked splits on it)
    if(NOT run_out STREQUAL "100000\n" OR NOT run_err MATCHES "\n +[0-9]+ +[1-9][0-9]* +[1-9][0-9]* +[1-9]")
      message(FATAL_ERROR "starmalloc-run --stats python3: unexpected output:\n${run_out}\n${run_err}")
    endif()
    message(STATUS "starmalloc-run --stats python3:\n${run_err}")
  else()
    message(STATUS "python3 not found: the interpreter run is skipped")
  endif()
  # The preloaded library is the installed one, and the exit status is the program's.
  run_checked("starmalloc-run sh" ${run} /bin/sh -c "printf '%s' \"$LD_PRELOAD\"")
  file(REAL_PATH ${PREFIX}/${LIBDIR} real_libdir)
  string(REGEX MATCH "^[0-9]+" major "${VERSION}")
  if(NOT run_out STREQUAL "${real_libdir}/libstarmalloc.so.${major}")
    message(FATAL_ERROR "starmalloc-run preloads '${run_out}', expected ${real_libdir}/libstarmalloc.so.${major}")
  endif()
  execute_process(COMMAND ${run} /bin/sh -c "exit 3" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 3)
    message(FATAL_ERROR "starmalloc-run did not pass on the exit status 3 (got ${rc})")
  endif()
  execute_process(COMMAND ${run} RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err MATCHES "usage: starmalloc-run")
    message(FATAL_ERROR "starmalloc-run without a program: status ${rc}, '${err}'")
  endif()
  # A moved prefix still works: the script finds the library relative to itself.
  file(REMOVE_RECURSE ${WORK}/moved)
  file(COPY ${PREFIX}/ DESTINATION ${WORK}/moved)
  run_checked("moved starmalloc-run" ${WORK}/moved/bin/starmalloc-run /bin/sh -c "printf '%s' \"$LD_PRELOAD\"")
  file(REAL_PATH ${WORK}/moved/${LIBDIR} moved_libdir)
  if(NOT run_out STREQUAL "${moved_libdir}/libstarmalloc.so.${major}")
    message(FATAL_ERROR "the moved starmalloc-run preloads '${run_out}'")
  endif()
  run_checked("moved starmalloc-run --stats" ${WORK}/moved/bin/starmalloc-run --stats /bin/true)
  if(NOT run_err MATCHES "starmalloc: statistics")
    message(FATAL_ERROR "the moved starmalloc-run --stats printed no statistics:\n${run_err}")
  endif()
  file(REMOVE_RECURSE ${WORK}/moved)

else()
  message(FATAL_ERROR "unknown STEP '${STEP}'")
endif()
