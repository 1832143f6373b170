// Unit tests of static/wav.js (resampler, int16 conversion, WAV header, base64 round trips).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  base64ToBytes,
  bytesToBase64,
  concatFloat32,
  encodeWav,
  floatToInt16,
  pcm16Base64ToFloat32,
  recordingToBase64Wav,
  resample,
  resampledLength,
  rmsLevel,
} from "../../static/wav.js";

function sine(frequency, rate, seconds, amplitude = 0.5) {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i++) out[i] = amplitude * Math.sin((2 * Math.PI * frequency * i) / rate);
  return out;
}

function rmsOfRange(samples, from, to) {
  return rmsLevel(samples.subarray(from, to));
}

describe("WAV encoder", () => {
  it("writes the exact 44-byte PCM header followed by little-endian samples", () => {
    const bytes = encodeWav(Int16Array.from([1, -2, 32767]), 16000);
    const expectedHeader = [
      ...Buffer.from("RIFF"),
      42, 0, 0, 0, // 36 + 6 data bytes
      ...Buffer.from("WAVE"),
      ...Buffer.from("fmt "),
      16, 0, 0, 0, // fmt chunk size
      1, 0, // PCM
      1, 0, // mono
      0x80, 0x3e, 0, 0, // 16000 Hz
      0x00, 0x7d, 0, 0, // byte rate 32000
      2, 0, // block align
      16, 0, // bits per sample
      ...Buffer.from("data"),
      6, 0, 0, 0,
    ];
    assert.equal(bytes.length, 50);
    assert.deepEqual([...bytes.subarray(0, 44)], expectedHeader);
    assert.deepEqual([...bytes.subarray(44)], [0x01, 0x00, 0xfe, 0xff, 0xff, 0x7f]);
  });

  it("writes a valid header for an empty recording", () => {
    const view = new DataView(encodeWav(new Int16Array(0), 16000).buffer);
    assert.equal(view.byteLength, 44);
    assert.equal(view.getUint32(4, true), 36);
    assert.equal(view.getUint32(40, true), 0);
  });
});

describe("floatToInt16", () => {
  it("scales by 32767, rounds, clips to [-1, 1] and maps NaN to 0", () => {
    const out = floatToInt16(Float32Array.from([0, 0.5, -0.5, 1, -1, 1.5, -7, NaN, Infinity, -Infinity, 1e-6]));
    assert.deepEqual([...out], [0, 16384, -16383, 32767, -32767, 32767, -32767, 0, 32767, -32767, 0]);
  });
});

describe("resample", () => {
  it("produces round(n * to / from) samples", () => {
    assert.equal(resample(new Float32Array(48000), 48000, 16000).length, 16000);
    assert.equal(resample(new Float32Array(44100), 44100, 16000).length, 16000);
    assert.equal(resample(new Float32Array(4800), 48000, 16000).length, 1600);
    assert.equal(resample(new Float32Array(1001), 44100, 16000).length, 363); // 363.17
    assert.equal(resample(new Float32Array(1000), 8000, 16000).length, 2000);
    assert.equal(resampledLength(22050, 22050, 16000), 16000);
  });

  it("returns a copy when the rates are equal", () => {
    const input = Float32Array.from([0.1, 0.2]);
    const out = resample(input, 16000, 16000);
    assert.deepEqual([...out], [...input]);
    assert.notEqual(out, input);
  });

  it("keeps DC exactly and a 1 kHz tone's level when going 48 kHz -> 16 kHz", () => {
    const dc = resample(new Float32Array(4800).fill(0.25), 48000, 16000);
    for (const x of dc) assert.ok(Math.abs(x - 0.25) < 1e-6);
    const tone = resample(sine(1000, 48000, 0.5), 48000, 16000);
    const expected = sine(1000, 16000, 0.5);
    let maxError = 0;
    for (let i = 100; i < tone.length - 100; i++) maxError = Math.max(maxError, Math.abs(tone[i] - expected[i]));
    assert.ok(maxError < 0.01, `max error ${maxError}`);
  });

  it("keeps a 1 kHz tone in phase at 44.1 kHz -> 16 kHz (non-integer ratio)", () => {
    const tone = resample(sine(1000, 44100, 0.5), 44100, 16000);
    const expected = sine(1000, 16000, 0.5);
    let maxError = 0;
    for (let i = 100; i < tone.length - 100; i++) maxError = Math.max(maxError, Math.abs(tone[i] - expected[i]));
    assert.ok(maxError < 0.01, `max error ${maxError}`);
  });

  it("removes content above the new Nyquist frequency instead of aliasing it", () => {
    // 12 kHz cannot exist at 16 kHz; naive decimation would fold it to 4 kHz at full level.
    const out = resample(sine(12000, 48000, 0.5), 48000, 16000);
    const level = rmsOfRange(out, 200, out.length - 200);
    assert.ok(level < 0.01, `aliased level ${level}`);
  });

  it("rejects invalid rates", () => {
    assert.throws(() => resample(new Float32Array(4), 0, 16000), RangeError);
    assert.throws(() => resample(new Float32Array(4), 44100.5, 16000), RangeError);
  });
});

describe("base64 and PCM helpers", () => {
  it("round-trips bytes through base64, also above the chunk size", () => {
    const bytes = new Uint8Array(70000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff;
    const text = bytesToBase64(bytes);
    assert.equal(text, Buffer.from(bytes).toString("base64"));
    assert.deepEqual(base64ToBytes(text), bytes);
  });

  it("decodes int16 little-endian PCM to floats divided by 32768", () => {
    const pcm = Buffer.from(Int16Array.from([0, 16384, -32768, 32767]).buffer).toString("base64");
    assert.deepEqual([...pcm16Base64ToFloat32(pcm)], [0, 0.5, -1, 32767 / 32768]);
  });

  it("turns captured blocks into a 16 kHz WAV with the right length", () => {
    const blocks = [new Float32Array(2048).fill(0.5), new Float32Array(2752).fill(0.5)]; // 0.1 s at 48 kHz
    assert.equal(concatFloat32(blocks).length, 4800);
    const wav = recordingToBase64Wav(blocks, 48000);
    assert.equal(wav.samples, 1600);
    assert.equal(wav.seconds, 0.1);
    const bytes = base64ToBytes(wav.base64);
    const view = new DataView(bytes.buffer);
    assert.equal(bytes.length, 44 + 3200);
    assert.equal(view.getUint32(24, true), 16000);
    assert.equal(view.getInt16(44 + 2 * 800, true), 16384); // 0.5 * 32767 rounded
  });

  it("computes the RMS level of a block", () => {
    assert.equal(rmsLevel(new Float32Array(0)), 0);
    assert.equal(rmsLevel(Float32Array.from([0.5, -0.5])), 0.5);
  });
});
