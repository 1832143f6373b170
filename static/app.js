// omni-app single-page UI: session init, text, voice and image turns, streamed text + audio, live stats.
import { ApiError, api } from "./api.js";
import { CameraCapture } from "./camera.js";
import { PcmPlayer } from "./player.js";
import { MicRecorder } from "./recorder.js";
import { computeTurnStats } from "./stats.js";
import {
  HIGH_DETAIL_TITLE,
  buildPrefillBody,
  canSend,
  chooseTurnImage,
  hasVisionStage,
  readImageFile,
  sessionMediaType,
  stagesKnown,
  visionControls,
} from "./vision.js";
import { base64ToBytes, pcm16Base64ToFloat32, recordingToBase64Wav } from "./wav.js";

const HEALTH_POLL_MS = 5000;
const HEALTH_POLL_LOADING_MS = 1000;
const BREAK_GRACE_MS = 5000;
const MAX_RECORDING_S = 60; // the server's default --max-audio-seconds
const MIN_RECORDING_S = 0.3;
const SETTINGS_KEY = "omni-app.settings";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  statusText: $("status-text"),
  demoBanner: $("demo-banner"),
  copyCmd: $("copy-cmd"),
  downloadCmd: $("download-cmd"),
  transcript: $("transcript"),
  emptyHint: $("empty-hint"),
  input: $("input"),
  send: $("send"),
  attach: $("attach"),
  imageFile: $("image-file"),
  camera: $("camera"),
  cameraLabel: $("camera-label"),
  cameraBox: $("camera-box"),
  cameraPreview: $("camera-preview"),
  visionPanel: $("vision-panel"),
  attachment: $("attachment"),
  attachmentThumb: $("attachment-thumb"),
  attachmentName: $("attachment-name"),
  attachmentRemove: $("attachment-remove"),
  highDetail: $("high-detail"),
  record: $("record"),
  recordLabel: $("record-label"),
  recPanel: $("rec-panel"),
  recTime: $("rec-time"),
  recLevel: $("rec-level"),
  recCancel: $("rec-cancel"),
  stop: $("stop"),
  breakBtn: $("break"),
  reset: $("reset"),
  playback: $("playback"),
  form: $("init-form"),
  mode: $("mode"),
  media: $("media"),
  language: $("language"),
  lengthPenalty: $("length-penalty"),
  lpValue: $("lp-value"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  init: $("init"),
  initNote: $("init-note"),
  srvVersion: $("srv-version"),
  srvModelDir: $("srv-model-dir"),
  srvStages: $("srv-stages"),
};

const state = {
  online: false,
  health: null,
  healthError: "",
  initialized: false,
  initializing: false,
  initStartedAt: 0,
  session: null, // settings of the running session
  turn: null, // the answer in progress
  recording: false,
  recordStartedAt: 0,
  lastError: "",
  stages: null, // the server's stages once the models are loaded (from /health or the init answer)
  mediaChoice: null, // "audio" / "omni" once the user picked a media type; null: automatic
  attachment: null, // the image attached to the next turn ({ base64, dataUrl, name, ... })
};

const player = new PcmPlayer({ preroll: 0.08 });
const recorder = new MicRecorder({ onLevel: showLevel });
const camera = new CameraCapture();
const now = () => performance.now();

// ---------------------------------------------------------------- status + rendering

function setStatus(kind, text) {
  ui.status.dataset.kind = kind;
  ui.statusText.textContent = text;
  ui.status.title = text;
}

function describeSession(session) {
  return `${session.duplex_mode ? "duplex" : "simplex"} · ${session.media_type} · ${session.language}`;
}

function refreshStatusLine() {
  if (!state.online) return setStatus("offline", `Server not answering (${state.healthError}) — retrying…`);
  if (state.initializing) {
    const seconds = ((now() - state.initStartedAt) / 1000).toFixed(0);
    return setStatus("loading", `Loading model and system prompt… ${seconds} s`);
  }
  if (state.health && state.health.loading) return setStatus("loading", "Server is loading the model…");
  if (state.recording) return setStatus("busy", "Recording…");
  if (state.turn) {
    const phase = state.turn.phase === "prefill" ? "Sending input…" : "Generating…";
    return setStatus("busy", phase);
  }
  if (state.lastError) return setStatus("error", state.lastError);
  const health = state.health || {};
  if (!state.initialized && health.engine_available === false) {
    return setStatus("error", `Engine not available: ${health.engine_error || "not built"}`);
  }
  if (!state.initialized && health.load_error) return setStatus("error", `Model load failed: ${health.load_error}`);
  if (!state.initialized) return setStatus("idle", "Not initialized — choose settings and press Init");
  const session = state.session ? ` · ${describeSession(state.session)}` : "";
  return setStatus("ok", `Ready${session}`);
}

function render() {
  const ready = state.online && state.initialized && !state.initializing;
  const idle = ready && !state.turn && !state.recording;
  const playing = player.remainingSeconds() > 0;

  ui.send.disabled = !canSend({ idle, text: ui.input.value, hasAttachment: state.attachment !== null });
  ui.record.disabled = !ready || (state.turn !== null && state.turn.phase === "prefill");
  ui.record.classList.toggle("recording", state.recording);
  ui.recordLabel.textContent = state.recording ? "Stop & send" : "Record";
  ui.record.title = state.turn ? "Barge in: cut the answer and record" : "Record a voice message";
  ui.recPanel.hidden = !state.recording;
  ui.stop.disabled = !(state.turn || playing || state.recording);
  ui.breakBtn.disabled = !(state.turn && state.turn.phase === "generate");
  ui.reset.disabled = !ready || state.turn !== null || state.recording;

  const formLocked = state.initializing || state.turn !== null || state.recording;
  for (const input of [ui.mode, ui.media, ui.language, ui.temperature, ui.maxTokens]) {
    input.disabled = formLocked;
  }
  renderVisionControls(formLocked);
  ui.init.disabled = !state.online || formLocked;
  ui.init.classList.toggle("busy", state.initializing);
  ui.init.textContent = state.initializing
    ? "Loading…"
    : state.initialized
      ? "Apply (starts a new conversation)"
      : "Init";
  refreshStatusLine();
}

function renderVisionControls(formLocked) {
  const controls = visionControls(state.stages, !state.online || state.initializing);
  ui.attach.disabled = controls.disabled;
  ui.attach.title = controls.title || "Attach an image (PNG, JPEG or WebP) to the next turn";
  ui.camera.disabled = controls.disabled && !camera.active; // a running camera can always be turned off
  ui.camera.title = controls.title || "Camera: send the current frame with each turn (and show it)";
  ui.camera.setAttribute("aria-pressed", String(camera.active));
  ui.cameraLabel.textContent = camera.active ? "Camera on" : "Camera";
  ui.highDetail.disabled = formLocked || visionControls(state.stages).disabled;
  ui.highDetail.parentElement.title = visionControls(state.stages).title || HIGH_DETAIL_TITLE;
  const omni = ui.media.querySelector('option[value="omni"]');
  omni.disabled = stagesKnown(state.stages) && !hasVisionStage(state.stages);
  omni.title = omni.disabled ? visionControls(state.stages).title : "";
  ui.cameraBox.hidden = !camera.active;
  ui.attachment.hidden = state.attachment === null;
  ui.visionPanel.hidden = ui.cameraBox.hidden && ui.attachment.hidden;
}

function renderServerInfo(health) {
  ui.srvVersion.textContent = health.version || "–";
  ui.srvModelDir.textContent = health.model_dir || "–";
  ui.srvModelDir.title = health.model_dir || "";
  ui.srvStages.replaceChildren();
  const stages = health.stages || {};
  for (const name of ["llm", "audio", "vision", "tts", "token2wav"]) {
    const chip = document.createElement("span");
    chip.className = `stage${stages[name] ? " on" : ""}`;
    chip.textContent = name;
    chip.title = stages[name] ? `${name}: loaded` : `${name}: not available`;
    ui.srvStages.append(chip);
  }
  ui.demoBanner.hidden = !health.tiny_demo;
}

// ---------------------------------------------------------------- transcript

function addEntry(kind, text) {
  ui.emptyHint.hidden = true;
  const entry = document.createElement("div");
  entry.className = `msg ${kind}`;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  entry.append(body);
  ui.transcript.append(entry);
  scrollToEnd();
  return entry;
}

function addMeta(entry, text) {
  let meta = entry.querySelector(".meta");
  if (!meta) {
    meta = document.createElement("span");
    meta.className = "meta";
    entry.append(meta);
  }
  meta.textContent = text;
}

function addSystem(text) {
  return addEntry("system", text);
}

// Every failure ends here: visible in the transcript and in the status line.
function reportError(message) {
  state.lastError = message;
  addEntry("error", message);
  refreshStatusLine();
}

function clearError() {
  state.lastError = "";
}

// Follow new output unless the user scrolled up to read.
let followTranscript = true;

function scrollToEnd() {
  if (followTranscript) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function trackScroll() {
  const t = ui.transcript;
  followTranscript = t.scrollHeight - t.scrollTop - t.clientHeight < 80;
}

function clearTranscript() {
  for (const node of [...ui.transcript.children]) if (node !== ui.emptyHint) node.remove();
  ui.emptyHint.hidden = false;
}

function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return error && error.message ? error.message : String(error);
}

// ---------------------------------------------------------------- settings

function readSettings() {
  const settings = {
    media_type: ui.media.value,
    duplex_mode: ui.mode.value === "duplex",
    language: ui.language.value,
    length_penalty: Number(ui.lengthPenalty.value),
    temperature: Number(ui.temperature.value),
    high_quality_mode: ui.highDetail.checked,
  };
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if (Number.isFinite(maxTokens) && maxTokens > 0) settings.max_new_tokens = maxTokens;
  return settings;
}

function saveSettings() {
  const stored = {
    mediaChoice: state.mediaChoice,
    highDetail: ui.highDetail.checked,
    language: ui.language.value,
    lengthPenalty: ui.lengthPenalty.value,
    temperature: ui.temperature.value,
    maxTokens: ui.maxTokens.value,
  };
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(stored));
  } catch {
    // storage unavailable (private mode): settings just are not remembered
  }
}

function loadSettings() {
  let stored = null;
  try {
    stored = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null");
  } catch {
    stored = null;
  }
  if (!stored) return;
  if (stored.mediaChoice === "audio" || stored.mediaChoice === "omni") state.mediaChoice = stored.mediaChoice;
  ui.highDetail.checked = stored.highDetail === true;
  if (stored.language) ui.language.value = stored.language;
  if (stored.lengthPenalty) ui.lengthPenalty.value = stored.lengthPenalty;
  if (stored.temperature) ui.temperature.value = stored.temperature;
  if (stored.maxTokens !== undefined) ui.maxTokens.value = stored.maxTokens;
}

function showLengthPenalty() {
  ui.lpValue.textContent = Number(ui.lengthPenalty.value).toFixed(2);
}

// Session settings (all but max new tokens, which is sent with every answer) take effect on Init/Apply.
function settingsDiffer(a, b) {
  const keys = ["media_type", "duplex_mode", "language", "length_penalty", "temperature", "high_quality_mode"];
  return keys.some((key) => a[key] !== b[key]);
}

function showModeNote() {
  ui.initNote.className = "muted small note full";
  if (ui.mode.value === "duplex") {
    ui.initNote.classList.add("warn");
    ui.initNote.textContent = "Duplex is experimental; the server says so if it is not available yet.";
  } else if (state.session && settingsDiffer(readSettings(), state.session)) {
    ui.initNote.classList.add("warn");
    ui.initNote.textContent = "Settings changed: press Apply to use them (starts a new conversation).";
  } else if (state.initialized) {
    ui.initNote.textContent = "Max new tokens applies to the next answer; other settings need Apply.";
  } else {
    ui.initNote.textContent = "";
  }
}

// ---------------------------------------------------------------- health

let healthTimer = 0;

async function refreshHealth() {
  clearTimeout(healthTimer);
  try {
    const health = await api.health();
    state.online = true;
    state.health = health;
    state.healthError = "";
    // The server is the truth about whether a session exists (it may have restarted).
    if (!state.initializing) state.initialized = Boolean(health.initialized);
    if (stagesKnown(health.stages)) updateStages(health.stages);
    renderServerInfo(health);
  } catch (error) {
    state.online = false;
    state.health = null;
    state.healthError = errorText(error);
  }
  render();
  const delay = state.health && state.health.loading ? HEALTH_POLL_LOADING_MS : HEALTH_POLL_MS;
  healthTimer = setTimeout(refreshHealth, delay);
  return state.health;
}

// ---------------------------------------------------------------- init

async function initSession({ automatic = false } = {}) {
  const settings = readSettings();
  const wasInitialized = state.initialized;
  clearError();
  state.initializing = true;
  state.initStartedAt = now();
  const ticker = setInterval(refreshStatusLine, 250);
  render();
  if (automatic) addSystem(`Initializing automatically (${describeSession(settings)})…`);
  try {
    let result = await api.init(settings);
    if (stagesKnown(result.stages)) updateStages(result.stages);
    const media = sessionMediaType({ chosen: state.mediaChoice, stages: state.stages });
    if (media !== settings.media_type) {
      // the first init is what told the page the stages: start the session again with the right prompts
      settings.media_type = ui.media.value = media;
      result = await api.init(settings);
    }
    const seconds = ((now() - state.initStartedAt) / 1000).toFixed(1);
    state.session = settings;
    state.initialized = true;
    if (wasInitialized) {
      player.stop(); // a new conversation: the previous answer's queued audio must not keep playing
      ui.playback.textContent = "";
      clearTranscript();
      resetStats();
    }
    const note = result && result.note ? ` (${result.note})` : "";
    addSystem(`Session ready in ${seconds} s — ${describeSession(settings)}${note}`);
  } catch (error) {
    let message = `Init failed — ${errorText(error)}`;
    if (settings.duplex_mode && error instanceof ApiError && error.status === 501) {
      message += ". Choose Mode: Simplex and press Init to use turn-by-turn chat.";
    }
    reportError(message);
  } finally {
    clearInterval(ticker);
    state.initializing = false;
    await refreshHealth();
    showModeNote();
  }
}

// ---------------------------------------------------------------- turns

function newTurn() {
  return {
    phase: "prefill",
    controller: new AbortController(),
    sentAt: now(),
    prefillClientMs: null,
    generateStartedAt: 0,
    firstTextAt: 0,
    lastTextAt: 0,
    firstAudioAt: 0,
    lastAudioAt: 0,
    lastEventAt: 0,
    endedAt: 0,
    textEvents: 0,
    audioSeconds: 0,
    audioChunks: 0,
    ttsChunks: 0,
    speechTokens: 0,
    serverStats: null,
    doneReason: "",
    sawEnd: false,
    closed: false,
    stopped: false,
    broken: false,
    playbackCut: false,
    entry: null,
    text: "",
    finished: null, // promise resolved when the turn is over
  };
}

async function runTurn(payload, userEntry = null) {
  clearError();
  const turn = newTurn();
  let resolveFinished;
  turn.finished = new Promise((resolve) => (resolveFinished = resolve));
  state.turn = turn;
  render();
  try {
    const added = await api.prefill(payload, turn.controller.signal);
    turn.prefillClientMs = now() - turn.sentAt;
    if (userEntry && added.n_image_positions) {
      const [width, height] = added.image_size || [];
      addMeta(userEntry, `image ${width}×${height} · ${added.n_image_positions} positions`);
    }
    turn.phase = "generate";
    resetStats();
    turn.entry = addEntry("assistant streaming", "");
    player.beginStream();
    turn.generateStartedAt = now();
    render();
    // length_penalty is a session setting (sent with Init/Apply); the server ignores it per answer.
    const body = {};
    const maxTokens = parseInt(ui.maxTokens.value, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_new_tokens = maxTokens;
    await api.generate(body, turn.controller.signal, (event) => handleEvent(turn, event));
    if (!turn.sawEnd && !turn.stopped) {
      reportError("The answer stream closed before it finished (no [DONE]); the connection may have dropped.");
    }
  } catch (error) {
    if (error.name === "AbortError" || turn.stopped) {
      turn.stopped = true;
    } else {
      const where = turn.phase === "prefill" ? "Sending input failed" : "Generation failed";
      reportError(`${where} — ${errorText(error)}`);
    }
  } finally {
    finishTurn(turn);
    resolveFinished();
  }
}

function handleEvent(turn, event) {
  const t = now();
  turn.lastEventAt = t;
  switch (event.type) {
    case "text":
      if (!event.text) return;
      if (!turn.firstTextAt) turn.firstTextAt = t;
      turn.lastTextAt = t;
      turn.textEvents += 1;
      turn.text += event.text;
      turn.entry.querySelector(".body").textContent = turn.text.trimStart();
      scrollToEnd();
      break;
    case "audio":
      onAudio(turn, event, t);
      break;
    case "tts_chunk":
      turn.ttsChunks += 1;
      if (Number.isFinite(event.n_speech_tokens)) turn.speechTokens += event.n_speech_tokens;
      break;
    case "listen":
      addMeta(turn.entry, "listening…");
      break;
    case "stats":
      turn.serverStats = event.stats;
      break;
    case "error":
      reportError(`Generation error — ${event.message}`);
      break;
    case "done":
      turn.doneReason = event.reason;
      turn.endedAt = t;
      break;
    case "end":
      turn.sawEnd = true;
      if (!turn.endedAt) turn.endedAt = t;
      break;
    default:
      console.warn("Unrecognised stream message", event);
      return;
  }
  scheduleStatsRender(turn);
}

function onAudio(turn, event, t) {
  if (!event.wav) return;
  const samples = pcm16Base64ToFloat32(event.wav);
  if (!turn.firstAudioAt) turn.firstAudioAt = t;
  turn.lastAudioAt = t;
  turn.audioChunks += 1;
  turn.audioSeconds += samples.length / event.sampleRate;
  if (!turn.playbackCut) {
    try {
      player.enqueue(samples, event.sampleRate);
    } catch (error) {
      turn.playbackCut = true;
      reportError(`Audio playback failed — ${errorText(error)}`);
    }
  }
  addMeta(turn.entry, `audio ${turn.audioSeconds.toFixed(1)} s`);
  watchPlayback();
}

function finishTurn(turn) {
  turn.closed = true;
  if (!turn.endedAt) turn.endedAt = now();
  if (turn.entry) {
    turn.entry.classList.remove("streaming");
    if (!turn.text) turn.entry.querySelector(".body").textContent = turn.stopped ? "(stopped)" : "(no text)";
    const parts = [];
    if (turn.audioSeconds > 0) parts.push(`audio ${turn.audioSeconds.toFixed(1)} s`);
    if (turn.broken) parts.push("interrupted");
    else if (turn.stopped) parts.push("stopped");
    else if (turn.doneReason && turn.doneReason !== "eos") parts.push(`ended: ${turn.doneReason}`);
    if (parts.length) addMeta(turn.entry, parts.join(" · "));
  }
  if (state.turn === turn) state.turn = null;
  if (turn.phase === "generate") renderStats(turn); // a failed prefill keeps the previous answer's stats
  render();
  ui.input.focus();
}

// ---------------------------------------------------------------- stats

let statsFrame = 0;

function scheduleStatsRender(turn) {
  if (statsFrame) return;
  statsFrame = requestAnimationFrame(() => {
    statsFrame = 0;
    renderStats(turn);
  });
}

const statIds = [
  "prefill",
  "first-text",
  "first-audio",
  "tps",
  "tps-client",
  "tokens",
  "audio",
  "speech",
  "tts",
  "t2w",
  "rtf",
  "gaps",
  "total",
  "reason",
];

function setStat(id, text) {
  $(`stat-${id}`).textContent = text;
}

function resetStats() {
  for (const id of statIds) setStat(id, "–");
}

function renderStats(turn) {
  const values = computeTurnStats(turn, player.stats);
  for (const id of statIds) setStat(id, values[id]);
}

// ---------------------------------------------------------------- playback status

let playbackTimer = 0;

function watchPlayback() {
  if (playbackTimer) return;
  playbackTimer = setInterval(() => {
    const left = player.remainingSeconds();
    const gaps = player.stats.gaps;
    const gapText = gaps ? ` · ${gaps} gap${gaps > 1 ? "s" : ""}` : "";
    ui.playback.textContent = left > 0.05 ? `Playing… ${left.toFixed(1)} s left${gapText}` : "";
    if (left <= 0 && !state.turn) {
      clearInterval(playbackTimer);
      playbackTimer = 0;
    }
    render();
  }, 200);
}

// ---------------------------------------------------------------- actions

async function sendText() {
  const text = ui.input.value.trim();
  if (ui.send.disabled || !canSend({ idle: true, text, hasAttachment: state.attachment !== null })) return;
  ui.input.value = "";
  autoGrow();
  unlockAudio();
  const image = takeTurnImage();
  const entry = addEntry("user", text);
  showSentImage(entry, image);
  await runTurn(buildPrefillBody({ text, image }), entry);
}

// ---------------------------------------------------------------- images

function updateStages(stages) {
  state.stages = stages;
  if (!hasVisionStage(stages)) {
    if (camera.active) camera.stop();
    clearAttachment();
  }
}

// The image of the turn being sent: the attached one (then cleared), else the camera's current frame.
function takeTurnImage() {
  const attached = state.attachment;
  clearAttachment();
  const cameraFrame = attached || !camera.active ? null : camera.captureJpeg();
  if (!attached && camera.active && !cameraFrame) addSystem("The camera has no frame yet; sent without an image.");
  return chooseTurnImage({ attached, cameraFrame });
}

function showSentImage(entry, image) {
  if (!image) return;
  const thumb = document.createElement("img");
  thumb.className = "thumb";
  thumb.src = image.dataUrl;
  thumb.alt = image.name ? `Attached image ${image.name}` : "Camera frame sent with this turn";
  thumb.title = image.name || `camera frame ${image.width}×${image.height}`;
  entry.append(thumb);
  scrollToEnd();
}

async function attachImage() {
  const file = ui.imageFile.files && ui.imageFile.files[0];
  ui.imageFile.value = ""; // picking the same file again fires change again
  if (!file) return;
  try {
    state.attachment = await readImageFile(file);
  } catch (error) {
    reportError(`Image not attached — ${errorText(error)}`);
    return;
  }
  ui.attachmentThumb.src = state.attachment.dataUrl;
  ui.attachmentName.textContent = `${file.name} · sent with the next turn`;
  render();
}

function clearAttachment() {
  state.attachment = null;
  ui.attachmentThumb.removeAttribute("src");
  ui.attachmentName.textContent = "";
}

async function toggleCamera() {
  if (camera.active) {
    camera.stop();
    render();
    return;
  }
  clearError();
  try {
    await camera.start(ui.cameraPreview);
  } catch (error) {
    camera.stop();
    const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    reportError(denied ? "Camera permission was denied." : `Camera error — ${errorText(error)}`);
  }
  render();
}

function unlockAudio() {
  try {
    player.unlock();
  } catch (error) {
    reportError(`Audio output unavailable — ${errorText(error)}`);
  }
}

async function stopAll() {
  const turn = state.turn;
  player.stop();
  ui.playback.textContent = "";
  if (state.recording) await cancelRecording();
  if (turn) {
    turn.stopped = true;
    turn.playbackCut = true;
    turn.controller.abort();
  }
  try {
    await api.stop();
    if (turn) addSystem("Stopped.");
  } catch (error) {
    reportError(`Stop failed — ${errorText(error)}`);
  }
  render();
}

async function breakTurn() {
  const turn = state.turn;
  if (!turn) return;
  turn.broken = true;
  turn.playbackCut = true;
  player.stop();
  ui.playback.textContent = "";
  try {
    await api.breakTurn();
  } catch (error) {
    reportError(`Break failed — ${errorText(error)}`);
  }
  // The server ends the stream with done(reason "break"); if it does not, stop waiting for it.
  setTimeout(() => {
    if (state.turn === turn) {
      turn.stopped = true;
      turn.controller.abort();
    }
  }, BREAK_GRACE_MS);
  render();
}

async function resetConversation() {
  clearError();
  try {
    await api.reset();
    player.stop();
    clearTranscript();
    resetStats();
    addSystem("— New conversation —");
  } catch (error) {
    reportError(`Reset failed — ${errorText(error)}`);
  }
  render();
}

// ---------------------------------------------------------------- recording

let recordTicker = 0;

async function toggleRecording() {
  if (state.recording) return finishRecording();
  unlockAudio();
  if (state.turn && state.turn.phase === "generate") await breakTurn(); // barge-in
  clearError();
  try {
    await recorder.start();
  } catch (error) {
    const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    reportError(denied ? "Microphone permission was denied." : `Microphone error — ${errorText(error)}`);
    return;
  }
  state.recording = true;
  state.recordStartedAt = now();
  showLevel(0);
  recordTicker = setInterval(() => {
    const seconds = (now() - state.recordStartedAt) / 1000;
    ui.recTime.textContent = `${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORDING_S) finishRecording();
  }, 100);
  render();
}

async function finishRecording() {
  if (!state.recording) return;
  clearInterval(recordTicker);
  state.recording = false;
  render();
  let wav;
  try {
    const { chunks, sampleRate } = await recorder.stop();
    wav = recordingToBase64Wav(chunks, sampleRate);
  } catch (error) {
    reportError(`Recording failed — ${errorText(error)}`);
    return;
  }
  if (wav.seconds < MIN_RECORDING_S) {
    reportError(`Recording too short (${wav.seconds.toFixed(2)} s) — nothing was sent.`);
    return;
  }
  if (state.turn) await state.turn.finished; // a barged-in answer is still closing
  const image = takeTurnImage();
  const entry = addEntry("user", `🎙 voice message (${wav.seconds.toFixed(1)} s)`);
  const clip = document.createElement("audio");
  clip.controls = true;
  clip.src = URL.createObjectURL(new Blob([base64ToBytes(wav.base64)], { type: "audio/wav" }));
  entry.append(clip);
  showSentImage(entry, image);
  await runTurn(buildPrefillBody({ audio: wav.base64, image }), entry);
}

async function cancelRecording() {
  clearInterval(recordTicker);
  state.recording = false;
  await recorder.cancel();
  addSystem("Recording cancelled.");
  render();
}

function showLevel(rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-5));
  const fraction = Math.min(1, Math.max(0, (db + 60) / 60));
  ui.recLevel.style.width = `${(fraction * 100).toFixed(0)}%`;
}

// ---------------------------------------------------------------- wiring

function autoGrow() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 180)}px`;
}

async function copyDownloadCommand() {
  const text = ui.downloadCmd.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    ui.copyCmd.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(ui.downloadCmd);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    ui.copyCmd.textContent = "Selected — press Ctrl+C";
  }
  setTimeout(() => (ui.copyCmd.textContent = "Copy"), 2000);
}

function wire() {
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendText();
    }
  });
  ui.input.addEventListener("input", () => {
    autoGrow();
    render();
  });
  ui.send.addEventListener("click", sendText);
  ui.attach.addEventListener("click", () => ui.imageFile.click());
  ui.imageFile.addEventListener("change", attachImage);
  ui.attachmentRemove.addEventListener("click", () => {
    clearAttachment();
    render();
  });
  ui.camera.addEventListener("click", toggleCamera);
  ui.media.addEventListener("change", () => {
    state.mediaChoice = ui.media.value;
  });
  ui.record.addEventListener("click", toggleRecording);
  ui.recCancel.addEventListener("click", cancelRecording);
  ui.stop.addEventListener("click", stopAll);
  ui.breakBtn.addEventListener("click", breakTurn);
  ui.reset.addEventListener("click", resetConversation);
  ui.copyCmd.addEventListener("click", copyDownloadCommand);
  ui.transcript.addEventListener("scroll", trackScroll, { passive: true });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveSettings();
    initSession();
  });
  ui.lengthPenalty.addEventListener("input", () => {
    showLengthPenalty();
    saveSettings();
    showModeNote();
  });
  for (const input of [ui.media, ui.language, ui.temperature, ui.maxTokens, ui.highDetail]) {
    input.addEventListener("change", () => {
      saveSettings();
      showModeNote();
    });
  }
  ui.mode.addEventListener("change", showModeNote);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !ui.stop.disabled) stopAll();
  });
}

async function waitForServer() {
  let health = await refreshHealth();
  if (health) return health;
  reportError("Cannot reach the server (GET /health failed). Is run.sh still running? Retrying…");
  while (!health) {
    await new Promise((resolve) => setTimeout(resolve, HEALTH_POLL_LOADING_MS * 2));
    health = await refreshHealth();
  }
  clearError();
  addSystem("Server is reachable again.");
  return health;
}

async function start() {
  loadSettings();
  showLengthPenalty();
  wire();
  render();
  const health = await waitForServer();
  ui.mode.value = health.duplex_mode ? "duplex" : "simplex";
  const running = health.initialized && health.session && health.session.media_type;
  ui.media.value = running || sessionMediaType({ chosen: state.mediaChoice, stages: state.stages });
  showModeNote();
  if (!health.initialized && !health.loading) await initSession({ automatic: true });
  render();
}

start();
