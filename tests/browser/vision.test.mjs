// Unit tests of static/vision.js (image rules of the page: media type, control states, frame size, prefill
// bodies, reading an attached file) and static/camera.js on fake media devices and a fake canvas.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CameraCapture } from "../../static/camera.js";
import {
  FRAME_JPEG_QUALITY,
  FRAME_MAX_SIDE,
  NO_VISION_TITLE,
  VISION_UNKNOWN_TITLE,
  automaticMediaType,
  buildPrefillBody,
  canSend,
  cappedFrameSize,
  chooseTurnImage,
  hasVisionStage,
  isAcceptedImageType,
  readImageFile,
  sessionMediaType,
  splitDataUrl,
  stagesKnown,
  visionControls,
} from "../../static/vision.js";

const WITH_VISION = { llm: true, audio: true, vision: true, tts: true, token2wav: true };
const WITHOUT_VISION = { llm: true, audio: true, vision: false, tts: true, token2wav: true };
const NOT_LOADED = {}; // /health before the models are loaded

describe("stages and the session's media type", () => {
  it("knows the stages only once the server reports the llm stage", () => {
    assert.equal(stagesKnown(NOT_LOADED), false);
    assert.equal(stagesKnown(null), false);
    assert.equal(stagesKnown(undefined), false);
    assert.equal(stagesKnown(WITHOUT_VISION), true);
    assert.equal(hasVisionStage(WITH_VISION), true);
    assert.equal(hasVisionStage(WITHOUT_VISION), false);
    assert.equal(hasVisionStage({ vision: true }), false); // not a loaded server's answer
  });

  it("picks omni with the vision stage, audio without, nothing while unknown", () => {
    assert.equal(automaticMediaType(WITH_VISION), "omni");
    assert.equal(automaticMediaType(WITHOUT_VISION), "audio");
    assert.equal(automaticMediaType(NOT_LOADED), null);
  });

  it("inits with the user's choice, but never omni without the vision stage", () => {
    assert.equal(sessionMediaType({ chosen: null, stages: WITH_VISION }), "omni");
    assert.equal(sessionMediaType({ chosen: "audio", stages: WITH_VISION }), "audio");
    assert.equal(sessionMediaType({ chosen: "omni", stages: WITHOUT_VISION }), "audio");
    assert.equal(sessionMediaType({ chosen: null, stages: WITHOUT_VISION }), "audio");
    assert.equal(sessionMediaType({ chosen: null, stages: NOT_LOADED }), "audio"); // the server's default
    assert.equal(sessionMediaType({ chosen: "omni", stages: NOT_LOADED }), "omni");
    assert.equal(sessionMediaType({ chosen: "pictures", stages: WITH_VISION }), "omni");
    assert.equal(sessionMediaType(), "audio");
  });
});

describe("visionControls", () => {
  it("disables attach/camera/high detail with the reason as tooltip", () => {
    assert.deepEqual(visionControls(WITHOUT_VISION), { disabled: true, title: NO_VISION_TITLE });
    assert.deepEqual(visionControls(NOT_LOADED), { disabled: true, title: VISION_UNKNOWN_TITLE });
    assert.match(NO_VISION_TITLE, /vision\/MiniCPM-o-4_5-vision-F16\.gguf/);
  });

  it("enables them with the vision stage unless busy", () => {
    assert.deepEqual(visionControls(WITH_VISION), { disabled: false, title: "" });
    assert.deepEqual(visionControls(WITH_VISION, true), { disabled: true, title: "" });
    assert.deepEqual(visionControls(WITHOUT_VISION, false), { disabled: true, title: NO_VISION_TITLE });
  });
});

describe("cappedFrameSize", () => {
  it("caps the longer side at 1280 keeping the aspect ratio", () => {
    assert.equal(FRAME_MAX_SIDE, 1280);
    assert.deepEqual(cappedFrameSize(1920, 1080), { width: 1280, height: 720 });
    assert.deepEqual(cappedFrameSize(1080, 1920), { width: 720, height: 1280 });
    assert.deepEqual(cappedFrameSize(4032, 3024), { width: 1280, height: 960 });
    assert.deepEqual(cappedFrameSize(2000, 2000), { width: 1280, height: 1280 });
  });

  it("never scales up and rounds to whole pixels, at least one", () => {
    assert.deepEqual(cappedFrameSize(640, 480), { width: 640, height: 480 });
    assert.deepEqual(cappedFrameSize(1280, 1), { width: 1280, height: 1 });
    assert.deepEqual(cappedFrameSize(3000, 1001), { width: 1280, height: 427 }); // 427.09
    assert.deepEqual(cappedFrameSize(100000, 10), { width: 1280, height: 1 }); // 0.128 -> 1
    assert.deepEqual(cappedFrameSize(1000, 500, 100), { width: 100, height: 50 });
  });

  it("is null while the video has no size yet", () => {
    assert.equal(cappedFrameSize(0, 0), null);
    assert.equal(cappedFrameSize(640, 0), null);
    assert.equal(cappedFrameSize(Number.NaN, 480), null);
  });
});

describe("turn images and prefill bodies", () => {
  const attached = { base64: "QUJD", dataUrl: "data:image/png;base64,QUJD", name: "cat.png" };
  const frame = { base64: "REVG", dataUrl: "data:image/jpeg;base64,REVG", width: 1280, height: 720 };

  it("sends the attached image rather than the camera frame, else the frame, else none", () => {
    assert.equal(chooseTurnImage({ attached, cameraFrame: frame }), attached);
    assert.equal(chooseTurnImage({ attached: null, cameraFrame: frame }), frame);
    assert.equal(chooseTurnImage({}), null);
  });

  it("builds the body with only the parts the turn has", () => {
    assert.deepEqual(buildPrefillBody({ text: "what is this?", image: frame }), {
      image: "REVG",
      text: "what is this?",
    });
    assert.deepEqual(buildPrefillBody({ audio: "UklGRg==", image: attached }), { image: "QUJD", audio: "UklGRg==" });
    assert.deepEqual(buildPrefillBody({ text: "hello" }), { text: "hello" });
    assert.deepEqual(buildPrefillBody({ image: attached, text: "" }), { image: "QUJD" });
  });

  it("allows Send with text or an attached image, only when idle", () => {
    assert.equal(canSend({ idle: true, text: "hi", hasAttachment: false }), true);
    assert.equal(canSend({ idle: true, text: "  \n", hasAttachment: false }), false);
    assert.equal(canSend({ idle: true, text: "", hasAttachment: true }), true);
    assert.equal(canSend({ idle: false, text: "hi", hasAttachment: true }), false);
  });
});

describe("attached files", () => {
  it("accepts PNG, JPEG and WebP only", () => {
    for (const type of ["image/png", "image/jpeg", "image/webp", "IMAGE/PNG"]) {
      assert.equal(isAcceptedImageType(type), true);
    }
    for (const type of ["image/gif", "image/bmp", "image/svg+xml", "", undefined]) {
      assert.equal(isAcceptedImageType(type), false);
    }
  });

  it("reads a file into base64 and a data URL", async () => {
    const file = new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 255])], "dot.png", { type: "image/png" });
    assert.deepEqual(await readImageFile(file), {
      base64: "iVBORwD/",
      dataUrl: "data:image/png;base64,iVBORwD/",
      type: "image/png",
      name: "dot.png",
      bytes: 6,
    });
  });

  it("refuses other types with the server's wording", async () => {
    const gif = new File([new Uint8Array([0x47, 0x49, 0x46])], "anim.gif", { type: "image/gif" });
    await assert.rejects(readImageFile(gif), {
      message: "anim.gif has the type image/gif; the accepted formats are PNG, JPEG and WebP",
    });
    const unknown = new File([new Uint8Array([1])], "blob");
    await assert.rejects(readImageFile(unknown), {
      message: "blob has no known type; the accepted formats are PNG, JPEG and WebP",
    });
  });

  it("splits data URLs", () => {
    assert.deepEqual(splitDataUrl("data:image/jpeg;base64,/9j/4AAQ"), { type: "image/jpeg", base64: "/9j/4AAQ" });
    assert.throws(() => splitDataUrl("data:,"), /not a base64 data URL/);
  });
});

// ---------------------------------------------------------------- camera.js

function fakeCamera({ videoWidth = 1920, videoHeight = 1080 } = {}) {
  const log = [];
  const track = { stop: () => log.push("track.stop") };
  const stream = { getTracks: () => [track] };
  const mediaDevices = {
    getUserMedia: async (constraints) => {
      log.push(["getUserMedia", constraints]);
      return stream;
    },
  };
  const video = {
    videoWidth,
    videoHeight,
    srcObject: null,
    play: async () => log.push("video.play"),
  };
  const canvases = [];
  const createCanvas = () => {
    const canvas = {
      width: 0,
      height: 0,
      getContext: (kind) => ({
        drawImage: (source, x, y, w, h) => log.push(["drawImage", kind, source === video, x, y, w, h]),
      }),
      toDataURL: (type, quality) => {
        log.push(["toDataURL", type, quality, canvas.width, canvas.height]);
        return "data:image/jpeg;base64,/9j/AAAA";
      },
    };
    canvases.push(canvas);
    return canvas;
  };
  return { log, stream, mediaDevices, video, createCanvas, canvases };
}

describe("CameraCapture", () => {
  it("starts the camera into a muted inline preview", async () => {
    const fake = fakeCamera();
    const camera = new CameraCapture({ mediaDevices: fake.mediaDevices, createCanvas: fake.createCanvas });
    assert.equal(camera.active, false);
    await camera.start(fake.video);
    assert.equal(camera.active, true);
    assert.deepEqual(fake.log, [
      ["getUserMedia", { video: { width: { ideal: 1280 }, height: { ideal: 1280 } }, audio: false }],
      "video.play",
    ]);
    assert.equal(fake.video.srcObject, fake.stream);
    assert.equal(fake.video.muted, true);
    assert.equal(fake.video.playsInline, true);
  });

  it("captures the current frame as JPEG (quality 0.8) with the longer side capped at 1280", async () => {
    const fake = fakeCamera({ videoWidth: 1920, videoHeight: 1080 });
    const camera = new CameraCapture({ mediaDevices: fake.mediaDevices, createCanvas: fake.createCanvas });
    await camera.start(fake.video);
    fake.log.length = 0;
    assert.deepEqual(camera.captureJpeg(), {
      base64: "/9j/AAAA",
      dataUrl: "data:image/jpeg;base64,/9j/AAAA",
      type: "image/jpeg",
      width: 1280,
      height: 720,
    });
    assert.equal(FRAME_JPEG_QUALITY, 0.8);
    assert.deepEqual(fake.log, [
      ["drawImage", "2d", true, 0, 0, 1280, 720],
      ["toDataURL", "image/jpeg", 0.8, 1280, 720],
    ]);
  });

  it("has no frame before the video has a size, and none after stop", async () => {
    const fake = fakeCamera({ videoWidth: 0, videoHeight: 0 });
    const camera = new CameraCapture({ mediaDevices: fake.mediaDevices, createCanvas: fake.createCanvas });
    assert.equal(camera.captureJpeg(), null); // not started
    await camera.start(fake.video);
    assert.equal(camera.captureJpeg(), null);
    assert.equal(fake.canvases.length, 0);
    camera.stop();
    assert.equal(camera.active, false);
    assert.ok(fake.log.includes("track.stop"));
    assert.equal(fake.video.srcObject, null);
  });

  it("explains a browser without camera access", async () => {
    const camera = new CameraCapture({ mediaDevices: undefined, createCanvas: () => null });
    await assert.rejects(camera.start({}), /Camera access is not available/);
    assert.equal(camera.active, false);
  });
});
