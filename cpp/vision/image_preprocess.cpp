#include "vision/image_preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace omni {
namespace {

// ---- slice plan (the PyTorch reference's arithmetic, tests/vision_reference.py) -------------------------

// The ViT position table is 70 x 70 buckets; a chunk with more patches than that would only be interpolated
// further and costs quadratic attention memory, so it is refused.
constexpr long long kMaxChunkPatches = 70 * 70;

// Python's round() on a float: halves to even (the default floating-point rounding mode).
double round_half_even(double value) {
    return std::nearbyint(value);
}

int checked_int(double value, const char * what) {
    if (!(value >= 0.0 && value <= static_cast<double>(std::numeric_limits<int>::max()))) {
        throw std::invalid_argument(std::string("image: ") + what + " of the slice plan is out of range");
    }
    return static_cast<int>(value);
}

// The nearest multiple of `unit`, at least `unit`.
int ensure_divide(double length, int unit) {
    const double multiple = round_half_even(length / unit) * unit;
    return checked_int(std::max(multiple, static_cast<double>(unit)), "a side");
}

// About scale_resolution^2 pixels at the same aspect ratio (only when larger unless upscaling is allowed),
// each side a multiple of the patch. int() truncations as the reference.
ImageSize best_resize(double width, double height, int scale_resolution, int patch, bool allow_upscale) {
    const double area_limit = static_cast<double>(scale_resolution) * scale_resolution;
    if (width * height > area_limit || allow_upscale) {
        const double ratio = width / height;
        height = std::trunc(scale_resolution / std::sqrt(ratio));
        width = std::trunc(height * ratio);
    }
    return {ensure_divide(width, patch), ensure_divide(height, patch)};
}

// Candidate grids (columns, rows) in the reference's order: counts multiple-1, multiple, multiple+1 (not 1,
// not above max_slices), each factorised with the column count ascending.
std::vector<ImageSize> candidate_grids(int multiple, int max_slices) {
    std::vector<ImageSize> grids;
    for (int count = multiple - 1; count <= multiple + 1; ++count) {
        if (count == 1 || count > max_slices) continue;
        for (int columns = 1; columns <= count; ++columns) {
            if (count % columns == 0) grids.push_back({columns, count / columns});
        }
    }
    return grids;
}

// {columns, rows}, or {0, 0} when the reference does not slice.
ImageSize slice_grid(int width, int height, int max_slices, int scale_resolution) {
    const double area = static_cast<double>(static_cast<long long>(width) * height);
    const double area_limit = static_cast<double>(static_cast<long long>(scale_resolution) * scale_resolution);
    const int multiple = static_cast<int>(std::min(std::ceil(area / area_limit), static_cast<double>(max_slices)));
    if (multiple <= 1) return {0, 0};
    const double log_ratio = std::log(static_cast<double>(width) / height);
    ImageSize best;
    double best_error = std::numeric_limits<double>::infinity();
    for (const ImageSize & grid : candidate_grids(multiple, max_slices)) {
        const double error = std::fabs(log_ratio - std::log(static_cast<double>(grid.width) / grid.height));
        if (error < best_error) {  // strict: ties keep the earlier grid
            best_error = error;
            best = grid;
        }
    }
    return best;
}

// Each side rounded to a multiple of its grid count, one cell best-resized with upscaling, times the grid.
ImageSize refine_size(int width, int height, ImageSize grid, int scale_resolution, int patch) {
    const double cell_width = static_cast<double>(ensure_divide(width, grid.width)) / grid.width;
    const double cell_height = static_cast<double>(ensure_divide(height, grid.height)) / grid.height;
    const ImageSize cell = best_resize(cell_width, cell_height, scale_resolution, patch, true);
    return {checked_int(static_cast<double>(cell.width) * grid.width, "the refine width"),
            checked_int(static_cast<double>(cell.height) * grid.height, "the refine height")};
}

// The messages name the argument, as the Python bindings expose it.
void require_positive(int value, const char * name) {
    if (value < 1) throw std::invalid_argument(std::string(name) + " must be >= 1, got " + std::to_string(value));
}

void check_plan_arguments(int width, int height, int max_slices, int scale_resolution, int patch) {
    require_positive(width, "width");
    require_positive(height, "height");
    if (max_slices < 0 || max_slices > kMaxImageSlices) {
        throw std::invalid_argument("max_slices must be in 0.." + std::to_string(kMaxImageSlices) + ", got " +
                                    std::to_string(max_slices));
    }
    require_positive(scale_resolution, "scale_resolution");
    require_positive(patch, "patch");
}

// ---- Pillow-compatible bicubic resize ----------------------------------------------------------------------

constexpr int kCoefficientBits = 22;  // fixed-point fraction of the filter weights (8-bit pixels)
constexpr double kCubicA = -0.5;
constexpr double kCubicSupport = 2.0;

double cubic_kernel(double x) {
    x = std::fabs(x);
    if (x < 1.0) return ((kCubicA + 2.0) * x - (kCubicA + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * kCubicA;
    return 0.0;
}

// The input range and fixed-point weights of every output sample of one axis.
struct AxisTaps {
    std::vector<int> first;    // first input index per output sample
    std::vector<int> count;    // number of taps per output sample
    std::vector<int> weights;  // out_size x stride weights, the row of output i starts at i * stride
    int stride = 0;
};

int to_fixed(double weight) {
    const double scaled = weight * (1 << kCoefficientBits);
    return static_cast<int>(scaled < 0.0 ? scaled - 0.5 : scaled + 0.5);
}

// Weights of one output sample centred at `center` (input coordinates), normalised to sum 1, then fixed point.
void sample_taps(double center, double support, double inverse_scale, int in_size, int out_index, AxisTaps & taps) {
    const int first = std::max(static_cast<int>(center - support + 0.5), 0);
    const int end = std::min(static_cast<int>(center + support + 0.5), in_size);
    std::vector<double> weights(static_cast<size_t>(end - first));
    double total = 0.0;
    for (int x = first; x < end; ++x) {
        weights[static_cast<size_t>(x - first)] = cubic_kernel((x + 0.5 - center) * inverse_scale);
        total += weights[static_cast<size_t>(x - first)];
    }
    int * row = taps.weights.data() + static_cast<size_t>(out_index) * taps.stride;
    for (size_t k = 0; k < weights.size(); ++k) row[k] = to_fixed(total != 0.0 ? weights[k] / total : weights[k]);
    taps.first[static_cast<size_t>(out_index)] = first;
    taps.count[static_cast<size_t>(out_index)] = end - first;
}

// Downscaling widens the kernel by the scale factor (antialiasing); upscaling keeps the 2-pixel support.
AxisTaps axis_taps(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filter_scale = std::max(scale, 1.0);
    const double support = kCubicSupport * filter_scale;
    AxisTaps taps;
    taps.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
    taps.first.resize(static_cast<size_t>(out_size));
    taps.count.resize(static_cast<size_t>(out_size));
    taps.weights.assign(static_cast<size_t>(out_size) * taps.stride, 0);
    for (int i = 0; i < out_size; ++i) sample_taps((i + 0.5) * scale, support, 1.0 / filter_scale, in_size, i, taps);
    return taps;
}

uint8_t fixed_to_pixel(int64_t accumulator) {
    const int64_t value = accumulator >> kCoefficientBits;
    return static_cast<uint8_t>(std::clamp<int64_t>(value, 0, 255));
}

constexpr int64_t kRoundingBias = int64_t{1} << (kCoefficientBits - 1);  // rounds the final shift to nearest

std::vector<uint8_t> resize_horizontal(const uint8_t * in, ImageSize from, int out_width) {
    const AxisTaps taps = axis_taps(from.width, out_width);
    std::vector<uint8_t> out(static_cast<size_t>(out_width) * from.height * 3);
    for (int y = 0; y < from.height; ++y) {
        const uint8_t * in_row = in + static_cast<size_t>(y) * from.width * 3;
        uint8_t * out_pixel = out.data() + static_cast<size_t>(y) * out_width * 3;
        for (int x = 0; x < out_width; ++x, out_pixel += 3) {
            const int * weights = taps.weights.data() + static_cast<size_t>(x) * taps.stride;
            const uint8_t * tap = in_row + static_cast<size_t>(taps.first[x]) * 3;
            int64_t r = kRoundingBias, g = kRoundingBias, b = kRoundingBias;
            for (int k = 0; k < taps.count[x]; ++k, tap += 3) {
                r += static_cast<int64_t>(tap[0]) * weights[k];
                g += static_cast<int64_t>(tap[1]) * weights[k];
                b += static_cast<int64_t>(tap[2]) * weights[k];
            }
            out_pixel[0] = fixed_to_pixel(r);
            out_pixel[1] = fixed_to_pixel(g);
            out_pixel[2] = fixed_to_pixel(b);
        }
    }
    return out;
}

// Whole rows at a time: every output row is a weighted sum of consecutive input rows.
std::vector<uint8_t> resize_vertical(const uint8_t * in, ImageSize from, int out_height) {
    const AxisTaps taps = axis_taps(from.height, out_height);
    const size_t row_bytes = static_cast<size_t>(from.width) * 3;
    std::vector<uint8_t> out(static_cast<size_t>(out_height) * row_bytes);
    std::vector<int64_t> sums(row_bytes);
    for (int y = 0; y < out_height; ++y) {
        const int * weights = taps.weights.data() + static_cast<size_t>(y) * taps.stride;
        std::fill(sums.begin(), sums.end(), kRoundingBias);
        for (int k = 0; k < taps.count[y]; ++k) {
            const uint8_t * in_row = in + static_cast<size_t>(taps.first[y] + k) * row_bytes;
            const int64_t weight = weights[k];
            for (size_t i = 0; i < row_bytes; ++i) sums[i] += in_row[i] * weight;
        }
        uint8_t * out_row = out.data() + static_cast<size_t>(y) * row_bytes;
        for (size_t i = 0; i < row_bytes; ++i) out_row[i] = fixed_to_pixel(sums[i]);
    }
    return out;
}

// ---- chunks -------------------------------------------------------------------------------------------------

void check_chunk_patches(ImageSize size, int patch) {
    const long long patches = static_cast<long long>(size.width / patch) * (size.height / patch);
    if (patches > kMaxChunkPatches) {
        throw std::invalid_argument("image: aspect ratio too extreme, a " + std::to_string(size.width) + "x" +
                                    std::to_string(size.height) + " chunk has " + std::to_string(patches) +
                                    " patches (at most " + std::to_string(kMaxChunkPatches) + ")");
    }
}

// Planar (3, h, w) (x / 255 - mean) / std of the `size` window at (left, top) of an interleaved RGB8 image.
ImageChunk normalise_window(const std::vector<uint8_t> & rgb, int image_width, int left, int top, ImageSize size,
                            const PixelNormalisation & normalisation) {
    ImageChunk chunk{size, std::vector<float>(static_cast<size_t>(size.width) * size.height * 3)};
    const size_t plane = static_cast<size_t>(size.width) * size.height;
    for (int y = 0; y < size.height; ++y) {
        const uint8_t * row = rgb.data() + (static_cast<size_t>(top + y) * image_width + left) * 3;
        for (int x = 0; x < size.width; ++x) {
            for (int c = 0; c < 3; ++c) {
                const float scaled = static_cast<float>(row[x * 3 + c]) / 255.0f;
                chunk.pixels[c * plane + static_cast<size_t>(y) * size.width + x] =
                    (scaled - normalisation.mean[c]) / normalisation.std[c];
            }
        }
    }
    return chunk;
}

}  // namespace

SlicePlan plan_image_slices(int width, int height, int max_slices, int scale_resolution, int patch) {
    check_plan_arguments(width, height, max_slices, scale_resolution, patch);
    SlicePlan plan;
    const ImageSize grid = slice_grid(width, height, max_slices, scale_resolution);
    if (grid.width == 0) {
        plan.overview = best_resize(width, height, scale_resolution, patch, true);
        return plan;
    }
    plan.overview = best_resize(width, height, scale_resolution, patch, false);
    plan.grid_columns = grid.width;
    plan.grid_rows = grid.height;
    plan.refine = refine_size(width, height, grid, scale_resolution, patch);
    plan.slice_size = {plan.refine.width / grid.width, plan.refine.height / grid.height};
    return plan;
}

std::vector<uint8_t> resize_rgb_bicubic(const uint8_t * rgb, ImageSize from, ImageSize to) {
    require_positive(from.width, "image width");
    require_positive(from.height, "image height");
    require_positive(to.width, "width");
    require_positive(to.height, "height");
    // Each pass only when its side changes (same size: an unchanged copy). The pass order changes the rounding
    // between passes; Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    // pixels as the width does (measured against Pillow 13.0.0), else horizontal first.
    const bool vertical_first =
        to.height < from.height && from.height - to.height > 2 * (static_cast<long long>(from.width) - to.width);
    std::vector<uint8_t> image;  // the latest pass's output; the input is read in place by the first pass
    const auto source = [&] { return image.empty() ? rgb : image.data(); };
    if (vertical_first) {
        image = resize_vertical(source(), from, to.height);
        from.height = to.height;
    }
    if (to.width != from.width) {
        image = resize_horizontal(source(), from, to.width);
        from.width = to.width;
    }
    if (to.height != from.height) image = resize_vertical(source(), from, to.height);
    if (image.empty()) image.assign(rgb, rgb + static_cast<size_t>(from.width) * from.height * 3);
    return image;
}

std::vector<ImageChunk> preprocess_image(const uint8_t * rgb, ImageSize size, int max_slices, int scale_resolution,
                                         int patch, const PixelNormalisation & normalisation) {
    const SlicePlan plan = plan_image_slices(size.width, size.height, max_slices, scale_resolution, patch);
    check_chunk_patches(plan.overview, patch);
    if (plan.n_slices() > 0) check_chunk_patches(plan.slice_size, patch);

    std::vector<ImageChunk> chunks;
    const std::vector<uint8_t> overview = resize_rgb_bicubic(rgb, size, plan.overview);
    chunks.push_back(normalise_window(overview, plan.overview.width, 0, 0, plan.overview, normalisation));
    if (plan.n_slices() == 0) return chunks;

    const std::vector<uint8_t> refined = resize_rgb_bicubic(rgb, size, plan.refine);
    for (int row = 0; row < plan.grid_rows; ++row) {
        for (int column = 0; column < plan.grid_columns; ++column) {
            chunks.push_back(normalise_window(refined, plan.refine.width, column * plan.slice_size.width,
                                              row * plan.slice_size.height, plan.slice_size, normalisation));
        }
    }
    return chunks;
}

}  // namespace omni
