// AudioWorklet processor for the microphone: copies channel 0 of each render quantum and posts it to the
// main thread in blocks of about 2048 frames (fewer messages than one per 128-frame quantum).
const BLOCK_FRAMES = 2048;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK_FRAMES);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  flush() {
    if (this.filled > 0) {
      this.port.postMessage(this.block.slice(0, this.filled));
      this.filled = 0;
    }
    this.port.postMessage("flushed");
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let offset = 0;
    while (offset < channel.length) {
      const count = Math.min(channel.length - offset, BLOCK_FRAMES - this.filled);
      this.block.set(channel.subarray(offset, offset + count), this.filled);
      this.filled += count;
      offset += count;
      if (this.filled === BLOCK_FRAMES) {
        this.port.postMessage(this.block.slice());
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("omni-capture", CaptureProcessor);
