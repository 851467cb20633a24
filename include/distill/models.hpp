#pragma once
// Backbones with named feature taps (ResNet, Res2Net, PP-LCNet, PP-HGNet, MobileNetV3, ConvNet), AFD's linear
// transforms, and the registry they enter by name. Needs only libtorch.

#include "distill/compose/backbone.hpp"
#include "distill/models/afd.hpp"
#include "distill/models/convnet.hpp"
#include "distill/models/mobilenet_v3.hpp"
#include "distill/models/pp_hgnet.hpp"
#include "distill/models/pp_lcnet.hpp"
#include "distill/models/registry.hpp"
#include "distill/models/res2net.hpp"
#include "distill/models/resnet.hpp"
