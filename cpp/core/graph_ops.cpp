#include "core/graph_ops.h"

#include <cmath>

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

ggml_tensor * attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, bool f32_accumulate) {
    const auto product = [&](ggml_tensor * a, ggml_tensor * b) {
        return f32_accumulate ? mul_mat_f32_accumulate(ctx, a, b) : ggml_mul_mat(ctx, a, b);
    };
    const int64_t head_dim = q->ne[0];
    const int64_t n_head = q->ne[1];
    const int64_t n_q = q->ne[2];
    const int64_t n_seq = q->ne[3];
    q = ggml_permute(ctx, q, 0, 2, 1, 3);  // (head_dim, n_q, head, B)
    k = ggml_permute(ctx, k, 0, 2, 1, 3);
    ggml_tensor * scores = product(k, q);  // (n_k, n_q, head)
    scores = ggml_soft_max_ext(ctx, scores, nullptr, 1.0f / std::sqrt(static_cast<float>(head_dim)), 0.0f);
    ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3));  // (n_k, head_dim, head)
    ggml_tensor * out = product(vt, scores);                              // (head_dim, n_q, head)
    out = ggml_cont(ctx, ggml_permute(ctx, out, 0, 2, 1, 3));             // (head_dim, head, n_q)
    return ggml_reshape_3d(ctx, out, head_dim * n_head, n_q, n_seq);
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
