#pragma once
// The data side of a recipe: a DataLoader section's `dataset` and its `transform_ops` in the
// reference's vocabulary. Each dataset and transform is registered by name with the keys it
// reads. Compiled into distill::engine (src/data.cpp).

#include <functional>
#include <memory>
#include <string>

#include "distill/core/reader.hpp"
#include "distill/core/registry.hpp"
#include "distill/data/datasets.hpp"

namespace distill::data {

/// A transform of a `transform_ops` list, from the keys of its entry: a Transform, or a Step
/// with its deployment form.
using TransformReader = std::function<Step(const Reader& entry)>;
/// A dataset of a `dataset` section, with its transforms already made.
using DatasetReader = std::function<std::shared_ptr<Dataset>(const Reader& section, Pipeline pipeline)>;

/// Transforms by name: DecodeImage, RandCropImage, RandFlipImage, ResizeImage, CropImage,
/// NormalizeImage, ToCHWImage, TimmAutoAugment (RandAugment configs only).
Registry<TransformReader>& transform_registry();
/// Datasets by name: ImageNetDataset, FashionMNIST.
Registry<DatasetReader>& dataset_registry();

/// The reference's transform_ops list (one {Name: {options}} entry per step).
Pipeline make_pipeline(const json& ops, const std::string& path);
/// A `dataset` section: {"name": ..., "transform_ops": [...], ...}.
std::shared_ptr<Dataset> make_dataset(const json& section, const std::string& path);

}  // namespace distill::data
