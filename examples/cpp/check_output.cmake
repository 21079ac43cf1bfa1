# Runs `PARENT WORKER` and checks its whole output: the lines math_parent_cpp
# must print, with ERROR_TEXT as the worker's error for factorial(-1).
# cmake -DPARENT=... -DWORKER=... "-DERROR_TEXT=..." -P check_output.cmake
foreach(var PARENT WORKER ERROR_TEXT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_output.cmake: ${var} is not set")
  endif()
endforeach()

execute_process(COMMAND ${PARENT} ${WORKER}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc TIMEOUT 25)

set(expected "add(1, 2) = 3
multiply(6, 7) = 42
factorial(10) = 3628800
factorial(-1) failed: ${ERROR_TEXT}
echo(\"héllo ✓\") = \"héllo ✓\"
transport: link
")

if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "${PARENT} ${WORKER} exited with ${rc}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(NOT out STREQUAL expected)
  message(FATAL_ERROR "unexpected output of ${PARENT} ${WORKER}\n--- expected:\n${expected}--- got:\n${out}--- stderr:\n${err}")
endif()
message(STATUS "output as expected:\n${out}")
