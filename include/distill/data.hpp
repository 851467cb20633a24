#pragma once
// Data: image-list and Fashion-MNIST datasets, the reference's transforms, a threaded loader.
// Compiled into distill::engine: link it.

#include "distill/data/augment.hpp"
#include "distill/data/datasets.hpp"
#include "distill/data/image_io.hpp"
#include "distill/data/loader.hpp"
#include "distill/data/transforms.hpp"
