#include "core/graph_ops.h"

#include "ggml.h"

namespace omni {

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, y, b) : y;
}

ggml_tensor * mul_mat_f32_accumulate(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b) {
    ggml_tensor * product = ggml_mul_mat(ctx, a, b);
    ggml_mul_mat_set_prec(product, GGML_PREC_F32);
    return product;
}

ggml_tensor * linear_f32_accumulate(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    ggml_tensor * y = mul_mat_f32_accumulate(ctx, w, x);
    return b ? ggml_add(ctx, y, b) : y;
}

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), w), b);
}

ggml_tensor * gelu_tanh(ggml_context * ctx, ggml_tensor * x, bool spelled_out) {
    if (!spelled_out) return ggml_gelu(ctx, x);
    const float sqrt_2_over_pi = 0.7978845608028654f;
    ggml_tensor * cube = ggml_mul(ctx, ggml_sqr(ctx, x), x);
    ggml_tensor * inner = ggml_scale(ctx, ggml_add(ctx, x, ggml_scale(ctx, cube, 0.044715f)), sqrt_2_over_pi);
    return ggml_mul(ctx, x, ggml_scale_bias(ctx, ggml_tanh(ctx, inner), 0.5f, 0.5f));
}

}  // namespace omni
