// The "Last answer" numbers: the client's own measurements of one answer plus the server's stats event
// (pure functions, unit-tested in node).

const MS_PER_SPEECH_TOKEN = 40;
const PCM_RATE = 24000;
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

// Time the Token2Wav stage spent on the answer's audio, and that time per second of audio (its own
// real-time factor: below 1 it keeps up with playback).
export function formatToken2WavTime(stats) {
  if (!isNumber(stats?.token2wav_ms) || !(stats.audio_samples > 0)) return NONE;
  const seconds = stats.audio_samples / PCM_RATE;
  return `${formatMs(stats.token2wav_ms)} (${(stats.token2wav_ms / 1000 / seconds).toFixed(2)} × real time)`;
}

// Time to first audio: from pressing Send (prefill included) on this page, and the server's own figure
// (generate call -> first audio event) once the stats arrived.
export function formatFirstAudio(turn) {
  if (!turn.firstAudioAt) return NONE;
  const first = turn.serverStats?.first_audio_ms;
  const server = isNumber(first) && first >= 0 ? ` · server ${formatMs(first)}` : "";
  return `${formatMs(turn.firstAudioAt - turn.sentAt)}${server}`;
}

// Real-time factor of the answer as heard here: (last audio chunk's arrival - the answer request) / seconds
// of audio received. Below 1 the audio arrives faster than it plays. Live while the answer streams.
export function audioRtf(turn) {
  if (!(turn.audioSeconds > 0) || !turn.generateStartedAt || !turn.lastAudioAt) return null;
  return (turn.lastAudioAt - turn.generateStartedAt) / 1000 / turn.audioSeconds;
}

export function formatGaps(playerStats) {
  if (!(playerStats.chunks > 0)) return NONE;
  return `${playerStats.gaps} (${formatMs(playerStats.gapSeconds * 1000)})`;
}

function formatPrefill(turn, stats) {
  const parts = [];
  if (turn.prefillClientMs !== null) parts.push(formatMs(turn.prefillClientMs));
  if (isNumber(stats.prefill_ms)) parts.push(`server ${formatMs(stats.prefill_ms)}`);
  return parts.join(" · ") || NONE;
}

function formatFirstText(turn, stats) {
  if (!turn.firstTextAt) return NONE;
  const server = isNumber(stats.ttft_ms) ? ` · server ${formatMs(stats.ttft_ms)}` : "";
  return `${formatMs(turn.firstTextAt - turn.sentAt)}${server}`;
}

function formatClientTokenRate(turn) {
  const span = (turn.lastTextAt - turn.firstTextAt) / 1000;
  return turn.textEvents > 1 && span > 0 ? ((turn.textEvents - 1) / span).toFixed(1) : NONE;
}

function formatTotal(turn, stats) {
  const end = turn.endedAt || turn.lastEventAt;
  const wall = end ? formatMs(end - turn.sentAt) : "";
  const server = isNumber(stats.total_ms) ? `server ${formatMs(stats.total_ms)}` : "";
  return [wall, server].filter(Boolean).join(" · ") || NONE;
}

// One answer's panel values, keyed by the stat ids of index.html (stat-<id>). `turn` holds the page's
// measurements (performance.now() times in ms, 0 = not yet), `playerStats` the player's per-answer counters.
export function computeTurnStats(turn, playerStats) {
  const stats = turn.serverStats || {};
  const rtf = audioRtf(turn);
  return {
    prefill: formatPrefill(turn, stats),
    "first-text": formatFirstText(turn, stats),
    "first-audio": formatFirstAudio(turn),
    tps: isNumber(stats.tokens_per_s) ? stats.tokens_per_s.toFixed(1) : NONE,
    "tps-client": formatClientTokenRate(turn),
    tokens: isNumber(stats.decode_tokens) ? String(stats.decode_tokens) : NONE,
    audio: turn.audioSeconds > 0 ? `${turn.audioSeconds.toFixed(2)} s (${turn.audioChunks} chunks)` : NONE,
    speech: formatSpeechTokens(turn.serverStats, turn.speechTokens),
    tts: formatTtsTime(turn.serverStats),
    t2w: formatToken2WavTime(turn.serverStats),
    rtf: rtf === null ? NONE : rtf.toFixed(2),
    gaps: formatGaps(playerStats),
    total: formatTotal(turn, stats),
    reason: turn.doneReason || (turn.stopped ? "stopped" : turn.closed ? "incomplete" : "…"),
  };
}
