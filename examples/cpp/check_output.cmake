# Runs `PARENT WORKER` and checks its whole output: the lines math_parent_cpp
# must print, with ERROR_TEXT as the worker's error for factorial(-1).
# With -DWORKERS=N, runs `PARENT --workers N WORKER`, whose output ends with
# "pool: N workers, pids" and N distinct pids.
# cmake -DPARENT=... -DWORKER=... "-DERROR_TEXT=..." [-DWORKERS=N] -P check_output.cmake
foreach(var PARENT WORKER ERROR_TEXT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_output.cmake: ${var} is not set")
  endif()
endforeach()

set(flags)
if(DEFINED WORKERS)
  set(flags --workers ${WORKERS})
endif()
execute_process(COMMAND ${PARENT} ${flags} ${WORKER}
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
if(DEFINED WORKERS)
  string(LENGTH "${expected}" n)
  string(SUBSTRING "${out}" ${n} -1 pool)
  string(SUBSTRING "${out}" 0 ${n} out)
  set(pids_ok FALSE)
  if(pool MATCHES "^pool: ${WORKERS} workers, pids(( [1-9][0-9]*)+)\n$")
    string(STRIP "${CMAKE_MATCH_1}" pids)
    string(REPLACE " " ";" pids "${pids}")
    list(LENGTH pids count)
    list(REMOVE_DUPLICATES pids)
    list(LENGTH pids distinct)
    if(count EQUAL WORKERS AND distinct EQUAL WORKERS)
      set(pids_ok TRUE)
    endif()
  endif()
  if(NOT pids_ok)
    message(FATAL_ERROR "no line \"pool: ${WORKERS} workers, pids ...\" with ${WORKERS} distinct pids at the end of the output of ${PARENT} ${flags} ${WORKER}:\n${out}${pool}")
  endif()
endif()
if(NOT out STREQUAL expected)
  message(FATAL_ERROR "unexpected output of ${PARENT} ${WORKER}\n--- expected:\n${expected}--- got:\n${out}--- stderr:\n${err}")
endif()
message(STATUS "output as expected:\n${out}")
