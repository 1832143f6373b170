// Image preprocessing of the vision stage (pipeline.md §5, PyTorch reference MiniCPMVImageProcessor): the slice
// plan (overview size, grid, refine size), Pillow-compatible bicubic resizes, row-major crops and the
// (x / 255 - mean) / std normalisation. Pure CPU code, no ggml.
#pragma once

#include <cstdint>
#include <vector>

namespace omni {

struct ImageSize {
    int width = 0;
    int height = 0;
};

// Sizes of one image's chunks. grid_columns == 0 means overview only.
struct SlicePlan {
    ImageSize overview;
    int grid_columns = 0;
    int grid_rows = 0;
    ImageSize refine;      // the resized image the slices are cut from ({0, 0} without slices)
    ImageSize slice_size;  // every slice has this size ({0, 0} without slices)
    int n_slices() const { return grid_columns * grid_rows; }
};

constexpr int kMaxImageSlices = 9;  // the PyTorch preprocessor's default ceiling

// std::invalid_argument for sides < 1, max_slices outside [0, kMaxImageSlices], scale_resolution/patch < 1.
SlicePlan plan_image_slices(int width, int height, int max_slices, int scale_resolution, int patch);

// Interleaved RGB8 (height, width, 3) resized with Pillow's BICUBIC filter (antialiased when downscaling).
std::vector<uint8_t> resize_rgb_bicubic(const uint8_t * rgb, ImageSize from, ImageSize to);

// One encoder input: planar (3, height, width) normalised pixels.
struct ImageChunk {
    ImageSize size;
    std::vector<float> pixels;
};

struct PixelNormalisation {
    float mean[3] = {0.5f, 0.5f, 0.5f};
    float std[3] = {0.5f, 0.5f, 0.5f};
};

// The overview followed by the slices in row-major order, as the PyTorch reference builds them.
std::vector<ImageChunk> preprocess_image(const uint8_t * rgb, ImageSize size, int max_slices, int scale_resolution,
                                         int patch, const PixelNormalisation & normalisation);

}  // namespace omni
