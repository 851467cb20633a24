#pragma once
// State dicts shared with Python's torch.save / torch.load.

#include "distill/io/state_dict.hpp"
