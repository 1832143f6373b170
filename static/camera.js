// Camera: getUserMedia video into a live <video> preview, and the current frame as a JPEG (longest side at
// most FRAME_MAX_SIDE) for the next prefill. The media devices and the canvas are injectable for tests.
import { FRAME_JPEG_QUALITY, FRAME_MAX_SIDE, cappedFrameSize, splitDataUrl } from "./vision.js";

export class CameraCapture {
  constructor({
    mediaDevices = globalThis.navigator && globalThis.navigator.mediaDevices,
    createCanvas = () => document.createElement("canvas"),
    maxSide = FRAME_MAX_SIDE,
    quality = FRAME_JPEG_QUALITY,
  } = {}) {
    this.mediaDevices = mediaDevices;
    this.createCanvas = createCanvas;
    this.maxSide = maxSide;
    this.quality = quality;
    this.stream = null;
    this.video = null;
  }

  get active() {
    return this.stream !== null;
  }

  // Starts the camera and shows it in `video` (muted, inline, playing).
  async start(video) {
    if (!this.mediaDevices || !this.mediaDevices.getUserMedia) {
      throw new Error("Camera access is not available (browsers allow it only on https:// or http://localhost).");
    }
    if (this.active) return;
    this.stream = await this.mediaDevices.getUserMedia({
      video: { width: { ideal: this.maxSide }, height: { ideal: this.maxSide } },
      audio: false,
    });
    this.video = video;
    video.muted = true;
    video.playsInline = true;
    video.srcObject = this.stream;
    await video.play();
  }

  stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.video) this.video.srcObject = null;
    this.stream = null;
    this.video = null;
  }

  // The frame on screen now as { base64, dataUrl, type, width, height }, or null while the camera has not
  // delivered a frame yet.
  captureJpeg() {
    if (!this.active || !this.video) return null;
    const size = cappedFrameSize(this.video.videoWidth, this.video.videoHeight, this.maxSide);
    if (!size) return null;
    const canvas = this.createCanvas();
    canvas.width = size.width;
    canvas.height = size.height;
    canvas.getContext("2d").drawImage(this.video, 0, 0, size.width, size.height);
    const dataUrl = canvas.toDataURL("image/jpeg", this.quality);
    const { type, base64 } = splitDataUrl(dataUrl);
    return { base64, dataUrl, type, width: size.width, height: size.height };
  }
}
