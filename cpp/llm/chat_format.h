// Prompt pieces of MiniCPM-o 4.5 (pipeline.md §3), as text. Special tokens appear as their text and are
// parsed as special when tokenized; user text never is.
#pragma once

#include <string>
#include <vector>

namespace omni {

enum class MediaType { audio, omni };
enum class Language { zh, en };

MediaType parse_media_type(const std::string & value);  // "audio" | "omni"; StateError naming media_type otherwise
Language parse_language(const std::string & value);     // "zh" | "en"; StateError naming language otherwise
const char * to_string(MediaType media);
const char * to_string(Language language);

// The simplex system prompt. With a reference voice, the voice's audio rows go between `prefix` and `suffix`
// (pipeline.md §3.1). Without one we use `text_only` (our documented choice: the same instructions
// without the voice-cloning sentences). Every variant ends with the opened user turn.
struct SystemPrompt {
    std::string prefix;     // ends with <|audio_start|>
    std::string suffix;     // starts with <|audio_end|>, ends with <|im_start|>user\n
    std::string text_only;  // a complete system message, ends with <|im_start|>user\n
};
SystemPrompt simplex_system_prompt(MediaType media, Language language);

// Closes the user turn and opens the assistant's (pipeline.md §3.3). With speak=true the model answers in
// speak mode (empty think block + <|tts_bos|>) and ends with <|tts_eos|>.
std::string assistant_header(bool speak);

// Written after an answer (whatever ended it) so the history always reads like a completed turn, as the
// PyTorch reference does: ...answer<|tts_eos|><|im_end|>\n<|im_start|>user\n (speak) or
// ...answer<|im_end|>\n<|im_start|>user\n.
std::string turn_close(bool speak);

// Wrappers of one user audio clip / image (used by the audio and vision stages).
constexpr const char * kAudioStart = "<|audio_start|>";
constexpr const char * kAudioEnd = "<|audio_end|>";
constexpr const char * kImageStart = "<image>";
constexpr const char * kImageEnd = "</image>";
constexpr const char * kSliceStart = "<slice>";
constexpr const char * kSliceEnd = "</slice>";

}  // namespace omni
