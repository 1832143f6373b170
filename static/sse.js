// Server-Sent Events over fetch: /omni/streaming_generate is a POST, so EventSource cannot be used.
// Pure module (no DOM): unit-tested in node (tests/browser/sse.test.mjs).

export const DONE_MARKER = "[DONE]";

const LINE_END = /\r\n|\r|\n/g;

// Incremental parser of the text/event-stream format. Feed decoded text in arbitrary pieces;
// complete messages come back as {event, data}. `event` is "message" when the server sent no name,
// `data` joins multiple data lines with "\n".
export class SseParser {
  constructor() {
    this.buffer = "";
    this.eventName = "";
    this.dataLines = [];
  }

  push(text) {
    this.buffer += text;
    const messages = [];
    let consumed = 0;
    LINE_END.lastIndex = 0;
    let match;
    while ((match = LINE_END.exec(this.buffer)) !== null) {
      const isLoneTrailingCR = match[0] === "\r" && match.index === this.buffer.length - 1;
      if (isLoneTrailingCR) break; // may be the first half of "\r\n": wait for the next piece
      const line = this.buffer.slice(consumed, match.index);
      consumed = match.index + match[0].length;
      const message = this.#processLine(line);
      if (message) messages.push(message);
    }
    this.buffer = this.buffer.slice(consumed);
    return messages;
  }

  // End of stream: a final message without its blank line is still delivered (lenient on purpose,
  // so that a last "data: [DONE]" is not lost when a proxy drops the trailing newline).
  end() {
    const messages = [];
    if (this.buffer.length > 0) {
      const message = this.#processLine(this.buffer.replace(/\r$/, ""));
      this.buffer = "";
      if (message) messages.push(message);
    }
    const pending = this.#dispatch();
    if (pending) messages.push(pending);
    return messages;
  }

  #processLine(line) {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return null; // comment / heartbeat
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.dataLines.push(value);
    else if (field === "event") this.eventName = value;
    return null; // id / retry / unknown fields are not used by this app
  }

  #dispatch() {
    if (this.dataLines.length === 0) {
      this.eventName = "";
      return null;
    }
    const message = { event: this.eventName || "message", data: this.dataLines.join("\n") };
    this.eventName = "";
    this.dataLines = [];
    return message;
  }
}

// Reads a fetch body (ReadableStream of bytes) and calls onMessage for each SSE message.
// UTF-8 sequences split across network chunks are kept whole by the streaming TextDecoder.
export async function readSseStream(body, onMessage) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const message of parser.push(decoder.decode(value, { stream: true }))) onMessage(message);
    }
    const tail = decoder.decode();
    for (const message of parser.push(tail)) onMessage(message);
    for (const message of parser.end()) onMessage(message);
  } finally {
    reader.releaseLock();
  }
}

// Turns one SSE message of this app's protocol into a typed event. Named events are used when present;
// otherwise the payload's keys decide (the reference server sends unnamed `data:` lines).
export function classifySseMessage(message) {
  if (message.data.trim() === DONE_MARKER) return { type: "end" };
  let payload;
  try {
    payload = JSON.parse(message.data);
  } catch {
    return { type: "invalid", raw: message.data };
  }
  if (payload === null || typeof payload !== "object") return { type: "invalid", raw: message.data };
  const type = message.event !== "message" ? message.event : inferType(payload);
  return eventFromPayload(type, payload);
}

function inferType(payload) {
  if ("error" in payload) return "error";
  if ("done" in payload) return "done";
  if ("stats" in payload) return "stats";
  if ("tts_chunk" in payload) return "tts_chunk";
  if ("is_listen" in payload) return "listen";
  if (payload.chunk_data) return payload.chunk_data.wav ? "audio" : "text";
  return "unknown";
}

function eventFromPayload(type, payload) {
  const chunk = payload.chunk_data || {};
  switch (type) {
    case "text":
      return { type, text: String(chunk.text ?? "") };
    case "audio":
      return {
        type,
        wav: String(chunk.wav ?? ""),
        sampleRate: Number(chunk.sample_rate ?? 24000),
        nInputTokens: chunk.n_input_tokens,
      };
    case "tts_chunk":
      return { type, ...payload.tts_chunk };
    case "listen":
      return { type };
    case "stats":
      return { type, stats: payload.stats || {} };
    case "error":
      return { type, message: String(payload.error) };
    case "done":
      return { type, reason: String(payload.reason ?? "") };
    default:
      return { type: "unknown", event: type, payload };
  }
}
