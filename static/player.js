// Gapless playback of streamed PCM chunks. PlaybackScheduler is the pure timing logic (unit-tested in
// node); PcmPlayer binds it to Web Audio in the browser.

// Decides when each chunk starts: start = max(nextTime, now + preroll). Chunks that arrive while the
// previous one is still queued start exactly where it ends (gapless). A chunk that arrives too late
// (the queue ran dry, start > nextTime) is counted as a gap (underrun).
export class PlaybackScheduler {
  constructor({ preroll = 0.08 } = {}) {
    this.preroll = preroll;
    this.reset();
  }

  reset() {
    this.nextTime = 0;
    this.chunks = 0;
    this.gaps = 0;
    this.gapSeconds = 0;
    this.scheduledSeconds = 0;
  }

  // now and duration in seconds (AudioContext clock). Returns {start, end, gap} where gap is the silence
  // inserted before this chunk (0 when gapless; the first chunk's preroll is not a gap).
  schedule(now, duration) {
    const earliest = now + this.preroll;
    const isFirst = this.chunks === 0;
    const start = isFirst ? earliest : Math.max(this.nextTime, earliest);
    const gap = isFirst ? 0 : start - this.nextTime;
    if (gap > 1e-9) {
      this.gaps += 1;
      this.gapSeconds += gap;
    }
    this.chunks += 1;
    this.nextTime = start + duration;
    this.scheduledSeconds += duration;
    return { start, end: this.nextTime, gap: gap > 1e-9 ? gap : 0 };
  }

  // Seconds of scheduled audio not yet played at time `now`.
  remaining(now) {
    return this.chunks === 0 ? 0 : Math.max(0, this.nextTime - now);
  }
}

// Web Audio player: one persistent AudioContext (created on first use, at the device rate; buffers are
// created at the PCM's own rate and resampled by the browser).
export class PcmPlayer {
  constructor({ preroll = 0.08 } = {}) {
    this.scheduler = new PlaybackScheduler({ preroll });
    this.context = null;
    this.sources = new Set();
  }

  // Call from a user gesture (click/keypress) so that autoplay policies let the context run.
  unlock() {
    const context = this.#ensureContext();
    if (context.state === "suspended") context.resume().catch(() => {});
  }

  // Starts a new answer: gaps are counted per answer.
  beginStream() {
    this.stop();
    this.scheduler.reset();
  }

  enqueue(samples, sampleRate) {
    if (samples.length === 0) return null;
    const context = this.#ensureContext();
    const buffer = context.createBuffer(1, samples.length, sampleRate);
    buffer.copyToChannel(samples, 0);
    const slot = this.scheduler.schedule(context.currentTime, buffer.duration);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.onended = () => this.sources.delete(source);
    this.sources.add(source);
    source.start(slot.start);
    return slot;
  }

  // Cuts all queued audio now; counters stay readable until the next beginStream().
  stop() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // already stopped
      }
    }
    this.sources.clear();
    this.scheduler.nextTime = this.context ? this.context.currentTime : 0;
  }

  remainingSeconds() {
    if (!this.context || this.sources.size === 0) return 0;
    return this.scheduler.remaining(this.context.currentTime);
  }

  get stats() {
    const s = this.scheduler;
    return { chunks: s.chunks, gaps: s.gaps, gapSeconds: s.gapSeconds, scheduledSeconds: s.scheduledSeconds };
  }

  #ensureContext() {
    if (!this.context) {
      const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
      if (!Context) throw new Error("Web Audio is not available in this browser");
      this.context = new Context({ latencyHint: "interactive" });
    }
    return this.context;
  }
}
