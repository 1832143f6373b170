// Audio conversions for the microphone path (float capture at the device rate -> 16 kHz mono 16-bit WAV)
// and the playback path (base64 int16 PCM -> float). Pure module: unit-tested in node.

export const SPEECH_INPUT_RATE = 16000;
const WAV_HEADER_BYTES = 44;

export function concatFloat32(chunks) {
  let total = 0;
  for (const chunk of chunks) total += chunk.length;
  const out = new Float32Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

export function resampledLength(inputLength, fromRate, toRate) {
  return Math.round((inputLength * toRate) / fromRate);
}

// Band-limited resampling: each output sample is a Hann-windowed sinc interpolation of the input,
// with the cutoff at the lower Nyquist frequency, so 48 kHz -> 16 kHz does not alias. The kernel depends
// only on the output sample's fractional position, which repeats with period toRate / gcd(rates): kernels
// are computed once per phase.
export function resample(input, fromRate, toRate, halfWidth = 16) {
  if (!(Number.isInteger(fromRate) && Number.isInteger(toRate) && fromRate > 0 && toRate > 0)) {
    throw new RangeError(`invalid sample rates ${fromRate} -> ${toRate}`);
  }
  if (fromRate === toRate) return Float32Array.from(input);
  const divisor = gcd(fromRate, toRate);
  const inStep = fromRate / divisor; // output i sits at input position i * inStep / phases
  const phases = toRate / divisor;
  const cutoff = Math.min(1, toRate / fromRate); // relative to the input Nyquist frequency
  const radius = Math.ceil(halfWidth / cutoff); // taps on each side, in input samples
  const kernels = new Map();
  const outLength = resampledLength(input.length, fromRate, toRate);
  const out = new Float32Array(outLength);
  for (let i = 0; i < outLength; i++) {
    const base = Math.floor((i * inStep) / phases);
    const phase = i * inStep - base * phases; // exact integer arithmetic
    let kernel = kernels.get(phase);
    if (kernel === undefined) {
      kernel = makeKernel(phase / phases, radius, cutoff);
      kernels.set(phase, kernel);
    }
    // kernel[t] weighs input[base - radius + t]
    const firstTap = Math.max(0, radius - base);
    const lastTap = Math.min(kernel.length - 1, input.length - 1 - base + radius);
    let acc = 0;
    let weightSum = 0;
    for (let t = firstTap; t <= lastTap; t++) {
      acc += input[base - radius + t] * kernel[t];
      weightSum += kernel[t];
    }
    // Normalising by the weight sum keeps DC gain exactly 1, also at the edges.
    out[i] = weightSum !== 0 ? acc / weightSum : 0;
  }
  return out;
}

function makeKernel(fraction, radius, cutoff) {
  const kernel = new Float64Array(2 * radius + 2);
  for (let t = 0; t < kernel.length; t++) {
    const distance = t - radius - fraction;
    kernel[t] = cutoff * sinc(cutoff * distance) * hann(distance / (radius + 1));
  }
  return kernel;
}

function gcd(a, b) {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

function sinc(x) {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

function hann(x) {
  // x in [-1, 1]
  return Math.abs(x) >= 1 ? 0 : 0.5 + 0.5 * Math.cos(Math.PI * x);
}

// Float [-1, 1] -> int16 with clipping; NaN/Infinity-safe (NaN -> 0).
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const x = samples[i];
    const clipped = Number.isNaN(x) ? 0 : Math.max(-1, Math.min(1, x));
    out[i] = Math.round(clipped * 32767);
  }
  return out;
}

// 16-bit PCM mono WAV file bytes (RIFF little-endian, 44-byte header).
export function encodeWav(int16Samples, sampleRate) {
  const dataBytes = int16Samples.length * 2;
  const bytes = new Uint8Array(WAV_HEADER_BYTES + dataBytes);
  const view = new DataView(bytes.buffer);
  writeAscii(bytes, 0, "RIFF");
  view.setUint32(4, 36 + dataBytes, true);
  writeAscii(bytes, 8, "WAVE");
  writeAscii(bytes, 12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // byte rate
  view.setUint16(32, 2, true); // block align
  view.setUint16(34, 16, true); // bits per sample
  writeAscii(bytes, 36, "data");
  view.setUint32(40, dataBytes, true);
  for (let i = 0; i < int16Samples.length; i++) view.setInt16(WAV_HEADER_BYTES + 2 * i, int16Samples[i], true);
  return bytes;
}

function writeAscii(bytes, offset, text) {
  for (let i = 0; i < text.length; i++) bytes[offset + i] = text.charCodeAt(i);
}

export function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 0x8000; // keep String.fromCharCode's argument count bounded
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// base64 of raw int16 little-endian mono PCM (the SSE `audio` payload) -> float samples in [-1, 1).
export function pcm16Base64ToFloat32(text) {
  const bytes = base64ToBytes(text);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = Math.floor(bytes.length / 2);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

// Microphone capture (Float32 blocks at the device rate) -> base64 WAV at 16 kHz, ready for {audio}.
export function recordingToBase64Wav(chunks, inputRate) {
  const merged = concatFloat32(chunks);
  const speech = resample(merged, inputRate, SPEECH_INPUT_RATE);
  return {
    base64: bytesToBase64(encodeWav(floatToInt16(speech), SPEECH_INPUT_RATE)),
    samples: speech.length,
    seconds: speech.length / SPEECH_INPUT_RATE,
  };
}

// Root-mean-square level of a block, for the level meter.
export function rmsLevel(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / samples.length);
}
