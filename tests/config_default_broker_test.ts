/**
 * `execution.default_broker` must name an enabled broker (review 53): one
 * that is not would refuse every signal naming no broker at run time, with
 * only a warning at start.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../config/mod.ts";
import { loadError } from "./_config.ts";

Deno.test("execution.default_broker naming a broker that is not enabled is an invalid configuration", async () => {
  const error = await loadError({ args: ["--execution.default_broker=alpaca"] });
  assert.deepEqual(error.problems.map((p) => p.key), ["execution.default_broker"]);
  assert.match(error.message, /names the broker alpaca, which is not enabled/);
  assert.match(error.message, /set brokers\.alpaca\.enabled to true/);
  assert.match(error.message, /\(from flag --execution\.default_broker\)/);
  const fromEnv = await loadError({ env: { TRADEWIRE_EXECUTION__DEFAULT_BROKER: "alpaca" } });
  assert.match(fromEnv.message, /\(from env TRADEWIRE_EXECUTION__DEFAULT_BROKER\)/);
});

Deno.test("execution.default_broker may name the paper broker, or alpaca once it is enabled", async () => {
  const paper = await loadConfig({ args: [], env: {} });
  assert.equal(paper.execution.default_broker, "paper");
  const alpaca = await loadConfig({
    args: ["--execution.default_broker=alpaca", "--brokers.alpaca.enabled=true"],
    env: {},
  });
  assert.equal(alpaca.execution.default_broker, "alpaca");
});

Deno.test("execution.default_broker is not checked while execution is disabled", async () => {
  const config = await loadConfig({
    args: ["--execution.default_broker=alpaca", "--execution.enabled=false"],
    env: {},
  });
  assert.equal(config.execution.default_broker, "alpaca");
});
