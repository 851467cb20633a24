#pragma once
// Composition: feature taps, DistillationModel, AttentionModel, loss terms, CombinedLoss.

#include "distill/compose/backbone.hpp"
#include "distill/compose/combined_loss.hpp"
#include "distill/compose/feature_terms.hpp"
#include "distill/compose/loss_terms.hpp"
#include "distill/compose/models.hpp"
