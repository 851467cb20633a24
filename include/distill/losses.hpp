#pragma once
// Every distillation loss, functional and module form. Needs only libtorch.

#include "distill/losses/afd.hpp"
#include "distill/losses/ce.hpp"
#include "distill/losses/distance.hpp"
#include "distill/losses/dist.hpp"
#include "distill/losses/dkd.hpp"
#include "distill/losses/dml.hpp"
#include "distill/losses/kd.hpp"
#include "distill/losses/mgd.hpp"
#include "distill/losses/pefd.hpp"
#include "distill/losses/topk.hpp"
#include "distill/losses/rkd.hpp"
#include "distill/losses/skd.hpp"
#include "distill/losses/wsl.hpp"
