// Unit tests of static/stats.js: the numbers of the "Last answer" panel.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  audioRtf,
  computeTurnStats,
  formatFirstAudio,
  formatGaps,
  formatMs,
  formatSpeechTokens,
  formatToken2WavTime,
  formatTtsTime,
} from "../../static/stats.js";

const SPOKEN = { speech_tokens: 60, tts_ms: 100.4, first_speech_group_ms: 1147.79 };

describe("formatMs", () => {
  it("rounds to whole milliseconds", () => {
    assert.equal(formatMs(1147.5), "1148 ms");
    assert.equal(formatMs(0.2), "0 ms");
  });
});

describe("formatSpeechTokens", () => {
  it("shows the stats' count with its audio length (40 ms per token)", () => {
    assert.equal(formatSpeechTokens(SPOKEN), "60 (2.4 s of audio)");
    assert.equal(formatSpeechTokens({ speech_tokens: 1 }, 99), "1 (0.0 s of audio)");
  });

  it("counts the tts_chunk events until the stats arrive", () => {
    assert.equal(formatSpeechTokens(null, 45), "45 (1.8 s of audio)");
    assert.equal(formatSpeechTokens({ ttft_ms: 3 }, 20), "20 (0.8 s of audio)");
  });

  it("is a dash for an answer without speech or with malformed numbers", () => {
    assert.equal(formatSpeechTokens(null), "–");
    assert.equal(formatSpeechTokens({ speech_tokens: 0, tts_ms: 0, first_speech_group_ms: -1 }), "–");
    assert.equal(formatSpeechTokens({ speech_tokens: "60" }), "–");
    assert.equal(formatSpeechTokens(undefined, Number.NaN), "–");
  });
});

describe("formatTtsTime", () => {
  it("shows the TTS time and when the first second of speech was ready", () => {
    assert.equal(formatTtsTime(SPOKEN), "100 ms · first 1 s at 1148 ms");
  });

  it("leaves out the first second when the answer had no full group (-1)", () => {
    assert.equal(formatTtsTime({ speech_tokens: 12, tts_ms: 30, first_speech_group_ms: -1 }), "30 ms");
    assert.equal(formatTtsTime({ speech_tokens: 12, tts_ms: 30 }), "30 ms");
  });

  it("is a dash without speech or before the stats arrive", () => {
    assert.equal(formatTtsTime({ speech_tokens: 0, tts_ms: 0, first_speech_group_ms: -1 }), "–");
    assert.equal(formatTtsTime(null), "–");
    assert.equal(formatTtsTime({ tts_ms: 5 }), "–");
  });
});

describe("formatToken2WavTime", () => {
  it("shows the Token2Wav time and its share of the audio length", () => {
    // 96 000 samples = 4 s of audio at 24 kHz, made in 1 s
    assert.equal(formatToken2WavTime({ token2wav_ms: 1000.4, audio_samples: 96000 }), "1000 ms (0.25 × real time)");
  });

  it("is a dash without audio or before the stats arrive", () => {
    assert.equal(formatToken2WavTime({ token2wav_ms: 0, audio_samples: 0, first_audio_ms: -1 }), "–");
    assert.equal(formatToken2WavTime({ speech_tokens: 20 }), "–");
    assert.equal(formatToken2WavTime(null), "–");
  });
});

// A spoken answer as app.js records it (performance.now() ms): Send at 1000, prefill answered at 1200
// (the answer request goes out then), audio chunks of 0.84 s and 1 s arriving at 2000 and 2600.
function spokenTurn(overrides = {}) {
  return {
    sentAt: 1000,
    prefillClientMs: 200,
    generateStartedAt: 1200,
    firstTextAt: 1300,
    lastTextAt: 1900,
    textEvents: 4,
    firstAudioAt: 2000,
    lastAudioAt: 2600,
    audioSeconds: 1.84,
    audioChunks: 2,
    speechTokens: 43,
    serverStats: null,
    doneReason: "",
    endedAt: 0,
    lastEventAt: 2600,
    stopped: false,
    closed: false,
    ...overrides,
  };
}

const SERVER_STATS = {
  prefill_ms: 150.2,
  ttft_ms: 90,
  tokens_per_s: 41.25,
  decode_tokens: 20,
  total_ms: 1700,
  speech_tokens: 43,
  tts_ms: 300,
  first_speech_group_ms: 500,
  audio_samples: 44160,
  token2wav_ms: 460,
  first_audio_ms: 790.6,
};

describe("time to first audio and RTF", () => {
  it("counts first audio from Send, with the server's figure once the stats arrived", () => {
    assert.equal(formatFirstAudio(spokenTurn()), "1000 ms");
    assert.equal(formatFirstAudio(spokenTurn({ serverStats: SERVER_STATS })), "1000 ms · server 791 ms");
    assert.equal(formatFirstAudio(spokenTurn({ serverStats: { first_audio_ms: -1 } })), "1000 ms");
    assert.equal(formatFirstAudio(spokenTurn({ firstAudioAt: 0 })), "–");
  });

  it("RTF is (last audio arrival - answer request) / seconds of audio", () => {
    assert.ok(Math.abs(audioRtf(spokenTurn()) - 1.4 / 1.84) < 1e-12);
    assert.equal(audioRtf(spokenTurn({ audioSeconds: 0, firstAudioAt: 0, lastAudioAt: 0 })), null);
    assert.equal(audioRtf(spokenTurn({ generateStartedAt: 0 })), null);
  });

  it("shows playback gaps only once something was played", () => {
    assert.equal(formatGaps({ chunks: 0, gaps: 0, gapSeconds: 0 }), "–");
    assert.equal(formatGaps({ chunks: 5, gaps: 0, gapSeconds: 0 }), "0 (0 ms)");
    assert.equal(formatGaps({ chunks: 5, gaps: 2, gapSeconds: 0.1234 }), "2 (123 ms)");
  });
});

describe("computeTurnStats", () => {
  const played = { chunks: 2, gaps: 1, gapSeconds: 0.05, scheduledSeconds: 1.84 };

  it("fills every panel value of a finished spoken answer", () => {
    const turn = spokenTurn({ serverStats: SERVER_STATS, doneReason: "eos", endedAt: 2700, closed: true });
    assert.deepEqual(computeTurnStats(turn, played), {
      prefill: "200 ms · server 150 ms",
      "first-text": "300 ms · server 90 ms",
      "first-audio": "1000 ms · server 791 ms",
      tps: "41.3",
      "tps-client": "5.0",
      tokens: "20",
      audio: "1.84 s (2 chunks)",
      speech: "43 (1.7 s of audio)",
      tts: "300 ms · first 1 s at 500 ms",
      t2w: "460 ms (0.25 × real time)",
      rtf: "0.76",
      gaps: "1 (50 ms)",
      total: "1700 ms · server 1700 ms",
      reason: "eos",
    });
  });

  it("shows live values while the answer streams and dashes for what has not come", () => {
    const live = computeTurnStats(spokenTurn(), played);
    assert.equal(live["first-audio"], "1000 ms");
    assert.equal(live.rtf, "0.76");
    assert.equal(live.speech, "43 (1.7 s of audio)");
    assert.equal(live.t2w, "–");
    assert.equal(live.total, "1600 ms");
    assert.equal(live.reason, "…");
  });

  it("a text-only answer has no audio figures", () => {
    const silent = spokenTurn({
      firstAudioAt: 0,
      lastAudioAt: 0,
      audioSeconds: 0,
      audioChunks: 0,
      speechTokens: 0,
      serverStats: { ...SERVER_STATS, speech_tokens: 0, tts_ms: 0, audio_samples: 0, token2wav_ms: 0 },
      closed: true,
      stopped: true,
    });
    const values = computeTurnStats(silent, { chunks: 0, gaps: 0, gapSeconds: 0 });
    for (const id of ["first-audio", "audio", "speech", "tts", "t2w", "rtf", "gaps"]) {
      assert.equal(values[id], "–", id);
    }
    assert.equal(values.reason, "stopped");
  });
});
