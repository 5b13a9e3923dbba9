import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";

/** A logger bound to `bindings` that keeps its parsed lines. */
function boundLogger(bindings: Record<string, unknown>) {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ bindings, write: (line) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

Deno.test("a field never overwrites the logger's bindings: it is kept as field_<name>", () => {
  // main.ts binds the engine's name; the migrator logs which database a migration ran on.
  const { log, lines } = boundLogger({ engine: "tradewire-1" });
  log.child({ actor: "migrations" }).info("Applied migration", { engine: "postgres", version: 3 });
  assert.equal(lines[0]?.engine, "tradewire-1");
  assert.equal(lines[0]?.field_engine, "postgres");
  assert.equal(lines[0]?.actor, "migrations");
  assert.equal(lines[0]?.version, 3);
});

Deno.test("a field repeating its bound value is written once; level, time and message stay", () => {
  const { log, lines } = boundLogger({ exchange: "binance" });
  log.warn("stale", { exchange: "binance", level: "x", message: "y", time: 1 });
  assert.deepEqual(Object.keys(lines[0] ?? {}).toSorted(), [
    "exchange",
    "field_level",
    "field_message",
    "field_time",
    "level",
    "message",
    "time",
  ]);
  assert.equal(lines[0]?.level, "warn");
  assert.equal(lines[0]?.message, "stale");
});

Deno.test("a child's bindings replace its parent's", () => {
  const { log, lines } = boundLogger({ component: "a" });
  log.child({ component: "b" }).info("x");
  assert.equal(lines[0]?.component, "b");
});
