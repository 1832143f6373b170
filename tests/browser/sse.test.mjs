// Unit tests of static/sse.js (SSE-over-fetch parser and event classification).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { SseParser, classifySseMessage, readSseStream } from "../../static/sse.js";

function parseAll(pieces) {
  const parser = new SseParser();
  const messages = [];
  for (const piece of pieces) messages.push(...parser.push(piece));
  messages.push(...parser.end());
  return messages;
}

const STREAM =
  'event: text\ndata: {"chunk_data":{"text":"Hel","wav":"","sample_rate":24000}}\n\n' +
  'event: text\ndata: {"chunk_data":{"text":"lo","wav":"","sample_rate":24000}}\n\n' +
  'event: done\ndata: {"done":true,"reason":"eos"}\n\n' +
  "data: [DONE]\n\n";

describe("SseParser", () => {
  it("parses named events and the final [DONE] line", () => {
    const messages = parseAll([STREAM]);
    assert.deepEqual(
      messages.map((m) => m.event),
      ["text", "text", "done", "message"],
    );
    assert.equal(messages[0].data, '{"chunk_data":{"text":"Hel","wav":"","sample_rate":24000}}');
    assert.equal(messages[3].data, "[DONE]");
  });

  it("gives identical messages for every way of splitting the stream", () => {
    const whole = parseAll([STREAM]);
    for (let cut = 1; cut < STREAM.length; cut++) {
      assert.deepEqual(parseAll([STREAM.slice(0, cut), STREAM.slice(cut)]), whole, `cut at ${cut}`);
    }
    assert.deepEqual(parseAll([...STREAM]), whole, "one character at a time");
  });

  it("holds a partial message until its blank line arrives", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push("event: stats\ndata: {\"stats\":"), []);
    assert.deepEqual(parser.push('{"ttft_ms":12}}\n'), []);
    assert.deepEqual(parser.push("\n"), [{ event: "stats", data: '{"stats":{"ttft_ms":12}}' }]);
  });

  it("joins multi-line data with newlines and strips one leading space only", () => {
    const messages = parseAll(["data: line one\ndata:line two\ndata:  indented\n\n"]);
    assert.deepEqual(messages, [{ event: "message", data: "line one\nline two\n indented" }]);
  });

  it("accepts CRLF and CR line endings, also when CR and LF arrive in different pieces", () => {
    const crlf = parseAll(["event: text\r\ndata: a\r", "\n\r", "\ndata: b\r\r"]);
    assert.deepEqual(crlf, [
      { event: "text", data: "a" },
      { event: "message", data: "b" },
    ]);
  });

  it("ignores comments, id/retry fields and blank lines without data", () => {
    const messages = parseAll([": heartbeat\n\nid: 7\nretry: 1000\n\nevent: listen\ndata: {\"is_listen\":true}\n\n"]);
    assert.deepEqual(messages, [{ event: "listen", data: '{"is_listen":true}' }]);
  });

  it("resets the event name after each message", () => {
    const messages = parseAll(["event: error\ndata: {\"error\":\"x\"}\n\ndata: {}\n\n"]);
    assert.deepEqual(
      messages.map((m) => m.event),
      ["error", "message"],
    );
  });

  it("delivers a last message whose trailing blank line is missing at end of stream", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push("data: [DONE]"), []);
    assert.deepEqual(parser.end(), [{ event: "message", data: "[DONE]" }]);
  });
});

describe("readSseStream", () => {
  it("keeps UTF-8 characters whole when a byte chunk splits them", async () => {
    const bytes = new TextEncoder().encode('event: text\ndata: {"chunk_data":{"text":"你好"}}\n\ndata: [DONE]\n\n');
    const splitInsideChar = bytes.indexOf(0xe4) + 1; // first byte of 你 is 0xE4
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(bytes.slice(0, splitInsideChar));
        controller.enqueue(bytes.slice(splitInsideChar, splitInsideChar + 2));
        controller.enqueue(bytes.slice(splitInsideChar + 2));
        controller.close();
      },
    });
    const events = [];
    await readSseStream(body, (message) => events.push(classifySseMessage(message)));
    assert.deepEqual(events, [{ type: "text", text: "你好" }, { type: "end" }]);
  });
});

describe("classifySseMessage", () => {
  const named = (event, payload) => classifySseMessage({ event, data: JSON.stringify(payload) });
  const unnamed = (payload) => classifySseMessage({ event: "message", data: JSON.stringify(payload) });

  it("maps every named event of the protocol", () => {
    assert.deepEqual(named("text", { chunk_data: { text: "hi", wav: "", sample_rate: 24000 } }), {
      type: "text",
      text: "hi",
    });
    assert.deepEqual(named("audio", { chunk_data: { wav: "AAA=", sample_rate: 24000, text: "", n_input_tokens: 28 } }), {
      type: "audio",
      wav: "AAA=",
      sampleRate: 24000,
      nInputTokens: 28,
    });
    assert.deepEqual(
      named("tts_chunk", { tts_chunk: { text: "hi", n_speech_tokens: 25, chunk_idx: 0, audio_duration_ms: 1000 } }),
      { type: "tts_chunk", text: "hi", n_speech_tokens: 25, chunk_idx: 0, audio_duration_ms: 1000 },
    );
    assert.deepEqual(named("listen", { is_listen: true }), { type: "listen" });
    assert.deepEqual(named("stats", { stats: { ttft_ms: 5, tokens_per_s: 40 } }), {
      type: "stats",
      stats: { ttft_ms: 5, tokens_per_s: 40 },
    });
    assert.deepEqual(named("error", { error: "boom" }), { type: "error", message: "boom" });
    assert.deepEqual(named("done", { done: true, reason: "max_tokens" }), { type: "done", reason: "max_tokens" });
  });

  it("infers the type from the payload when the server sends no event name (reference framing)", () => {
    assert.equal(unnamed({ chunk_data: { text: "a", wav: "" } }).type, "text");
    assert.equal(unnamed({ chunk_data: { text: "", wav: "AAA=" } }).type, "audio");
    assert.equal(unnamed({ tts_chunk: { chunk_idx: 1 } }).type, "tts_chunk");
    assert.equal(unnamed({ is_listen: true }).type, "listen");
    assert.equal(unnamed({ error: "x" }).type, "error");
    assert.equal(unnamed({ done: true, reason: "stop" }).type, "done");
    assert.equal(unnamed({ stats: {} }).type, "stats");
  });

  it("recognises the [DONE] marker and reports malformed data instead of throwing", () => {
    assert.deepEqual(classifySseMessage({ event: "message", data: "[DONE]" }), { type: "end" });
    assert.deepEqual(classifySseMessage({ event: "text", data: "{not json" }), { type: "invalid", raw: "{not json" });
    assert.deepEqual(classifySseMessage({ event: "message", data: "42" }), { type: "invalid", raw: "42" });
  });
});
