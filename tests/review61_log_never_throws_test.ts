/**
 * A log call never throws, whatever its fields hold: a BigInt (which
 * JSON.stringify refuses), an object that holds itself (a library's object
 * logged as an uncaught rejection's reason), an error whose cause chain
 * loops. Each used to throw out of the log call (TypeError "Do not know how
 * to serialize a BigInt", RangeError "Maximum call stack size exceeded"),
 * into the catch block or error handler that was logging, and the line was
 * lost. Secrets are still redacted in such fields.
 */

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { redactSecrets } from "../lib/redact.ts";

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ write: (line) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

Deno.test("a log line with a BigInt field is written, the number as its digits", () => {
  const { log, lines } = capture();
  log.info("lock taken", { key: 727374n + 1_000_000_000_000n, nested: { seq: 2n ** 70n } });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.key, "1000000727374");
  assert.deepEqual(lines[0]!.nested, { seq: "1180591620717411303424" });
});

Deno.test("a log line with an object that holds itself is written, the loop marked, secrets redacted", () => {
  const { log, lines } = capture();
  const reason: Record<string, unknown> = {
    type: "error",
    url: "postgres://tw:Hunter2Secret@db:5432/tw",
    password: "Hunter2Secret",
  };
  reason.target = { owner: reason, list: [reason] };
  log.error("uncaught error; engine stopping", { error: reason });
  assert.equal(lines.length, 1);
  const written = JSON.stringify(lines[0]);
  assert.ok(!written.includes("Hunter2Secret"), written);
  const error = lines[0]!.error as Record<string, unknown>;
  assert.equal(error.type, "error");
  assert.deepEqual(error.target, { owner: "[Circular]", list: ["[Circular]"] });
});

Deno.test("a log line with an error whose cause chain loops is written, each error once", () => {
  const { log, lines } = capture();
  const inner = new Error("inner");
  const outer = new Error("outer", { cause: inner });
  inner.cause = outer;
  log.warn("connect failed", { error: outer });
  assert.equal(lines.length, 1);
  assert.deepEqual(lines[0]!.error, {
    name: "Error",
    message: "outer",
    cause: { name: "Error", message: "inner", cause: "[Circular]" },
  });
});

Deno.test("redactSecrets keeps an object reached twice without a loop whole", () => {
  const shared = { token: "t0ken", host: "db" };
  assert.deepEqual(redactSecrets({ a: shared, b: [shared] }), {
    a: { token: "***", host: "db" },
    b: [{ token: "***", host: "db" }],
  });
});
