#include "llm/chat_format.h"

#include "core/errors.h"

namespace omni {
namespace {

// pipeline.md §3.1, CPP strings (the separators follow CPP: "\n" after the prefix text, none before the suffix).
constexpr const char * kZhPrefix = "<|im_start|>system\n模仿音频样本的音色并生成新的内容。\n<|audio_start|>";
constexpr const char * kZhInstructions =
    "你的任务是用这种声音模式来当一个助手。请认真、高质量地回复用户的问题。请用高自然度的方式和用户聊天。";
constexpr const char * kZhIdentity = "你是由面壁智能开发的人工智能助手：面壁小钢炮。";
constexpr const char * kEnPrefix = "<|im_start|>system\nClone the voice in the provided audio prompt.\n<|audio_start|>";
constexpr const char * kEnInstructions =
    "Please assist users while maintaining this voice style. Please answer the user's questions seriously and in a "
    "high quality. Please chat with the user in a highly human-like and oral style.";
constexpr const char * kEnIdentity = " You are a helpful assistant developed by ModelBest: MiniCPM-Omni.";

// Without a reference voice there is no voice to clone: keep the assistant instructions only.
constexpr const char * kZhTextOnly = "请认真、高质量地回复用户的问题。请用高自然度的方式和用户聊天。";
constexpr const char * kEnTextOnly =
    "Please answer the user's questions seriously and in a high quality. Please chat with the user in a highly "
    "human-like and oral style.";

constexpr const char * kSystemEnd = "<|im_end|>\n<|im_start|>user\n";

}  // namespace

MediaType parse_media_type(const std::string & value) {
    if (value == "audio") return MediaType::audio;
    if (value == "omni") return MediaType::omni;
    throw StateError("media_type must be 'audio' or 'omni', got '" + value + "'");
}

Language parse_language(const std::string & value) {
    if (value == "zh") return Language::zh;
    if (value == "en") return Language::en;
    throw StateError("language must be 'zh' or 'en', got '" + value + "'");
}

const char * to_string(MediaType media) {
    return media == MediaType::audio ? "audio" : "omni";
}

const char * to_string(Language language) {
    return language == Language::zh ? "zh" : "en";
}

SystemPrompt simplex_system_prompt(MediaType media, Language language) {
    const bool zh = language == Language::zh;
    // The audio-assistant prompt names the assistant; the omni prompt does not (pipeline.md §3.1 table).
    const std::string identity = media == MediaType::audio ? (zh ? kZhIdentity : kEnIdentity) : "";
    SystemPrompt prompt;
    prompt.prefix = zh ? kZhPrefix : kEnPrefix;
    prompt.suffix = std::string(kAudioEnd) + (zh ? kZhInstructions : kEnInstructions) + identity + kSystemEnd;
    const std::string text_identity =
        media == MediaType::audio ? (zh ? kZhIdentity : std::string(kEnIdentity).substr(1) + " ") : "";
    prompt.text_only =
        "<|im_start|>system\n" + (zh ? text_identity + kZhTextOnly : text_identity + kEnTextOnly) + kSystemEnd;
    return prompt;
}

std::string assistant_header(bool speak) {
    return speak ? "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>"
                 : "<|im_end|>\n<|im_start|>assistant\n";
}

std::string turn_close(bool speak) {
    return speak ? "<|tts_eos|><|im_end|>\n<|im_start|>user\n" : "<|im_end|>\n<|im_start|>user\n";
}

}  // namespace omni
