# Install rules and package files: what `cmake --install` puts under the prefix (GNUInstallDirs
# layout), and the same package exported from the build tree.
#
#   include/starmalloc.h                        the prefixed API, statistics, version
#   lib/libstarmalloc.so.<version> (+ .so.<major> SONAME link, .so)   overrides malloc
#   lib/libstarmalloc.a                          the same, self-contained, for static linking
#   lib/cmake/StarMalloc/StarMallocConfig.cmake (+ ConfigVersion, Targets)
#       find_package(StarMalloc): StarMalloc::starmalloc, StarMalloc::starmalloc-static and
#       StarMalloc_HARDENING, StarMalloc_ARENAS, StarMalloc_SIZE_CLASSES, ...
#   lib/pkgconfig/starmalloc.pc, starmalloc-static.pc
#   bin/starmalloc-run                           runs a program with the library preloaded
#   share/doc/StarMalloc/                        README and user documentation
include(CMakePackageConfigHelpers)

set(STARMALLOC_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/StarMalloc CACHE STRING
    "Where StarMallocConfig.cmake is installed, relative to the prefix")
mark_as_advanced(STARMALLOC_INSTALL_CMAKEDIR)

install(TARGETS starmalloc starmalloc-static EXPORT StarMallocTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_SOURCE_DIR}/shim/include/starmalloc.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)

# --- find_package(StarMalloc) ---------------------------------------------------------------
# The build's configuration, as variables of the package (see cmake/StarMallocConfig.cmake.in).
string(STRIP "${STARMALLOC_EFFECTIVE_POLICIES}" _sm_policies)
string(REPLACE " " ";" STARMALLOC_POLICY_LIST "${_sm_policies}")

write_basic_package_version_file(${PROJECT_BINARY_DIR}/StarMallocConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)

# Installed: every path relative to the config file, so the prefix can move.
set(STARMALLOC_RUN_PATH ${CMAKE_INSTALL_BINDIR}/starmalloc-run)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/StarMallocConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/StarMallocConfig.cmake
                              INSTALL_DESTINATION ${STARMALLOC_INSTALL_CMAKEDIR}
                              PATH_VARS STARMALLOC_RUN_PATH)
install(EXPORT StarMallocTargets NAMESPACE StarMalloc:: DESTINATION ${STARMALLOC_INSTALL_CMAKEDIR}
        FILE StarMallocTargets.cmake COMPONENT development)
install(FILES ${PROJECT_BINARY_DIR}/package/StarMallocConfig.cmake
              ${PROJECT_BINARY_DIR}/StarMallocConfigVersion.cmake
        DESTINATION ${STARMALLOC_INSTALL_CMAKEDIR} COMPONENT development)

# Build tree: find_package(StarMalloc) with StarMalloc_DIR=<build dir> (or the build directory
# in CMAKE_PREFIX_PATH) uses the libraries where they were built.
set(STARMALLOC_RUN_PATH shim/starmalloc-run)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/StarMallocConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/StarMallocConfig.cmake
                              INSTALL_DESTINATION ${PROJECT_BINARY_DIR}
                              INSTALL_PREFIX ${PROJECT_BINARY_DIR}
                              PATH_VARS STARMALLOC_RUN_PATH)
export(EXPORT StarMallocTargets NAMESPACE StarMalloc:: FILE ${PROJECT_BINARY_DIR}/StarMallocTargets.cmake)

# --- pkg-config ------------------------------------------------------------------------------
# The prefix is written at install time, so `cmake --install --prefix <dir>` gets a right file.
# Configure time fills in everything else and leaves @CMAKE_INSTALL_PREFIX@ for install time.
function(_sm_pkg_config name description libs)
  set(SM_PC_NAME ${name})
  set(SM_PC_DESCRIPTION "${description}")
  set(SM_PC_PREFIX "@CMAKE_INSTALL_PREFIX@")
  foreach(_dir LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
      set(SM_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
    else()
      set(SM_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
    endif()
  endforeach()
  set(SM_PC_LIBS "${libs}")
  set(_stage ${PROJECT_BINARY_DIR}/package/${name}.pc)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/starmalloc.pc.in ${_stage}.in @ONLY)
  install(CODE "configure_file(\"${_stage}.in\" \"${_stage}\" @ONLY)" COMPONENT development)
  install(FILES ${_stage} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)
endfunction()
_sm_pkg_config(starmalloc "${PROJECT_DESCRIPTION}: linking it replaces malloc & co."
               "-L\${libdir} -lstarmalloc")
_sm_pkg_config(starmalloc-static
               "${PROJECT_DESCRIPTION}, static: linking it replaces malloc & co. in the program"
               "-Wl,--undefined=malloc \${libdir}/libstarmalloc.a -pthread")

# --- starmalloc-run --------------------------------------------------------------------------
# Finds the library relative to its own location when both directories are relative to the
# prefix (a relocatable install), else by the absolute library directory.
if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(_sm_run_libdir "${CMAKE_INSTALL_FULL_LIBDIR}")
else()
  file(RELATIVE_PATH _sm_bin_to_lib /prefix/${CMAKE_INSTALL_BINDIR} /prefix/${CMAKE_INSTALL_LIBDIR})
  set(_sm_run_libdir
      "$(CDPATH= cd -- \"$(dirname -- \"$(readlink -f -- \"$0\" 2>/dev/null || printf '%s' \"$0\")\")/${_sm_bin_to_lib}\" && pwd -P)")
endif()
set(STARMALLOC_RUN_LIBRARY "${_sm_run_libdir}/$<TARGET_SONAME_FILE_NAME:starmalloc>")
configure_file(${PROJECT_SOURCE_DIR}/shim/starmalloc-run.in
               ${PROJECT_BINARY_DIR}/package/starmalloc-run.configured @ONLY)
file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/package/starmalloc-run
     INPUT ${PROJECT_BINARY_DIR}/package/starmalloc-run.configured)
install(PROGRAMS ${PROJECT_BINARY_DIR}/package/starmalloc-run DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT runtime)

install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/usage.md
              ${PROJECT_SOURCE_DIR}/docs/configuration.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT development)
