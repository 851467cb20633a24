#pragma once
// Backbones with named feature taps (ResNet, PP-LCNet, MobileNetV3) and their registry.

#include "distill/compose/backbone.hpp"
#include "distill/models/afd.hpp"
#include "distill/models/registry.hpp"
