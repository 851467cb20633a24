# End-to-end test of the `distill` command on Fashion-MNIST (cmake -P, run by CTest):
# train a teacher, evaluate and export it, distil a student from it (KD), run inference on
# JPEG files, and check that mistakes on the command line are reported.
#   -DDISTILL=<binary> -DPREDICT=<examples/predict> -DSOURCE=<repository> -DWORK=<scratch folder>
#   -DPYTHON=<python with torch>

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(recipes ${SOURCE}/examples/recipes/fashion_mnist)
set(small -o DataLoader.Train.dataset.limit=512 -o DataLoader.Eval.dataset.limit=256 -o Global.epochs=1
          -o Global.print_batch_step=2)

function(distill expect_rc expect_regex)
  execute_process(COMMAND ${DISTILL} ${ARGN} WORKING_DIRECTORY ${SOURCE}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "distill ${shown}\n${out}${err}")
  if(NOT rc EQUAL expect_rc)
    message(FATAL_ERROR "exit code ${rc}, expected ${expect_rc}")
  endif()
  if(NOT "${out}${err}" MATCHES "${expect_regex}")
    message(FATAL_ERROR "output does not match '${expect_regex}'")
  endif()
endfunction()

distill(0 "commands:.*train.*eval.*infer.*export" --help)
distill(0 "Resume: -o Global.checkpoints" train --help)
distill(2 "usage: distill")
distill(1 "Global.epoch: unknown key.*epochs" train -c ${recipes}/teacher.json -o Global.epoch=1)
distill(1 "unknown command 'fit'" fit -c ${recipes}/teacher.json)
distill(0 "distill cache -c RECIPE.json --out DIR.*Global.teacher_cache=DIR" cache --help)
distill(1 "distill cache: --out DIR is required" cache -c ${recipes}/kd.json)
distill(1 "--views, --topk, --dtype and --shard-images: only for distill cache" train -c ${recipes}/kd.json --views 3)
distill(1 "option --dtype: expected float32 or float16, got 'int8'" cache -c ${recipes}/kd.json --out ${WORK}/c --dtype int8)
distill(1 "Arch.freeze_params_list: no frozen model to cache" cache -c ${recipes}/teacher.json --out ${WORK}/c)
distill(1 "none/manifest.json: no teacher cache here" train -c ${recipes}/kd.json -o Global.teacher_cache=${WORK}/none)

distill(0 "epoch 1/1 step [0-9]+/4 \\| CELoss_Teacher [0-9.]+ \\| loss [0-9.]+ \\| lr .* img/s \\| ETA.*eval epoch 1 \\| top1"
        train -c ${recipes}/teacher.json ${small} -o Global.output_dir=${WORK}/teacher)
foreach(file latest.pt best_model_student.pt metrics.jsonl training.svg)
  if(NOT EXISTS ${WORK}/teacher/${file})
    message(FATAL_ERROR "train did not write ${file}")
  endif()
endforeach()
distill(0 "evaluated Teacher on 256 images: top1 [0-9.]+ top5"
        eval -c ${recipes}/teacher.json ${small} -o Global.pretrained_model=${WORK}/teacher/latest.pt)
distill(0 "exported Teacher"
        export -c ${recipes}/teacher.json -o Global.pretrained_model=${WORK}/teacher/latest.pt --format state_dict
        --out ${WORK}/teacher.pt)
execute_process(COMMAND ${PYTHON} -c "import torch; d = torch.load('${WORK}/teacher.pt'); assert 'fc.weight' in d, list(d); print(len(d), 'tensors')"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "Python's torch.load cannot read the exported teacher")
endif()

# A YAML recipe (PyYAML's dump of teacher.json), with overrides in PaddleClas's spelling.
execute_process(COMMAND ${PYTHON} -c "import json, sys, yaml; yaml.safe_dump(json.load(open(sys.argv[1])), open(sys.argv[2], 'w'), sort_keys=False)"
                ${recipes}/teacher.json ${WORK}/teacher.yaml RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "could not write teacher.yaml")
endif()
distill(0 "epoch 1/1 step [0-9]+/4 \\| CELoss_Teacher.*eval epoch 1 \\| top1"
        train -c ${WORK}/teacher.yaml ${small} -o Global.output_dir=${WORK}/teacher_yaml -o Arch.models.0.Teacher.class_num=10
        -o Global.eval_during_train=True)

# The teacher-student pair: KD from the exported teacher. Four steps leave the teacher near
# chance, so the teacher check is shown failing at a threshold it cannot reach, then skipped.
distill(1 "teacher check: the frozen model 'Teacher' reaches top-1 [0-9.]+ on 256 evaluation images, below 0.9000.*Its weights: .*teacher.pt \\([0-9]+ tensors\\)"
        train -c ${recipes}/kd.json ${small} -o Global.output_dir=${WORK}/kd -o Global.teacher_check_min_top1=0.9
        -o Arch.models[0].Teacher.pretrained=${WORK}/teacher.pt)
distill(0 "loss_kldiv_Student_Teacher.*eval epoch 1 \\| top1.*agree_Teacher.*done: 1 epochs.*teacher Teacher: top-1"
        train -c ${recipes}/kd.json ${small} -o Global.output_dir=${WORK}/kd -o Global.teacher_check=false
        -o Arch.models[0].Teacher.pretrained=${WORK}/teacher.pt)

execute_process(COMMAND ${PYTHON} ${SOURCE}/tests/cli/make_images.py ${WORK}/images RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "could not write test images")
endif()
distill(0 "0_label9.jpg: [0-9] \\([A-Za-z/ -]+\\) [0-9.]+, "
        infer -c ${recipes}/kd.json -o Global.pretrained_model=${WORK}/kd/latest.pt -o Infer.infer_imgs=${WORK}/images
        --format text)
distill(1 "give the weights" infer -c ${recipes}/kd.json ${WORK}/images/0_label9.jpg)

# Deployment: the TorchScript export in Python and in examples/predict, against distill infer.
execute_process(COMMAND ${PYTHON} ${SOURCE}/tests/cli/deploy.py --distill ${DISTILL} --predict ${PREDICT}
                  --recipe ${recipes}/kd.json --weights ${WORK}/kd/latest.pt --images ${WORK}/images --work ${WORK}/deploy
                WORKING_DIRECTORY ${SOURCE} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tests/cli/deploy.py failed")
endif()
