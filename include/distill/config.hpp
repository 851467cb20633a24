#pragma once
// Recipes as JSON: build the composed model and the combined loss; `-o` overrides.

#include "distill/config/build.hpp"
