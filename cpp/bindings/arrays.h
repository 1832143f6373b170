// NumPy conversions shared by the binding files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace omni_bindings {

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A (rows, cols) array, or (cols) when rows <= 0.
inline py::array_t<float> to_array(const std::vector<float> & values, py::ssize_t rows, py::ssize_t cols) {
    py::array_t<float> out(rows > 0 ? std::vector<py::ssize_t>{rows, cols} : std::vector<py::ssize_t>{cols});
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

// Always (rows, cols), also for rows == 0.
inline py::array_t<float> to_matrix(const std::vector<float> & values, py::ssize_t rows, py::ssize_t cols) {
    py::array_t<float> out(std::vector<py::ssize_t>{rows, cols});
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

inline std::vector<float> to_vector(const FloatArray & array, size_t expected, const char * what = "logits") {
    if (static_cast<size_t>(array.size()) != expected) {
        throw py::value_error(std::string(what) + " must have " + std::to_string(expected) + " values, got " +
                              std::to_string(array.size()));
    }
    return std::vector<float>(array.data(), array.data() + array.size());
}

// Throws ValueError unless `array` is (rows, cols) with rows >= 0 (rows < 0: any count).
inline void require_matrix(const FloatArray & array, py::ssize_t rows, py::ssize_t cols, const char * what) {
    if (array.ndim() != 2 || array.shape(1) != cols || (rows >= 0 && array.shape(0) != rows)) {
        throw py::value_error(std::string(what) + " must have shape (" + (rows >= 0 ? std::to_string(rows) : "n") +
                              ", " + std::to_string(cols) + ")");
    }
}

}  // namespace omni_bindings
