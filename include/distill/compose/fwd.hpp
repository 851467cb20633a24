#pragma once
// Forward declarations of the composition's types, for headers that only pass them along (the
// engine's): including them does not compile every loss and model.

namespace distill {
class DistillationModelImpl;
class CombinedLossImpl;
struct ParameterGroups;
}  // namespace distill
