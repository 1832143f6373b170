// Small ggml building blocks shared by the stage graphs.
#pragma once

struct ggml_context;
struct ggml_tensor;

namespace omni {

// y = W x (+ b); b may be null.
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b);

// ggml_mul_mat(a, b) with F32 accumulation requested (GGML_PREC_F32): CUDA's cuBLAS path otherwise accumulates
// F16 weights in F16. No effect on the CPU, which always accumulates in F32.
ggml_tensor * mul_mat_f32_accumulate(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b);

// linear() through mul_mat_f32_accumulate.
ggml_tensor * linear_f32_accumulate(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b);

// Softmax attention of (head_dim, n_head, n_q, B) queries over (head_dim, n_head, n_k, B) keys and values (B
// independent sequences, 1 for 3-D inputs), scaled by 1/sqrt(head_dim), no mask -> (head_dim * n_head, n_q, B).
// f32_accumulate: both products via mul_mat_f32_accumulate.
ggml_tensor * attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, bool f32_accumulate);

// LayerNorm over dim 0 with an affine weight and bias.
ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps);

// GELU with the tanh formula in F32. ggml's GELU computes exactly that on GPUs, but on the CPU it reads an F16
// table (about 1e-3 off), so the CPU gets the formula spelled out.
ggml_tensor * gelu_tanh(ggml_context * ctx, ggml_tensor * x, bool spelled_out);

}  // namespace omni
