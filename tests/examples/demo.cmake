# The main job, shortened (cmake -P, run by CTest): 256 training and 256 test images, one epoch,
# two seeds, two runs at a time. The first run trains the teacher and makes its cache; the
# second reuses both; each writes results.md, results.json and results.svg.
#   -DDEMO=<examples/fashion_mnist_demo> -DWORK=<scratch folder>

file(REMOVE_RECURSE ${WORK})
set(common --epochs 1 --teacher-epochs 1 --train-limit 256 --test-limit 256 --seeds 0,1 --jobs 2 --no-teacher-check
           --teacher ${WORK}/teacher --output ${WORK}/runs --report ${WORK}/report)

function(demo expect_regex)
  execute_process(COMMAND ${DEMO} ${common} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "fashion_mnist_demo\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "exit code ${rc}")
  endif()
  if(NOT "${out}" MATCHES "${expect_regex}")
    message(FATAL_ERROR "output does not match '${expect_regex}'")
  endif()
endfunction()

set(table "baseline .*kd .*dkd .*dist .*dml .*results.md")
demo("teacher: trained once into .*teacher cache in .*10 student runs, 2 at a time.*${table}")
demo("teacher: reusing the finished training in .*is complete already.*${table}")

file(READ ${WORK}/report/results.md md)
foreach(row "| teacher | " "| baseline | " "| kd | " "| dkd | " "| dist | " "| dml | " "Against the goals" "closes")
  string(FIND "${md}" "${row}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "results.md lacks '${row}':\n${md}")
  endif()
endforeach()
file(READ ${WORK}/report/results.json json)
string(JSON seeds LENGTH "${json}" methods kd top1)
string(JSON reused GET "${json}" teacher_trained)
if(NOT seeds EQUAL 2 OR NOT reused STREQUAL "OFF")
  message(FATAL_ERROR "results.json: ${seeds} kd runs (expected 2), teacher_trained ${reused} (expected false)")
endif()
foreach(seed 0 1)
  if(NOT EXISTS ${WORK}/runs/seed${seed}/kd/best_model_student.pt OR NOT EXISTS ${WORK}/runs/seed${seed}/kd/train.log)
    message(FATAL_ERROR "seed ${seed}: the KD run left no weights or log")
  endif()
endforeach()
