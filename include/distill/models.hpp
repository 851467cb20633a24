#pragma once
// Backbones with named feature taps (ResNet, PP-LCNet, MobileNetV3) and their registry.

#include "distill/models/backbone.hpp"
#include "distill/models/registry.hpp"
