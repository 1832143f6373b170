// Formatting of the "Last answer" numbers that come from the server (pure functions, unit-tested in node).

const MS_PER_SPEECH_TOKEN = 40;
const NONE = "–";

export const formatMs = (value) => `${Math.round(value)} ms`;

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);

// Speech tokens of the answer: the stats event's count once it arrived, else the sum of the tts_chunk events
// seen so far (liveTokens). "–" for an answer without speech (text-only session, no TTS stage).
export function formatSpeechTokens(stats, liveTokens = 0) {
  const count = isNumber(stats?.speech_tokens) ? stats.speech_tokens : liveTokens;
  if (!isNumber(count) || count <= 0) return NONE;
  const seconds = (count * MS_PER_SPEECH_TOKEN) / 1000;
  return `${count} (${seconds.toFixed(1)} s of audio)`;
}

// Time the TTS spent on the answer, and when the first second of speech (25 tokens, one Token2Wav window)
// was ready, counted from the generate request.
export function formatTtsTime(stats) {
  if (!isNumber(stats?.tts_ms) || !(stats.speech_tokens > 0)) return NONE;
  const parts = [formatMs(stats.tts_ms)];
  if (isNumber(stats.first_speech_group_ms) && stats.first_speech_group_ms >= 0) {
    parts.push(`first 1 s at ${formatMs(stats.first_speech_group_ms)}`);
  }
  return parts.join(" · ");
}
