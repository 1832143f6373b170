// Images for the vision stage: what the page may send (attached files, camera frames), how big a camera frame
// is, which media type a session gets, and when the image controls are usable. Pure functions, plus reading
// a File; the camera itself is camera.js.
import { bytesToBase64 } from "./wav.js";

export const ACCEPTED_IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
export const FRAME_MAX_SIDE = 1280;
export const FRAME_JPEG_QUALITY = 0.8;
export const HIGH_DETAIL_TITLE =
  "High detail: every image is also cut into up to 2 slices (about 3× the context per image, slower)";
export const NO_VISION_TITLE =
  "The server has no vision stage (vision/MiniCPM-o-4_5-vision-F16.gguf is missing from the model directory)";
export const VISION_UNKNOWN_TITLE = "Available once the session is initialized (if the model has the vision stage)";

// The server's stages are known once the models are loaded (before that /health reports none).
export function stagesKnown(stages) {
  return Boolean(stages) && typeof stages.llm === "boolean";
}

export function hasVisionStage(stages) {
  return stagesKnown(stages) && stages.vision === true;
}

// The media type a session should have when the user did not choose one: omni (vision prompts) when the
// server has the vision stage, else audio; null while the stages are unknown.
export function automaticMediaType(stages) {
  if (!stagesKnown(stages)) return null;
  return hasVisionStage(stages) ? "omni" : "audio";
}

// The media type to init with: audio whenever the server has no vision stage; otherwise the user's choice,
// or omni when the user chose none; audio (the server's default) while the stages are unknown.
export function sessionMediaType({ chosen = null, stages = null } = {}) {
  if (stagesKnown(stages) && !hasVisionStage(stages)) return "audio";
  if (chosen === "audio" || chosen === "omni") return chosen;
  return automaticMediaType(stages) || "audio";
}

// Attach, camera and "High detail": usable when the server has the vision stage; `busy` (a turn or init in
// progress) disables them without changing the explanation.
export function visionControls(stages, busy = false) {
  if (!stagesKnown(stages)) return { disabled: true, title: VISION_UNKNOWN_TITLE };
  if (!hasVisionStage(stages)) return { disabled: true, title: NO_VISION_TITLE };
  return { disabled: Boolean(busy), title: "" };
}

export function isAcceptedImageType(type) {
  return ACCEPTED_IMAGE_TYPES.includes(String(type || "").toLowerCase());
}

// Scale (width, height) down so that the longer side is at most maxSide, keeping the aspect ratio; never
// up, never below 1 pixel.
export function cappedFrameSize(width, height, maxSide = FRAME_MAX_SIDE) {
  if (!(width > 0 && height > 0)) return null;
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  };
}

// "data:image/jpeg;base64,AAAA" -> { type: "image/jpeg", base64: "AAAA" }
export function splitDataUrl(dataUrl) {
  const match = /^data:([^;,]+)(?:;[^,]*)?;base64,(.*)$/s.exec(String(dataUrl || ""));
  if (!match) throw new Error("not a base64 data URL");
  return { type: match[1], base64: match[2] };
}

// The one image a turn sends: an attached file wins over the camera frame (one image per prefill).
export function chooseTurnImage({ attached = null, cameraFrame = null } = {}) {
  return attached || cameraFrame || null;
}

// The streaming_prefill body of one turn: only the parts the turn has.
export function buildPrefillBody({ text = "", audio = null, image = null } = {}) {
  const body = {};
  if (image) body.image = image.base64;
  if (audio) body.audio = audio;
  if (text) body.text = text;
  return body;
}

// Send is possible with typed text or an attached image (an image alone is a valid turn).
export function canSend({ idle, text, hasAttachment }) {
  return Boolean(idle) && (String(text || "").trim() !== "" || Boolean(hasAttachment));
}

// A picked file as { base64, dataUrl, type, name, bytes }; other types than PNG/JPEG/WebP are refused here
// with the same wording as the server's 415.
export async function readImageFile(file) {
  if (!isAcceptedImageType(file.type)) {
    const what = file.type ? `has the type ${file.type}` : "has no known type";
    throw new Error(`${file.name || "the file"} ${what}; the accepted formats are PNG, JPEG and WebP`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const base64 = bytesToBase64(bytes);
  const dataUrl = `data:${file.type};base64,${base64}`;
  return { base64, dataUrl, type: file.type, name: file.name || "", bytes: bytes.length };
}
