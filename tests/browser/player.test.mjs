// Unit tests of static/player.js scheduling math (the Web Audio part needs a browser).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { PlaybackScheduler } from "../../static/player.js";

describe("PlaybackScheduler", () => {
  it("starts the first chunk after the preroll and queues early chunks back to back", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.1 });
    const first = scheduler.schedule(2.0, 1.0);
    assert.deepEqual(first, { start: 2.1, end: 3.1, gap: 0 });
    // the next chunks arrive while audio is still queued: they start exactly where the previous one ends
    const second = scheduler.schedule(2.5, 0.5);
    const third = scheduler.schedule(2.6, 1.25);
    assert.equal(second.start, first.end);
    assert.equal(third.start, second.end);
    assert.equal(third.end, 4.85);
    assert.equal(scheduler.gaps, 0);
    assert.equal(scheduler.gapSeconds, 0);
    assert.equal(scheduler.scheduledSeconds, 2.75);
  });

  it("counts an underrun when a chunk arrives after the queue ran dry, and restarts after the preroll", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.1 });
    scheduler.schedule(0, 1.0); // plays 0.1 .. 1.1
    const late = scheduler.schedule(1.5, 1.0);
    assert.equal(late.start, 1.6);
    assert.ok(Math.abs(late.gap - 0.5) < 1e-12);
    assert.equal(scheduler.gaps, 1);
    assert.ok(Math.abs(scheduler.gapSeconds - 0.5) < 1e-12);
    const onTime = scheduler.schedule(2.0, 1.0);
    assert.equal(onTime.start, 2.6);
    assert.equal(onTime.gap, 0);
    assert.equal(scheduler.gaps, 1);
  });

  it("counts a gap when a chunk arrives inside the preroll window of the queue's end", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0.125 });
    scheduler.schedule(0, 1.0); // ends at 1.125
    const tight = scheduler.schedule(1.0625, 1.0); // start = max(1.125, 1.1875)
    assert.deepEqual(tight, { start: 1.1875, end: 2.1875, gap: 0.0625 });
    assert.equal(scheduler.gaps, 1);
  });

  it("reports remaining audio and resets all counters", () => {
    const scheduler = new PlaybackScheduler({ preroll: 0 });
    assert.equal(scheduler.remaining(5), 0);
    scheduler.schedule(0, 2.0);
    scheduler.schedule(3, 1.0);
    assert.equal(scheduler.remaining(3.5), 0.5);
    assert.equal(scheduler.remaining(10), 0);
    scheduler.reset();
    assert.equal(scheduler.chunks, 0);
    assert.equal(scheduler.gaps, 0);
    assert.equal(scheduler.scheduledSeconds, 0);
    assert.deepEqual(scheduler.schedule(7, 1.0), { start: 7, end: 8, gap: 0 });
  });
});
