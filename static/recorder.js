// Microphone capture: getUserMedia mono -> AudioWorklet (ScriptProcessor only where AudioWorklet is
// missing). The AudioContext runs at the device's own rate; resampling to 16 kHz happens in wav.js.
import { rmsLevel } from "./wav.js";

const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url);
const FLUSH_TIMEOUT_MS = 300;

export class MicRecorder {
  // onLevel(rms) is called for every captured block (for the level meter).
  constructor({ onLevel = () => {} } = {}) {
    this.onLevel = onLevel;
    this.context = null;
    this.stream = null;
    this.source = null;
    this.node = null;
    this.chunks = [];
    this.usesWorklet = false;
  }

  get sampleRate() {
    return this.context ? this.context.sampleRate : 0;
  }

  get capturedSeconds() {
    let frames = 0;
    for (const chunk of this.chunks) frames += chunk.length;
    return this.sampleRate ? frames / this.sampleRate : 0;
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error(
        "Microphone access is not available (browsers allow it only on https:// or http://localhost).",
      );
    }
    this.chunks = [];
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
      this.context = new Context({ latencyHint: "interactive" });
      if (this.context.state === "suspended") await this.context.resume();
      this.source = this.context.createMediaStreamSource(this.stream);
      this.node = await this.#createCaptureNode();
      this.source.connect(this.node);
    } catch (error) {
      await this.#release();
      throw error;
    }
  }

  // Stops capturing; returns {chunks, sampleRate} with every captured block.
  async stop() {
    if (this.usesWorklet && this.node) await this.#flushWorklet();
    const result = { chunks: this.chunks, sampleRate: this.sampleRate };
    await this.#release();
    this.chunks = [];
    return result;
  }

  async cancel() {
    await this.#release();
    this.chunks = [];
  }

  #accept(block) {
    this.chunks.push(block);
    this.onLevel(rmsLevel(block));
  }

  async #createCaptureNode() {
    if (this.context.audioWorklet && typeof AudioWorkletNode !== "undefined") {
      try {
        await this.context.audioWorklet.addModule(WORKLET_URL);
        const node = new AudioWorkletNode(this.context, "omni-capture", {
          numberOfInputs: 1,
          numberOfOutputs: 0,
          channelCount: 1,
          channelCountMode: "explicit",
          channelInterpretation: "speakers",
        });
        node.port.onmessage = (event) => {
          if (event.data instanceof Float32Array) this.#accept(event.data);
        };
        this.usesWorklet = true;
        return node;
      } catch (error) {
        console.warn("AudioWorklet unavailable, falling back to ScriptProcessorNode:", error);
      }
    }
    this.usesWorklet = false;
    const node = this.context.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (event) => this.#accept(new Float32Array(event.inputBuffer.getChannelData(0)));
    // A ScriptProcessor only runs while connected to the destination; its output stays silent.
    node.connect(this.context.destination);
    return node;
  }

  #flushWorklet() {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, FLUSH_TIMEOUT_MS);
      const previous = this.node.port.onmessage;
      this.node.port.onmessage = (event) => {
        if (event.data === "flushed") {
          clearTimeout(timer);
          resolve();
        } else if (previous) {
          previous(event);
        }
      };
      this.node.port.postMessage("flush");
    });
  }

  async #release() {
    if (this.source) this.source.disconnect();
    if (this.node) {
      this.node.disconnect();
      if (this.node.port) this.node.port.onmessage = null;
      else this.node.onaudioprocess = null;
    }
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.context) await this.context.close().catch(() => {});
    this.source = null;
    this.node = null;
    this.stream = null;
    this.context = null;
  }
}
