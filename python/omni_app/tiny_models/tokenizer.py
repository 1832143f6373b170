"""Vocabulary of the tiny LLM: a byte-level BPE with the real MiniCPM-o 4.5 size and special-token ids.

Layout (151748 ids, model-files.md §3.2/§3.4, pipeline.md §2):
- ids 0..255: the 256 GPT-2 byte-level symbols, ordered by code point of their printable stand-in
  (so "\\n" is 198 and " " is 220, as in the Qwen vocabulary);
- then the merge results learned from a small built-in English/Chinese corpus (deterministic, pure Python);
- then filler tokens (pronounceable pseudo-words, so random output of a random-weight model reads as text)
  up to 151642, with `<unk>` at 128244;
- 151643..151747: the Qwen3 and MiniCPM-o added tokens at their real ids.
"""

from __future__ import annotations

import heapq
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

VOCAB_SIZE = 151748
FIRST_ADDED_ID = 151643
UNK_ID = 128244
UNK_TOKEN = "<unk>"
MAX_MERGES = 4000
MAX_MERGED_SYMBOLS = 12  # longest merge result, in byte symbols (4 CJK characters)

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

_QWEN_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

_MINICPM_ADDED_TOKENS = (
    "<image>",
    "</image>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<quad>",
    "</quad>",
    "<point>",
    "</point>",
    "<slice>",
    "</slice>",
    "<image_id>",
    "</image_id>",
    "<unit>",
    "</unit>",
    "<answer>",
    "</answer>",
    "<focus>",
    "</focus>",
    "<line>",
    "</line>",
    "<perception>",
    "</perception>",
    # 151693-151696: the spec names only the first and last ("<source_image> ... </image_save_to>");
    # the two middle strings are our guess.
    "<source_image>",
    "</source_image>",
    "<image_save_to>",
    "</image_save_to>",
    "<|audio_start|>",
    "<|audio|>",
    "<|audio_end|>",
    "<|spk_bos|>",
    "<|spk|>",
    "<|spk_eos|>",
    "<|tts_bos|>",
    "<|tts_eos|>",
    "<|listen|>",
    "<|speak|>",
    "<|interrupt|>",
    "<|vad_start|>",
    "<|vad_end|>",
    # 151710-151715: the spec only says "<|emotion_*|>, <|speed_*|>, <|pitch_*|>"; these names are our guess.
    "<|emotion_start|>",
    "<|emotion_end|>",
    "<|speed_start|>",
    "<|speed_end|>",
    "<|pitch_start|>",
    "<|pitch_end|>",
    "<|turn_bos|>",
    "<|turn_eos|>",
    "<|chunk_eos|>",
    "<|chunk_bos|>",
    "<|chunk_tts_bos|>",
    "<|chunk_tts_eos|>",
    "<|tts_pad|>",
    *(f"<|timbre_{n}|>" for n in range(7, 32)),
)

ADDED_TOKENS: tuple[str, ...] = _QWEN_ADDED_TOKENS + _MINICPM_ADDED_TOKENS
USER_DEFINED_TOKENS = frozenset(
    {"<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}
)
BOS_ID = FIRST_ADDED_ID + ADDED_TOKENS.index("<|im_start|>")
EOS_ID = FIRST_ADDED_ID + ADDED_TOKENS.index("<|im_end|>")
PAD_ID = FIRST_ADDED_ID + ADDED_TOKENS.index("<|endoftext|>")

assert FIRST_ADDED_ID + len(ADDED_TOKENS) == VOCAB_SIZE

# Learning corpus. The system prompts of pipeline.md §3.1/§3.2 are included verbatim so that they
# tokenize into multi-byte merges; the rest is ordinary English and Chinese prose, numbers and code.
_CORPUS = """\
<|im_start|>system
模仿音频样本的音色并生成新的内容。
<|audio_start|><|audio_end|>你的任务是用这种声音模式来当一个助手。请认真、高质量地回复用户的问题。\
请用高自然度的方式和用户聊天。你是由面壁智能开发的人工智能助手：面壁小钢炮。<|im_end|>
<|im_start|>user
<|audio_end|>你的任务是用这种声音模式来当一个助手。请认真、高质量地回复用户的问题。请用高自然度的方式和用户聊天。<|im_end|>
<|im_start|>system
Clone the voice in the provided audio prompt.
<|audio_start|><|audio_end|>Please assist users while maintaining this voice style. Please answer the user's \
questions seriously and in a high quality. Please chat with the user in a highly human-like and oral style. \
You are a helpful assistant developed by ModelBest: MiniCPM-Omni.<|im_end|>
<|im_start|>system
Streaming Duplex Conversation! You are a helpful assistant.
<|audio_start|><|audio_end|><|im_end|>
<|im_start|>assistant
<think>

</think>

<|tts_bos|>
Hello! How can I help you today? I'm happy to answer your questions about the weather, music, science,
history, cooking, travel and anything else you would like to talk about. The quick brown fox jumps over
the lazy dog. It's a beautiful day; let's go for a walk in the park, and then we'll have some tea.
Speech recognition turns your voice into text, and text-to-speech turns my answers back into sound.
The model listens, thinks and speaks at the same time, which is what we call a duplex conversation.
Please describe the picture: there is a cat sitting on a red chair next to the window.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 42 100 128 256 1024 2048 4096 16000 24000 3.14159 2026-02-11 12:30.
The answer is 42. Version 4.5 was released in 2026. It costs $19.99, or about ¥140.
def add(a: int, b: int) -> int:
    return a + b

for i in range(10):
    print(i * i)

你好！今天天气怎么样？我很高兴回答你的问题。我们可以聊聊音乐、科学、历史、美食和旅行。
请描述这张图片：一只猫坐在窗边的红色椅子上。语音识别把你的声音变成文字，语音合成把我的回答变成声音。
模型可以一边听、一边说，这就是全双工对话。北京是中国的首都，上海是一个国际化的大城市。
我今天学习了人工智能的基础知识，包括神经网络、注意力机制和语言模型。谢谢你的帮助，再见！
请问现在几点了？现在是下午三点半。明天会下雨吗？明天是晴天，温度在二十度左右。
"""

_FILLER_CONSONANTS = "bdfghjklmnprstvwz"
_FILLER_VOWELS = "aeiou"


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-level alphabet: printable bytes stand for themselves, the others are shifted to 256+."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


def byte_symbols_in_id_order() -> list[str]:
    """The 256 byte symbols sorted by code point: ids 0..255 of the vocabulary."""
    return sorted(bytes_to_unicode().values())


def encode_bytes(text: str) -> str:
    """Text -> its UTF-8 bytes written in the byte-level alphabet (the form stored in the vocabulary)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def _char_class(char: str) -> str:
    category = unicodedata.category(char)
    if category[0] == "L":
        return "letter"
    if category[0] == "N":
        return "number"
    if char.isspace():
        return "space"
    return "other"


def _pretokenize(text: str) -> Iterator[str]:
    """Rough word split in the spirit of the Qwen2 regex (letters with one leading non-letter, single digits,
    punctuation runs with an optional leading space, whitespace). Only used to learn merges: any split
    yields a valid merge list; this one makes merges that the real pre-tokenizer will actually use."""
    i = 0
    while i < len(text):
        char = text[i]
        kind = _char_class(char)
        start = i
        if kind == "number":
            i += 1
        elif (
            kind == "space"
            and char not in "\r\n"
            and i + 1 < len(text)
            and _char_class(text[i + 1]) != "space"
        ):
            i += 1
            follow = _char_class(text[i])
            while i < len(text) and _char_class(text[i]) == follow and follow != "number":
                i += 1
        elif kind == "space":
            while i < len(text) and _char_class(text[i]) == "space":
                i += 1
        elif kind == "letter" or _char_class(text[i + 1 : i + 2] or " ") == "letter":
            i += 1
            while i < len(text) and _char_class(text[i]) == "letter":
                i += 1
        else:
            while i < len(text) and _char_class(text[i]) == "other":
                i += 1
        yield text[start:i]


def _corpus_words() -> Counter[tuple[str, ...]]:
    text = _CORPUS
    for token in ADDED_TOKENS:
        text = text.replace(token, "\n")
    words: Counter[tuple[str, ...]] = Counter()
    for word in _pretokenize(text):
        words[tuple(encode_bytes(word))] += 1
    return words


def learn_merges(
    words: Counter[tuple[str, ...]], max_merges: int, max_symbols: int = MAX_MERGED_SYMBOLS
) -> list[tuple[str, str]]:
    """Classic BPE training: repeatedly merge the most frequent adjacent pair (ties: smallest pair first),
    never building a token longer than `max_symbols` byte symbols."""
    sequences = [list(word) for word in words]
    weights = list(words.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    pair_words: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, (symbols, weight) in enumerate(zip(sequences, weights, strict=True)):
        for pair in zip(symbols, symbols[1:], strict=False):
            pair_counts[pair] += weight
            pair_words[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue  # stale heap entry
        if len(pair[0]) + len(pair[1]) > max_symbols:
            continue
        merges.append(pair)
        touched: set[tuple[str, str]] = set()
        for index in sorted(pair_words.pop(pair, set())):
            _merge_in_word(sequences[index], pair, weights[index], index, pair_counts, pair_words, touched)
        del pair_counts[pair]
        for changed in touched:
            if pair_counts.get(changed, 0) > 0:
                heapq.heappush(heap, (-pair_counts[changed], changed))
    return merges


def _merge_in_word(
    symbols: list[str],
    pair: tuple[str, str],
    weight: int,
    index: int,
    pair_counts: Counter[tuple[str, str]],
    pair_words: defaultdict[tuple[str, str], set[int]],
    touched: set[tuple[str, str]],
) -> None:
    for old in zip(symbols, symbols[1:], strict=False):
        pair_counts[old] -= weight
        touched.add(old)
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    symbols[:] = merged
    for new in zip(symbols, symbols[1:], strict=False):
        pair_counts[new] += weight
        pair_words[new].add(index)
        touched.add(new)


def _filler_words() -> Iterator[str]:
    """Pronounceable pseudo-words with a leading space (byte-level "Ġ"), shortest first."""
    syllables = [c + v for c in _FILLER_CONSONANTS for v in _FILLER_VOWELS]
    layer = [""]
    while True:
        layer = [prefix + syllable for prefix in layer for syllable in syllables]
        for word in layer:
            yield "Ġ" + word


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]  # "left right", rank order

    def id_of(self, token: str) -> int:
        return self.tokens.index(token)


def token_type_of_added(token: str) -> int:
    """Converter rule of model-files.md §3.2: think/tool tags are user-defined, other added tokens control."""
    return TOKEN_TYPE_USER_DEFINED if token in USER_DEFINED_TOKENS else TOKEN_TYPE_CONTROL


@lru_cache(maxsize=1)
def build_vocabulary() -> Vocabulary:
    """The full 151748-entry vocabulary; deterministic (independent of the weight seed)."""
    tokens = byte_symbols_in_id_order()
    pairs = learn_merges(_corpus_words(), MAX_MERGES)
    tokens.extend(left + right for left, right in pairs)
    types = [TOKEN_TYPE_NORMAL] * len(tokens)
    taken = set(tokens)
    fillers = (word for word in _filler_words() if word not in taken)
    while len(tokens) < FIRST_ADDED_ID:
        if len(tokens) == UNK_ID:
            tokens.append(UNK_TOKEN)
            types.append(TOKEN_TYPE_CONTROL)
        else:
            tokens.append(next(fillers))
            types.append(TOKEN_TYPE_NORMAL)
    tokens.extend(ADDED_TOKENS)
    types.extend(token_type_of_added(token) for token in ADDED_TOKENS)
    return Vocabulary(tuple(tokens), tuple(types), tuple(f"{left} {right}" for left, right in pairs))
