/**
 * A section given a value that is not a mapping (`TRADEWIRE_RISK=x`, a file's
 * `risk.symbols: AAPL`) is an invalid configuration even when an env variable
 * or a flag then sets a key under it: that override used to replace the bad
 * value with a fresh section, so the bad value went unreported and the keys
 * the files set in the section were dropped for the defaults (a file's
 * `risk.max_order_qty: 1` became 10000).
 */

import assert from "node:assert/strict";
import { loadConfig } from "../config/mod.ts";
import { loadError, withFile } from "./_config.ts";

Deno.test("an env variable setting a section to a value is refused even when another sets a key under it", async () => {
  await withFile("risk:\n  max_order_qty: 1\n", async (path) => {
    const error = await loadError({
      args: ["--config", path],
      env: { TRADEWIRE_RISK: "x", TRADEWIRE_RISK__DAILY_LOSS_LIMIT: "5" },
    });
    assert.deepEqual(error.problems.map((p) => p.key), ["risk"]);
    assert.equal(error.problems[0]!.source, "env TRADEWIRE_RISK");
    assert.match(error.problems[0]!.reason, /expected a mapping/);
  });
});

Deno.test("a file's section given a scalar is reported when an env variable or a flag sets a key under it", async () => {
  await withFile("risk:\n  symbols: AAPL\n", async (path) => {
    const fromEnv = await loadError({
      args: ["--config", path],
      env: { TRADEWIRE_RISK__SYMBOLS__MSFT__MAX_ORDER_QTY: "5" },
    });
    assert.deepEqual(fromEnv.problems.map((p) => p.key), ["risk.symbols"]);
    assert.equal(fromEnv.problems[0]!.source, `${path}:2`);
    const fromFlag = await loadError({
      args: ["--config", path, "--risk.symbols.MSFT.max_order_qty=2", "--http.port=abc"],
      env: {},
    });
    assert.deepEqual(fromFlag.problems.map((p) => p.key).sort(), ["http.port", "risk.symbols"]);
  });
});

Deno.test("keys set under a section that no layer gave a value still make the section", async () => {
  const config = await loadConfig({
    args: ["--risk.symbols.MSFT.max_order_qty=2"],
    env: { TRADEWIRE_RISK__SYMBOLS__AAPL__MAX_ORDER_QTY: "1" },
  });
  assert.deepEqual(config.risk.symbols, {
    AAPL: { max_order_qty: "1" },
    MSFT: { max_order_qty: "2" },
  });
});
