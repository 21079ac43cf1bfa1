# C++ programs against multifrost.hpp: msgpack-cxx (header-only) plus the
# shared library. Included by examples/cpp and tests/cpp (each directory
# includes it for its own variables; the checks run once).
#
# Sets MF_CPP_AVAILABLE. Without msgpack-cxx the C++ parts are skipped with a
# warning, so C-only builds (make demo) need nothing more; configure with
# -DMF_REQUIRE_CPP=ON (as the test run should) to make that an error instead.
option(MF_REQUIRE_CPP "Fail the configure step when the C++ wrapper's dependencies are missing" OFF)

# mf_cpp_missing(<what>): report a missing dependency of the C++ parts.
function(mf_cpp_missing what)
  if(MF_REQUIRE_CPP)
    message(FATAL_ERROR "C++ wrapper: ${what}")
  endif()
  get_property(warned GLOBAL PROPERTY "MF_CPP_WARNED ${what}")
  if(NOT warned)
    set_property(GLOBAL PROPERTY "MF_CPP_WARNED ${what}" ON)
    message(WARNING "C++ wrapper: ${what}; its examples and tests are skipped")
  endif()
endfunction()

find_path(MF_MSGPACK_INCLUDE_DIR msgpack.hpp)
if(MF_MSGPACK_INCLUDE_DIR)
  set(MF_CPP_AVAILABLE ON)
else()
  set(MF_CPP_AVAILABLE OFF)
  mf_cpp_missing("msgpack-cxx not found (Debian/Ubuntu: apt-get install libmsgpack-cxx-dev)")
endif()

# Warnings of the wrapper count: -I (not -isystem) for include/, and -pedantic.
set(MF_CXX_WARNINGS -Wall -Wextra -Werror -pedantic)

# mf_cpp_program(<name> <sources>...): a C++17 program linked against the
# shared library, with MSGPACK_NO_BOOST (msgpack-cxx needs no Boost here).
function(mf_cpp_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE multifrost Threads::Threads)
  target_include_directories(${name} SYSTEM PRIVATE ${MF_MSGPACK_INCLUDE_DIR})
  target_compile_definitions(${name} PRIVATE MSGPACK_NO_BOOST)
  target_compile_options(${name} PRIVATE ${MF_CXX_WARNINGS})
  set_target_properties(${name} PROPERTIES
    CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    NO_SYSTEM_FROM_IMPORTED ON BUILD_RPATH ${MF_LIB_DIR})
endfunction()
