// HTTP client for the omni-app server. Every failure becomes an ApiError whose message says what went
// wrong in plain words (HTTP status + the server's own message, or the network error).
import { classifySseMessage, readSseStream } from "./sse.js";

export class ApiError extends Error {
  constructor(message, { status = 0, serverMessage = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.serverMessage = serverMessage;
  }
}

// The server's message from an error body: {"error": "..."} (our server), {"detail": ...} (FastAPI
// validation), or the raw text when it is not JSON.
export function serverMessageFromBody(bodyText) {
  const text = (bodyText || "").trim();
  if (!text) return "";
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") {
      if (typeof body.error === "string") return body.error;
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) {
        return body.detail
          .map((item) => `${(item.loc || []).join(".")}: ${item.msg || JSON.stringify(item)}`)
          .join("; ");
      }
      if (typeof body.message === "string") return body.message;
    }
  } catch {
    // not JSON: fall through
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

export function describeHttpError(status, statusText, bodyText) {
  const serverMessage = serverMessageFromBody(bodyText);
  const head = `HTTP ${status}${statusText ? ` ${statusText}` : ""}`;
  return { message: serverMessage ? `${head}: ${serverMessage}` : head, serverMessage };
}

async function send(path, { method = "POST", body, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`Network error on ${path}: ${error.message} (is the server running?)`);
  }
  if (!response.ok) {
    const text = await response.text().catch(() => "");
    const { message, serverMessage } = describeHttpError(response.status, response.statusText, text);
    throw new ApiError(message, { status: response.status, serverMessage });
  }
  return response;
}

export async function requestJson(path, options = {}) {
  const response = await send(path, options);
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(`Invalid JSON from ${path}: ${text.slice(0, 200)}`, { status: response.status });
  }
}

export const api = {
  health: (signal) => requestJson("/health", { method: "GET", signal }),
  init: (settings) => requestJson("/omni/init_sys_prompt", { body: settings }),
  prefill: (payload, signal) => requestJson("/omni/streaming_prefill", { body: payload, signal }),
  stop: () => requestJson("/omni/stop", { body: {} }),
  breakTurn: () => requestJson("/omni/break", { body: {} }),
  reset: () => requestJson("/omni/reset", { body: {} }),

  // Streams one answer; onEvent gets the typed events of sse.js (text, audio, tts_chunk, listen, stats,
  // error, done, end). Resolves when the stream closes.
  async generate(payload, signal, onEvent) {
    const response = await send("/omni/streaming_generate", { body: payload, signal });
    const type = response.headers.get("Content-Type") || "";
    if (!type.includes("text/event-stream")) {
      const text = await response.text();
      throw new ApiError(`Expected an event stream, got ${type || "no content type"}: ${text.slice(0, 200)}`, {
        status: response.status,
      });
    }
    if (!response.body) throw new ApiError("This browser cannot read streamed responses.");
    await readSseStream(response.body, (message) => onEvent(classifySseMessage(message)));
  },
};
