/**
 * A decimal key's number whose exponent is too small for a decimal to hold
 * (`1e-99999999999999999999`) is refused as an exponent beyond -1000, as the
 * README says of exponents past ±1000, from a flag, the environment or a
 * YAML file; it read as 0 and loaded as a limit of 0. Keys the schema knows
 * that are also Object.prototype's (`constructor`, `toString`) under a
 * mapping with free keys are refused as bad keys, nothing more.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadConfig, type LoadConfigOptions } from "../config/mod.ts";

async function problems(options: LoadConfigOptions): Promise<string[]> {
  try {
    await loadConfig(options);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error.problems.map((p) => `${p.key}: ${p.reason}`);
  }
  assert.fail("expected the configuration to be refused");
}

const TINY = "1e-99999999999999999999";

Deno.test("a decimal whose exponent underflows is refused from a flag, the environment and a file", async () => {
  const fromFlags = await problems({
    args: [`--risk.max_order_qty=${TINY}`],
    env: { TRADEWIRE_PORTFOLIO__STARTING_CASH: `5${TINY}` },
  });
  assert.equal(fromFlags.length, 2, fromFlags.join("\n"));
  for (const problem of fromFlags) {
    assert.match(problem, /exponent from -1000 to 1000, got a number with exponent beyond that/);
  }
  const dir = await Deno.makeTempDir({ prefix: "tradewire_review61_" });
  try {
    const path = join(dir, "user.yaml");
    await Deno.writeTextFile(path, `risk:\n  daily_loss_limit: ${TINY}\n`);
    const fromFile = await problems({ args: ["--config", path], env: {} });
    assert.deepEqual(fromFile.map((p) => p.split(":")[0]), ["risk.daily_loss_limit"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const zero = await loadConfig({
    args: ["--risk.max_order_qty=0e-99999999999999999999"],
    env: {},
  });
  assert.equal(zero.risk.max_order_qty, "0");
});

Deno.test("a symbol key named like an Object.prototype member is one bad key", async () => {
  const found = await problems({ args: ["--risk.symbols.constructor.max_order_qty=1"], env: {} });
  assert.deepEqual(found, [
    "risk.symbols.constructor: bad key: expected a symbol such as BTC-USDT or AAPL",
  ]);
});
