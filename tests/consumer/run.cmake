# Builds and runs tests/consumer against distill as a consumer would get it (cmake -P script,
# run by CTest). The consumer project compiles without optimisation (no build type): it checks
# the packaging and the API, and -O0 halves its compile time (measured 38 s against 75 s for
# main.cpp); its runs take seconds either way. MODE=package installs the build tree DISTILL_BINARY_DIR into a scratch
# prefix and uses find_package; MODE=fetchcontent packs the sources into an archive and uses
# FetchContent.
function(run)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${DISTILL_SOURCE_DIR} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " shown "${ARGN}")
    message(FATAL_ERROR "command failed (${rc}): ${shown}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# The README's extension example: the C++ block after "<!-- extension-example -->".
file(READ ${DISTILL_SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "<!-- extension-example -->" start)
if(start EQUAL -1)
  message(FATAL_ERROR "README.md has no <!-- extension-example --> block")
endif()
string(SUBSTRING "${readme}" ${start} -1 readme)
string(FIND "${readme}" "```cpp\n" open)
math(EXPR open "${open} + 7")
string(SUBSTRING "${readme}" ${open} -1 readme)
string(FIND "${readme}" "```" close)
string(SUBSTRING "${readme}" 0 ${close} example)
file(WRITE ${WORK_DIR}/extension.cpp "${example}")
set(configure -S ${DISTILL_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/build -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE= -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DTorch_DIR=${Torch_DIR} -DSUPPORT_DIR=${DISTILL_SOURCE_DIR}/tests/support -DEXTENSION_SOURCE=${WORK_DIR}/extension.cpp)
if(MODE STREQUAL "package")
  run(${CMAKE_COMMAND} --install ${DISTILL_BINARY_DIR} --prefix ${WORK_DIR}/prefix)
  list(APPEND configure -DDISTILL_VIA=package -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  run(${CMAKE_COMMAND} -E tar czf ${WORK_DIR}/distill.tar.gz -- CMakeLists.txt cmake include src)
  list(APPEND configure -DDISTILL_VIA=fetchcontent -DDISTILL_ARCHIVE=${WORK_DIR}/distill.tar.gz)
endif()
run(${CMAKE_COMMAND} ${configure})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
if(NOT MODE STREQUAL "package")
  run(${WORK_DIR}/build/engine_main train --help)
  return()
endif()
run(${WORK_DIR}/build/consumer ${FIXTURE} ${DISTILL_SOURCE_DIR}/examples/recipes)
execute_process(COMMAND ${WORK_DIR}/build/extension WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the README's extension example failed (${rc})")
endif()
string(FIND "${out}" "| CosineLoss_Student_Teacher " found)
string(FIND "${out}" "Loss.Train[1].DistillationCosineLoss.scael: unknown key" refused)
if(found EQUAL -1 OR refused EQUAL -1)
  message(FATAL_ERROR "the README's extension example did not log its terms and the refused key")
endif()
