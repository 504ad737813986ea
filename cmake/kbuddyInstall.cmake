# Install rules (included by the top-level CMakeLists.txt when KBUDDY_INSTALL).
#
#   include/kbuddy.h, include/kbuddy_malloc.h
#   lib/libkbuddy.a                 kbuddy::kbuddy, pkg-config kbuddy
#   lib/libkbuddy_malloc.a          kbuddy::malloc, pkg-config kbuddy-malloc
#                                   (the kernel configuration: see the
#                                   top-level CMakeLists.txt)
#   lib/libkbuddy-malloc.so         the LD_PRELOAD library (hosted/), not for
#                                   linking: it replaces the process's malloc
#   lib/cmake/kbuddy/               kbuddyConfig.cmake, kbuddyConfigVersion.cmake,
#                                   kbuddyTargets.cmake
#   lib/pkgconfig/                  kbuddy.pc, kbuddy-malloc.pc
#   share/kbuddy/src, share/kbuddy/malloc
#                                   the sources, for kernels that compile them
#                                   with their own flags (a prebuilt x86-64
#                                   user-space archive is no use to a
#                                   -mcmodel=kernel or riscv64 build); found
#                                   through KBUDDY_CORE_SOURCES after
#                                   find_package, or pkg-config's srcdir.
include(CMakePackageConfigHelpers)

set(KBUDDY_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kbuddy)
set(KBUDDY_SHARE_DIR ${CMAKE_INSTALL_DATADIR}/kbuddy)

install(TARGETS kbuddy kbuddy_malloc EXPORT kbuddyTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/kbuddy.h ${PROJECT_SOURCE_DIR}/include/kbuddy_malloc.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT kbuddyTargets NAMESPACE kbuddy:: DESTINATION ${KBUDDY_CMAKE_DIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/ DESTINATION ${KBUDDY_SHARE_DIR}/src)
# The whole directory: kbuddy_malloc.c includes its parts (kbm_*.h) from beside it.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/malloc/ DESTINATION ${KBUDDY_SHARE_DIR}/malloc)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kbuddyConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kbuddyConfig.cmake
  INSTALL_DESTINATION ${KBUDDY_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR KBUDDY_SHARE_DIR)
# 1.x satisfies a request for 1.y with y <= x; the pointer size must match
# (a 32-bit build cannot use a 64-bit install).
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kbuddyConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kbuddyConfig.cmake ${PROJECT_BINARY_DIR}/kbuddyConfigVersion.cmake
        DESTINATION ${KBUDDY_CMAKE_DIR})

# pkg-config files hold absolute paths, and the prefix is only known at
# install time (cmake --install --prefix P, which `make install PREFIX=P`
# uses), so they are written then, into the build tree, and copied from
# there (DESTDIR staging still works: the paths name the final prefix).
foreach(pc kbuddy kbuddy-malloc)
  install(CODE "
    set(KBUDDY_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    set(KBUDDY_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(KBUDDY_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    set(KBUDDY_PC_SHAREDIR \"${KBUDDY_SHARE_DIR}\")
    foreach(d LIBDIR INCLUDEDIR SHAREDIR)
      if(NOT IS_ABSOLUTE \"\${KBUDDY_PC_\${d}}\")
        set(KBUDDY_PC_\${d} \"\\\${prefix}/\${KBUDDY_PC_\${d}}\")
      endif()
    endforeach()
    set(PROJECT_VERSION \"${PROJECT_VERSION}\")
    configure_file(\"${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in\" \"${PROJECT_BINARY_DIR}/${pc}.pc\" @ONLY)
  ")
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
