/**
 * A YAML alias inside the very value its anchor names (`risk: &a` then
 * `symbols: *a`) makes a structure that holds itself: an invalid
 * configuration, reported with the file and line, exit code 2 — not a stack
 * overflow (`RangeError: Maximum call stack size exceeded`) thrown out of
 * the loader, which `main.ts` ended with a stack trace and exit code 1.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { withFile } from "./_config.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));

Deno.test("a YAML alias inside the value its anchor names is a configuration error naming the line", async () => {
  await withFile("http:\n  port: abc\nrisk: &a\n  symbols: *a\n", async (path) => {
    let error: unknown;
    try {
      await loadConfig({ args: ["--config", path, "--nats.url=x"], env: {} });
    } catch (caught) {
      error = caught;
    }
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    const keys = error.problems.map((p) => p.key);
    assert.ok(keys.includes(`${path}:4:12`), keys.join(", "));
    const alias = error.problems.find((p) => p.key === `${path}:4:12`)!;
    assert.match(alias.reason, /in risk\.symbols: an alias \(\*name\) inside the value its anchor/);
    assert.ok(keys.includes("nats.url"), "the flag's problem is reported too");
  });
});

Deno.test("the engine exits 2 with a message, no stack trace, on a YAML alias inside its own anchor", async () => {
  await withFile("risk: &a\n  symbols: *a\n", async (path) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", MAIN, "--config", path],
      env: { TRADEWIRE_CONFIG: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 2, stderr);
    assert.match(stderr, /Invalid configuration:/);
    assert.doesNotMatch(stderr, /RangeError|Maximum call stack/);
  });
});
