/**
 * A section written as text in YAML — a key whose colon was left out
 * (`nats:\n  password hunter2` reads `nats` as the text "password hunter2")
 * — is an invalid configuration whose message does not show that text: it
 * may hold the password. It used to be quoted in full.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../config/mod.ts";

const SECRETS = ["hunter2Nats", "s3cretClickHouse", "AlpacaSecret0x1f"];

Deno.test("a section given text (a key without its colon) is refused without quoting the text", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tradewire_review61_" });
  try {
    const path = join(dir, "user.yaml");
    await Deno.writeTextFile(
      path,
      [
        "nats:",
        "  user tw",
        `  password ${SECRETS[0]}`,
        "clickhouse:",
        `  password ${SECRETS[1]}`,
        "brokers:",
        "  alpaca:",
        `    secret_key ${SECRETS[2]}`,
        "",
      ].join("\n"),
    );
    let error: unknown;
    try {
      await loadConfig({ args: ["--config", path], env: { TRADEWIRE_RISK: "x" } });
    } catch (caught) {
      error = caught;
    }
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    assert.deepEqual(error.problems.map((p) => p.key).sort(), [
      "brokers.alpaca",
      "clickhouse",
      "nats",
      "risk",
    ]);
    for (const secret of SECRETS) assert.ok(!error.message.includes(secret), error.message);
    const nats = error.problems.find((p) => p.key === "nats")!;
    assert.match(nats.reason, /expected a mapping of keys, got a string of 28 characters/);
    assert.equal(nats.source, `${path}:1`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
