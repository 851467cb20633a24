#pragma once
// Umbrella header: the whole distill library.

#include "distill/compose.hpp"
#include "distill/config.hpp"
#include "distill/core/error.hpp"
#include "distill/core/features.hpp"
#include "distill/io.hpp"
#include "distill/losses.hpp"
#include "distill/models.hpp"
