/**
 * The keys of `validator.overrides`: a known exchange (`binance`) or an
 * exchange and a canonical, upper-case symbol (`binance/BTC-USDT`,
 * `alpaca/BRK.B`). A key that could never match an event — a lower-case
 * symbol, an unknown exchange — is a configuration error naming the key, as
 * under `risk.exchanges` and `risk.symbols`, not thresholds silently never
 * applied.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Config, ConfigError, loadConfig } from "../config/mod.ts";
import { Validator } from "../market/validation.ts";

async function load(yaml: string): Promise<Config> {
  const file = await Deno.makeTempFile({ prefix: "tradewire_overrides_", suffix: ".yaml" });
  try {
    await Deno.writeTextFile(file, yaml);
    return await loadConfig({ args: ["--config", file], env: {} });
  } finally {
    await Deno.remove(file);
  }
}

async function badKeys(yaml: string): Promise<string[]> {
  try {
    await load(yaml);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.problems.filter((p) => p.reason.startsWith("bad key:")).map((p) => p.key);
  }
  assert.fail("expected a ConfigError");
}

Deno.test("a validator override keyed by a symbol in lower case is refused, not silently never applied", async () => {
  const yaml = "validator:\n  overrides:\n    binance/btc-usdt:\n      spike_pct: 50\n";
  assert.deepEqual(await badKeys(yaml), ["validator.overrides.binance/btc-usdt"]);
});

Deno.test("a validator override for an unknown exchange is refused, not silently never applied", async () => {
  const yaml = "validator:\n  overrides:\n    coinbasepro:\n      max_lag_ms: 1000\n" +
    "    coinbasepro/BTC-USD:\n      max_lag_ms: 1000\n";
  assert.deepEqual((await badKeys(yaml)).sort(), [
    "validator.overrides.coinbasepro",
    "validator.overrides.coinbasepro/BTC-USD",
  ]);
});

Deno.test("validator overrides keyed by an exchange or a canonical symbol are applied", async () => {
  const config = await load(
    "validator:\n  overrides:\n    kraken:\n      spike_pct: 30\n" +
      "    binance/BTC-USDT:\n      spike_pct: 50\n    alpaca/BRK.B:\n      max_lag_ms: 1000\n",
  );
  const validator = new Validator(config.validator);
  assert.equal(validator.thresholds("binance", "BTC-USDT").spike_pct, 50);
  assert.equal(validator.thresholds("kraken", "ETH-USD").spike_pct, 30);
  assert.equal(validator.thresholds("alpaca", "BRK.B").max_lag_ms, 1000);
});
