// The LLM stage: a libllama model and context with the operations the omni pipeline needs.
// Not thread-safe: one owner thread drives it (the pipeline's LLM thread, or a test).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct llama_model;
struct llama_context;
struct llama_vocab;

namespace omni {

using Token = int32_t;

struct LlmOptions {
    std::string path;
    int n_ctx = 4096;
    int n_batch = 512;
    int n_gpu_layers = -1;            // -1: all layers on the GPU when there is one
    int n_threads = 0;                // 0: auto
    std::string kv_type = "f16";      // f16 | f32 | q8_0
    std::string flash_attn = "auto";  // auto | on | off
};

class Llm {
public:
    explicit Llm(const LlmOptions & options);
    ~Llm();
    Llm(const Llm &) = delete;
    Llm & operator=(const Llm &) = delete;

    int n_vocab() const { return n_vocab_; }
    int n_embd() const { return n_embd_; }
    int n_layer() const;
    int n_ctx() const { return n_ctx_; }
    int n_ctx_train() const;
    int n_past() const { return n_past_; }
    const std::string & path() const { return path_; }

    std::vector<Token> tokenize(const std::string & text, bool parse_special = true) const;
    // The token's bytes (special tokens rendered as their text).
    std::string token_piece(Token token) const;
    // The id of the token whose text is exactly `text`, or -1.
    Token find_token(const std::string & text) const;
    bool is_end_of_generation(Token token) const;
    // Control tokens (<|speak|>, <|im_start|>, ...) are never shown as text.
    bool is_control(Token token) const;

    // Appends tokens to the KV cache; when last_logits is given, fills it with the last position's logits.
    void eval_tokens(const std::vector<Token> & tokens, std::vector<float> * last_logits = nullptr);
    // Appends embedding rows (n_rows x n_embd, row-major) to the KV cache.
    void eval_embeddings(const float * rows, int n_rows, std::vector<float> * last_logits = nullptr);
    // Feeds one token; returns the logits for the next token and the token's final-norm hidden state.
    void step(Token token, std::vector<float> & logits, std::vector<float> & hidden);
    // Feeds tokens and returns logits and final-norm hidden states at every position (tests, parity).
    void eval_all(const std::vector<Token> & tokens, std::vector<float> & logits, std::vector<float> & hidden);

    void clear();
    // Drops KV positions [p0, p1) and shifts the later ones down so positions stay contiguous.
    void remove(int p0, int p1);

    // While *flag is true, running evaluations abort (EngineError "aborted") at the next ubatch.
    void set_abort_flag(const std::atomic<bool> * flag);

private:
    void decode_batch(int n_tokens, const Token * tokens, const float * rows, bool output_last, bool output_all);
    void copy_logits(int index, std::vector<float> & out) const;
    void copy_hidden(int index, std::vector<float> & out) const;
    void set_embeddings_output(bool enabled);

    std::string path_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    int n_vocab_ = 0;
    int n_embd_ = 0;
    int n_ctx_ = 0;
    int n_batch_ = 0;
    int n_past_ = 0;
    bool embeddings_on_ = false;
    const std::atomic<bool> * abort_flag_ = nullptr;
    bool aborting_ = false;  // the running llama_decode was told to abort

    friend bool llm_abort_requested(void * data);
};

}  // namespace omni
