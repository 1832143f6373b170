#include "llm/llm.h"

#include <algorithm>
#include <cstring>

#include "core/backend.h"
#include "core/errors.h"
#include "core/gguf_file.h"
#include "core/log.h"
#include "llama.h"

namespace omni {
namespace {

// Checks the file before libllama sees it, so a wrong file gets a message that names it and the problem.
void validate_llm_file(const std::string & path) {
    GgufFile file(path);
    const std::string arch = file.get_string("general.architecture");
    if (arch != "qwen3") {
        throw ModelFileError(path + ": general.architecture is '" + arch +
                             "', expected 'qwen3' (the MiniCPM-o 4.5 LLM)");
    }
    for (const char * key : {"qwen3.block_count", "qwen3.embedding_length", "qwen3.attention.head_count"}) {
        file.get_u32(key);
    }
    file.get_string("tokenizer.ggml.model");
    if (file.get_array_size("tokenizer.ggml.tokens") == 0) {
        throw ModelFileError(path + ": tokenizer.ggml.tokens is empty");
    }
    for (const char * name : {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"}) {
        file.tensor(name);
    }
}

class Batch {
public:
    Batch(int capacity, int n_embd, bool embeddings) {
        batch_ = llama_batch_init(capacity, embeddings ? n_embd : 0, 1);
    }
    ~Batch() { llama_batch_free(batch_); }
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;
    llama_batch & get() { return batch_; }

private:
    llama_batch batch_{};
};

ggml_type parse_kv_type(const std::string & name) {
    if (name == "f16") return GGML_TYPE_F16;
    if (name == "f32") return GGML_TYPE_F32;
    if (name == "q8_0") return GGML_TYPE_Q8_0;
    throw StateError("kv_type must be f16, f32 or q8_0, got '" + name + "'");
}

llama_flash_attn_type parse_flash_attn(const std::string & name) {
    if (name == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (name == "on") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (name == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    throw StateError("flash_attn must be auto, on or off, got '" + name + "'");
}

}  // namespace

bool llm_abort_requested(void * data) {
    Llm * llm = static_cast<Llm *>(data);
    if (!llm->abort_flag_ || !llm->abort_flag_->load()) return false;
    if (!llm->aborting_) {
        llm->aborting_ = true;
        begin_expected_abort();
    }
    return true;
}

Llm::Llm(const LlmOptions & options) : path_(options.path) {
    const ggml_type kv_type = parse_kv_type(options.kv_type);
    const llama_flash_attn_type flash_attn = parse_flash_attn(options.flash_attn);
    route_llama_logs();
    validate_llm_file(path_);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = options.n_gpu_layers < 0 ? 999 : options.n_gpu_layers;
    model_ = llama_model_load_from_file(path_.c_str(), mparams);
    if (!model_) {
        throw ModelFileError(path_ + ": libllama could not load this file (see the log for the reason)");
    }
    vocab_ = llama_model_get_vocab(model_);
    n_vocab_ = llama_vocab_n_tokens(vocab_);
    n_embd_ = llama_model_n_embd(model_);

    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = static_cast<uint32_t>(options.n_ctx);
    cparams.n_batch = static_cast<uint32_t>(options.n_batch);
    cparams.n_ubatch = static_cast<uint32_t>(options.n_batch);
    const int threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
    cparams.n_threads = threads;
    cparams.n_threads_batch = threads;
    cparams.embeddings = false;
    cparams.pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;  // causal LM default: no pooling, one row per token
    cparams.no_perf = true;
    cparams.type_k = kv_type;
    cparams.type_v = kv_type;
    cparams.flash_attn_type = flash_attn;
    ctx_ = llama_init_from_model(model_, cparams);
    if (!ctx_) {
        llama_model_free(model_);
        throw EngineError("could not create a llama context for " + path_ + " (n_ctx=" + std::to_string(options.n_ctx) +
                          "; too little memory?)");
    }
    n_ctx_ = static_cast<int>(llama_n_ctx(ctx_));
    n_batch_ = static_cast<int>(llama_n_batch(ctx_));  // llama.cpp caps n_batch at n_ctx
    llama_set_abort_callback(ctx_, llm_abort_requested, this);
}

Llm::~Llm() {
    if (ctx_) {
        llama_free(ctx_);
    }
    if (model_) {
        llama_model_free(model_);
    }
}

int Llm::n_layer() const {
    return llama_model_n_layer(model_);
}

int Llm::n_ctx_train() const {
    return llama_model_n_ctx_train(model_);
}

void Llm::set_abort_flag(const std::atomic<bool> * flag) {
    abort_flag_ = flag;
}

std::vector<Token> Llm::tokenize(const std::string & text, bool parse_special) const {
    std::vector<Token> tokens(text.size() + 8);
    int n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), false, parse_special);
    if (n < 0) {
        tokens.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), false, parse_special);
    }
    if (n < 0) {
        throw EngineError("tokenization failed for a text of " + std::to_string(text.size()) + " bytes");
    }
    tokens.resize(static_cast<size_t>(n));
    return tokens;
}

std::string Llm::token_piece(Token token) const {
    if (token < 0 || token >= n_vocab_) {
        throw StateError("token id " + std::to_string(token) + " is outside the vocabulary (0.." +
                         std::to_string(n_vocab_ - 1) + ")");
    }
    char buf[256];
    int n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, true);
    if (n >= 0) {
        return std::string(buf, static_cast<size_t>(n));
    }
    std::string big(static_cast<size_t>(-n), '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, true);
    big.resize(static_cast<size_t>(std::max(n, 0)));
    return big;
}

Token Llm::find_token(const std::string & text) const {
    const std::vector<Token> ids = tokenize(text, true);
    if (ids.size() == 1 && token_piece(ids[0]) == text) {
        return ids[0];
    }
    return -1;
}

bool Llm::is_end_of_generation(Token token) const {
    return llama_vocab_is_eog(vocab_, token);
}

bool Llm::is_control(Token token) const {
    return llama_vocab_is_control(vocab_, token);
}

void Llm::set_embeddings_output(bool enabled) {
    if (enabled != embeddings_on_) {
        llama_set_embeddings(ctx_, enabled);
        embeddings_on_ = enabled;
    }
}

void Llm::decode_batch(int n_tokens, const Token * tokens, const float * rows, bool output_last, bool output_all) {
    if (n_past_ + n_tokens > n_ctx_) {
        throw EngineError("context is full: " + std::to_string(n_past_) + " + " + std::to_string(n_tokens) +
                          " > n_ctx " + std::to_string(n_ctx_));
    }
    Batch batch(n_tokens, n_embd_, rows != nullptr);
    llama_batch & b = batch.get();
    b.n_tokens = n_tokens;
    for (int i = 0; i < n_tokens; ++i) {
        if (tokens) {
            b.token[i] = tokens[i];
        }
        b.pos[i] = n_past_ + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = output_all || (output_last && i == n_tokens - 1);
    }
    if (rows) {
        std::memcpy(b.embd, rows, sizeof(float) * static_cast<size_t>(n_tokens) * static_cast<size_t>(n_embd_));
    }
    const int rc = llama_decode(ctx_, b);
    if (aborting_) {
        aborting_ = false;
        end_expected_abort();
    }
    if (rc != 0) {
        // Aborted or failed: whatever ubatches were processed stay in the cache; keep n_past truthful.
        n_past_ = static_cast<int>(llama_memory_seq_pos_max(llama_get_memory(ctx_), 0)) + 1;
        if (rc == 2) {
            throw EngineError("aborted");
        }
        throw EngineError("llama_decode failed with code " + std::to_string(rc));
    }
    n_past_ += n_tokens;
}

void Llm::copy_logits(int index, std::vector<float> & out) const {
    const float * logits = llama_get_logits_ith(ctx_, index);
    if (!logits) {
        throw EngineError("no logits for output " + std::to_string(index));
    }
    out.assign(logits, logits + n_vocab_);
}

void Llm::copy_hidden(int index, std::vector<float> & out) const {
    const float * hidden = llama_get_embeddings_ith(ctx_, index);
    if (!hidden) {
        throw EngineError("no hidden state for output " + std::to_string(index));
    }
    out.assign(hidden, hidden + n_embd_);
}

void Llm::eval_tokens(const std::vector<Token> & tokens, std::vector<float> * last_logits) {
    set_embeddings_output(false);
    const int n = static_cast<int>(tokens.size());
    for (int start = 0; start < n; start += n_batch_) {
        const int count = std::min(n_batch_, n - start);
        const bool last_chunk = start + count == n;
        decode_batch(count, tokens.data() + start, nullptr, last_chunk && last_logits, false);
    }
    if (last_logits && n > 0) {
        copy_logits(-1, *last_logits);
    }
}

void Llm::eval_embeddings(const float * rows, int n_rows, std::vector<float> * last_logits) {
    set_embeddings_output(false);
    for (int start = 0; start < n_rows; start += n_batch_) {
        const int count = std::min(n_batch_, n_rows - start);
        const bool last_chunk = start + count == n_rows;
        decode_batch(count, nullptr, rows + static_cast<size_t>(start) * static_cast<size_t>(n_embd_),
                     last_chunk && last_logits, false);
    }
    if (last_logits && n_rows > 0) {
        copy_logits(-1, *last_logits);
    }
}

void Llm::step(Token token, std::vector<float> & logits, std::vector<float> & hidden) {
    set_embeddings_output(true);
    decode_batch(1, &token, nullptr, true, false);
    copy_logits(-1, logits);
    copy_hidden(-1, hidden);
}

void Llm::eval_all(const std::vector<Token> & tokens, std::vector<float> & logits, std::vector<float> & hidden) {
    set_embeddings_output(true);
    const int n = static_cast<int>(tokens.size());
    logits.clear();
    hidden.clear();
    std::vector<float> row;
    for (int start = 0; start < n; start += n_batch_) {
        const int count = std::min(n_batch_, n - start);
        decode_batch(count, tokens.data() + start, nullptr, true, true);
        for (int i = 0; i < count; ++i) {
            copy_logits(i, row);
            logits.insert(logits.end(), row.begin(), row.end());
            copy_hidden(i, row);
            hidden.insert(hidden.end(), row.begin(), row.end());
        }
    }
}

void Llm::clear() {
    llama_memory_clear(llama_get_memory(ctx_), true);
    n_past_ = 0;
}

void Llm::remove(int p0, int p1) {
    p0 = std::max(0, p0);
    p1 = std::min(p1, n_past_);
    if (p0 >= p1) {
        return;
    }
    llama_memory_t mem = llama_get_memory(ctx_);
    if (!llama_memory_seq_rm(mem, 0, p0, p1)) {
        throw EngineError("could not remove KV positions [" + std::to_string(p0) + ", " + std::to_string(p1) + ")");
    }
    llama_memory_seq_add(mem, 0, p1, -1, -(p1 - p0));
    n_past_ -= p1 - p0;
}

}  // namespace omni
