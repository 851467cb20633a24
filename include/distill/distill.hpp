#pragma once
// Umbrella header: the whole distill library.

#include "distill/core/error.hpp"
#include "distill/losses.hpp"
