// Unit tests of static/stats.js: the speech numbers of the "Last answer" panel.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { formatMs, formatSpeechTokens, formatTtsTime } from "../../static/stats.js";

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
