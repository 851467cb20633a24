# Builds and runs tests/consumer against distill as a consumer would get it (cmake -P script,
# run by CTest). MODE=package installs the build tree DISTILL_BINARY_DIR into a scratch
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
set(configure -S ${DISTILL_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/build -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DTorch_DIR=${Torch_DIR} -DSUPPORT_DIR=${DISTILL_SOURCE_DIR}/tests/support)
if(MODE STREQUAL "package")
  run(${CMAKE_COMMAND} --install ${DISTILL_BINARY_DIR} --prefix ${WORK_DIR}/prefix)
  list(APPEND configure -DDISTILL_VIA=package -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  run(${CMAKE_COMMAND} -E tar czf ${WORK_DIR}/distill.tar.gz -- CMakeLists.txt cmake include)
  list(APPEND configure -DDISTILL_VIA=fetchcontent -DDISTILL_ARCHIVE=${WORK_DIR}/distill.tar.gz)
endif()
run(${CMAKE_COMMAND} ${configure})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer ${FIXTURE} ${DISTILL_SOURCE_DIR}/examples/recipes)
