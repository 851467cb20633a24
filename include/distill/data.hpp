#pragma once
// Data: image-list and Fashion-MNIST datasets, the reference's transforms, a threaded loader.
// Needs libjpeg-turbo and zlib: link distill::engine.

#include "distill/data/datasets.hpp"
#include "distill/data/loader.hpp"
#include "distill/data/transforms.hpp"
