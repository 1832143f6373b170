// Unit tests of static/player.js: the scheduling math, and the player on a fake AudioContext fed with SSE
// audio events through the page's own parser and decoder.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { PcmPlayer, PlaybackScheduler } from "../../static/player.js";
import { SseParser, classifySseMessage } from "../../static/sse.js";
import { pcm16Base64ToFloat32 } from "../../static/wav.js";

describe("PlaybackScheduler", () => {
  it("starts the first chunk after the preroll and queues early chunks back to back", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.1 });
    const first = scheduler.schedule(2.0, 1.0);
    assert.deepEqual(first, { start: 2.1, end: 3.1, gap: 0 });
    // the next chunks arrive while audio is still queued: they start exactly where the previous one ends
    const second = scheduler.schedule(2.5, 0.5);
    const third = scheduler.schedule(2.6, 1.25);
    assert.equal(second.start, first.end);
    assert.equal(third.start, second.end);
    assert.equal(third.end, 4.85);
    assert.equal(scheduler.gaps, 0);
    assert.equal(scheduler.gapSeconds, 0);
    assert.equal(scheduler.scheduledSeconds, 2.75);
  });

  it("counts an underrun when a chunk arrives after the queue ran dry, and restarts after the preroll", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.1 });
    scheduler.schedule(0, 1.0); // plays 0.1 .. 1.1
    const late = scheduler.schedule(1.5, 1.0);
    assert.equal(late.start, 1.6);
    assert.ok(Math.abs(late.gap - 0.5) < 1e-12);
    assert.equal(scheduler.gaps, 1);
    assert.ok(Math.abs(scheduler.gapSeconds - 0.5) < 1e-12);
    const onTime = scheduler.schedule(2.0, 1.0);
    assert.equal(onTime.start, 2.6);
    assert.equal(onTime.gap, 0);
    assert.equal(scheduler.gaps, 1);
  });

  it("counts a gap when a chunk arrives inside the preroll window of the queue's end", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.125 });
    scheduler.schedule(0, 1.0); // ends at 1.125
    const tight = scheduler.schedule(1.0625, 1.0); // start = max(1.125, 1.1875)
    assert.deepEqual(tight, { start: 1.1875, end: 2.1875, gap: 0.0625 });
    assert.equal(scheduler.gaps, 1);
  });

  it("reports remaining audio and resets all counters", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0 });
    assert.equal(scheduler.remaining(5), 0);
    scheduler.schedule(0, 2.0);
    scheduler.schedule(3, 1.0);
    assert.equal(scheduler.remaining(3.5), 0.5);
    assert.equal(scheduler.remaining(10), 0);
    scheduler.reset();
    assert.equal(scheduler.chunks, 0);
    assert.equal(scheduler.gaps, 0);
    assert.equal(scheduler.scheduledSeconds, 0);
    assert.deepEqual(scheduler.schedule(7, 1.0), { start: 7, end: 8, gap: 0 });
  });
});

// ---------------------------------------------------------------- PcmPlayer with a fake Web Audio

// FakeAudioContext: records what the player asks Web Audio to do; its clock is set by the test.
class FakeAudioContext {
  static instances = [];

  constructor(options) {
    this.options = options;
    this.currentTime = 0;
    this.state = "running";
    this.destination = { name: "speakers" };
    this.started = [];
    FakeAudioContext.instances.push(this);
  }

  createBuffer(channels, length, sampleRate) {
    const data = new Float32Array(length);
    return {
      numberOfChannels: channels,
      length,
      sampleRate,
      duration: length / sampleRate,
      data,
      copyToChannel: (samples, channel) => {
        assert.equal(channel, 0);
        data.set(samples);
      },
    };
  }

  createBufferSource() {
    const context = this;
    return {
      buffer: null,
      connectedTo: null,
      startAt: null,
      stopped: false,
      onended: null,
      connect(node) {
        this.connectedTo = node;
      },
      start(when) {
        this.startAt = when;
        context.started.push(this);
      },
      stop() {
        this.stopped = true;
      },
    };
  }

  resume() {
    this.state = "running";
    return Promise.resolve();
  }
}

function int16Base64(values) {
  return Buffer.from(new Int16Array(values).buffer).toString("base64");
}

// One SSE `audio` message as the server sends it (app-api.md §3: chunk_data.wav = base64 int16 LE PCM).
function audioMessage(values) {
  const payload = { chunk_data: { text: "", wav: int16Base64(values), sample_rate: 24000, n_input_tokens: 28 } };
  return `event: audio\ndata: ${JSON.stringify(payload)}\n\n`;
}

// What app.js does with the stream: parse, classify, decode the audio events and queue them.
function playStream(player, text) {
  const parser = new SseParser();
  const events = parser.push(text).map(classifySseMessage);
  for (const event of events) {
    if (event.type === "audio") player.enqueue(pcm16Base64ToFloat32(event.wav), event.sampleRate);
  }
  return events;
}

describe("PcmPlayer", () => {
  const realContext = globalThis.AudioContext;
  beforeEach(() => {
    FakeAudioContext.instances = [];
    globalThis.AudioContext = FakeAudioContext;
  });
  afterEach(() => {
    globalThis.AudioContext = realContext;
  });

  it("plays SSE audio events as 24 kHz float buffers, back to back", () => {
    const player = new PcmPlayer({ preroll: 0.1 });
    player.beginStream();
    const first = Array.from({ length: 20160 }, (_, i) => (i % 200) - 100);
    const second = new Array(24000).fill(-32768);
    const events = playStream(player, audioMessage(first) + audioMessage(second) + "data: [DONE]\n\n");
    assert.deepEqual(
      events.map((event) => event.type),
      ["audio", "audio", "end"],
    );
    const [context] = FakeAudioContext.instances;
    assert.equal(FakeAudioContext.instances.length, 1);
    const [a, b] = context.started;
    assert.equal(a.buffer.sampleRate, 24000);
    assert.equal(a.buffer.numberOfChannels, 1);
    assert.equal(a.buffer.length, 20160);
    assert.deepEqual(Array.from(a.buffer.data.slice(0, 3)), [-100 / 32768, -99 / 32768, -98 / 32768]);
    assert.ok(b.buffer.data.every((x) => x === -1));
    assert.equal(a.connectedTo, context.destination);
    assert.equal(a.startAt, 0.1);
    assert.equal(b.startAt, 0.1 + 20160 / 24000); // gapless: where the first ends
    const { scheduledSeconds, ...counts } = player.stats;
    assert.deepEqual(counts, { chunks: 2, gaps: 0, gapSeconds: 0 });
    assert.ok(Math.abs(scheduledSeconds - (20160 + 24000) / 24000) < 1e-12);
    context.currentTime = 1.0;
    assert.ok(Math.abs(player.remainingSeconds() - 0.94) < 1e-9);
  });

  it("counts a late chunk as a playback gap", () => {
    const player = new PcmPlayer({ preroll: 0.05 });
    player.beginStream();
    player.enqueue(new Float32Array(12000), 24000); // 0.05 .. 0.55
    const [context] = FakeAudioContext.instances;
    context.currentTime = 0.8;
    const slot = player.enqueue(new Float32Array(24000), 24000);
    assert.ok(Math.abs(slot.start - 0.85) < 1e-9);
    assert.equal(player.stats.gaps, 1);
    assert.ok(Math.abs(player.stats.gapSeconds - 0.3) < 1e-9);
  });

  it("stop() cuts every queued source and a new stream starts with fresh counters", () => {
    const player = new PcmPlayer({ preroll: 0 });
    player.beginStream();
    player.enqueue(new Float32Array(24000), 24000);
    player.enqueue(new Float32Array(24000), 24000);
    const [context] = FakeAudioContext.instances;
    context.currentTime = 0.5;
    player.stop();
    assert.ok(context.started.every((source) => source.stopped));
    assert.equal(player.remainingSeconds(), 0);
    assert.equal(player.stats.chunks, 2); // readable until the next answer

    context.currentTime = 3.0;
    player.beginStream();
    assert.deepEqual(player.stats, { chunks: 0, gaps: 0, gapSeconds: 0, scheduledSeconds: 0 });
    const slot = player.enqueue(new Float32Array(2400), 24000);
    assert.deepEqual(slot, { start: 3.0, end: 3.1, gap: 0 });
    assert.equal(context.started.at(-1).stopped, false);
  });

  it("ignores empty chunks and forgets sources that ended", () => {
    const player = new PcmPlayer({ preroll: 0 });
    assert.equal(player.enqueue(new Float32Array(0), 24000), null);
    assert.equal(FakeAudioContext.instances.length, 0); // no context for nothing to play
    player.enqueue(new Float32Array(240), 24000);
    const [source] = FakeAudioContext.instances[0].started;
    assert.equal(player.sources.size, 1);
    source.onended();
    assert.equal(player.sources.size, 0);
    assert.equal(player.remainingSeconds(), 0);
  });
});
