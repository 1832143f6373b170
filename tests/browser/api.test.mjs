// Unit tests of static/api.js error formatting and the generate() stream handling (fetch is replaced by
// a local stub returning canned Responses; no server involved).
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { ApiError, api, describeHttpError, serverMessageFromBody } from "../../static/api.js";

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

function stubFetch(response) {
  const calls = [];
  globalThis.fetch = async (url, options) => {
    calls.push({ url, options });
    if (response instanceof Error) throw response;
    return response;
  };
  return calls;
}

describe("serverMessageFromBody / describeHttpError", () => {
  it("extracts the server's message from the error body shapes", () => {
    assert.equal(serverMessageFromBody('{"error":"duplex mode is not available yet"}'), "duplex mode is not available yet");
    assert.equal(serverMessageFromBody('{"detail":"Not Found"}'), "Not Found");
    assert.equal(
      serverMessageFromBody('{"detail":[{"loc":["body","text"],"msg":"field required"}]}'),
      "body.text: field required",
    );
    assert.equal(serverMessageFromBody("Internal Server Error"), "Internal Server Error");
    assert.equal(serverMessageFromBody(""), "");
  });

  it("formats status, status text and message", () => {
    assert.deepEqual(describeHttpError(501, "Not Implemented", '{"error":"speech input is not available yet"}'), {
      message: "HTTP 501 Not Implemented: speech input is not available yet",
      serverMessage: "speech input is not available yet",
    });
    assert.equal(describeHttpError(502, "", "").message, "HTTP 502");
  });
});

describe("api requests", () => {
  it("posts JSON and turns a 4xx into an ApiError with the server message", async () => {
    const calls = stubFetch(
      new Response('{"error":"engine not initialized"}', { status: 400, statusText: "Bad Request" }),
    );
    await assert.rejects(api.prefill({ text: "hi" }), (error) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 400);
      assert.equal(error.serverMessage, "engine not initialized");
      assert.equal(error.message, "HTTP 400 Bad Request: engine not initialized");
      return true;
    });
    assert.equal(calls[0].url, "/omni/streaming_prefill");
    assert.equal(calls[0].options.method, "POST");
    assert.equal(calls[0].options.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(calls[0].options.body), { text: "hi" });
  });

  it("reports a network failure in plain words", async () => {
    stubFetch(new TypeError("fetch failed"));
    await assert.rejects(api.health(), /Network error on \/health: fetch failed \(is the server running\?\)/);
  });

  it("streams typed events from an event-stream response", async () => {
    const body =
      'event: text\ndata: {"chunk_data":{"text":"ok","wav":"","sample_rate":24000}}\n\n' +
      'event: stats\ndata: {"stats":{"ttft_ms":3.5}}\n\n' +
      'event: done\ndata: {"done":true,"reason":"eos"}\n\ndata: [DONE]\n\n';
    stubFetch(new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream; charset=utf-8" } }));
    const events = [];
    await api.generate({ length_penalty: 1.1 }, undefined, (event) => events.push(event));
    assert.deepEqual(events, [
      { type: "text", text: "ok" },
      { type: "stats", stats: { ttft_ms: 3.5 } },
      { type: "done", reason: "eos" },
      { type: "end" },
    ]);
  });

  it("rejects a 200 answer that is not an event stream", async () => {
    stubFetch(new Response('{"success":true}', { status: 200, headers: { "Content-Type": "application/json" } }));
    await assert.rejects(api.generate({}, undefined, () => {}), /Expected an event stream, got application\/json/);
  });
});
