/**
 * A decimal key written as a YAML number that a float cannot hold exactly is
 * refused, as the README says ("more than 15 significant digits … is
 * refused: write it as a string"), also when the float it rounds to is short
 * (`1.0000000000000001` reads as 1, `5000.0000000000001` as 5000,
 * `1e-400` as 0): such a limit was loaded as the float's value, silently.
 */

import assert from "node:assert/strict";
import { loadError, loadTestConfig, withFile } from "./_config.ts";

/** Loads `path` (and `args`) expecting a refusal. */
const loadFileError = (path: string, args: string[] = []) =>
  loadError({ args: ["--config", path, ...args] });

Deno.test("a YAML number at a decimal key that its float rounds to a shorter number is refused, naming the key and line", async () => {
  const yaml = [
    "risk:",
    "  max_order_notional: 1.0000000000000001",
    "  daily_loss_limit: 5000.0000000000001",
    "  max_order_qty: 1e-400",
    "  symbols:",
    "    AAPL: &aapl",
    "      max_position_qty: 99999999999.999999999",
    "    MSFT: *aapl",
    "portfolio:",
    "  starting_cash: 10000000.0000000001",
    "",
  ].join("\n");
  await withFile(yaml, async (path) => {
    const error = await loadFileError(path);
    const keys = error.problems.map((problem) => problem.key).sort();
    assert.deepEqual(keys, [
      "portfolio.starting_cash",
      "risk.daily_loss_limit",
      "risk.max_order_notional",
      "risk.max_order_qty",
      "risk.symbols.AAPL.max_position_qty",
      "risk.symbols.MSFT.max_position_qty",
    ]);
    const notional = error.problems.find((p) => p.key === "risk.max_order_notional")!;
    assert.match(notional.reason, /write a decimal as a string/);
    assert.match(notional.reason, /1\.0000000000000001/);
    assert.equal(notional.source, `${path}:2`);
  });
});

Deno.test("a YAML number at a decimal key that a float holds exactly still loads as its decimal", async () => {
  const yaml = [
    "risk:",
    "  max_order_qty: 0.1",
    "  max_order_notional: 1.00000000000000000",
    "  max_position_qty: 1e3",
    "  daily_loss_limit: 123456789012.125",
    "supervisor:",
    "  backoff_jitter: 0.10000000000000001",
    "",
  ].join("\n");
  await withFile(yaml, async (path) => {
    const config = await loadTestConfig({ args: ["--config", path] });
    assert.equal(config.risk.max_order_qty, "0.1");
    assert.equal(config.risk.max_order_notional, "1");
    assert.equal(config.risk.max_position_qty, "1000");
    assert.equal(config.risk.daily_loss_limit, "123456789012.125");
    assert.equal(config.supervisor.backoff_jitter, 0.1); // a float key: a float it is
  });
});

Deno.test("an inexact YAML decimal is reported with every other bad key of the files, env and flags", async () => {
  await withFile("risk:\n  max_order_notional: 1.0000000000000001\n", async (path) => {
    const error = await loadFileError(path, ["--http.port=abc"]);
    assert.deepEqual(error.problems.map((p) => p.key).sort(), [
      "http.port",
      "risk.max_order_notional",
    ]);
  });
});
