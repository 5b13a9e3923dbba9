/**
 * Symbols a venue would serve under another name are refused at load, naming
 * the key and the name to use: Coinbase serves the market data of an `X-USDC`
 * product as `X-USD` (so its events went out under a symbol nobody configured
 * and its book never came, resynced for ever), and Kraken's WebSocket v2
 * refuses the legacy XBT and XDG (subscribed as `XBT/USD`, refused for ever).
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../config/mod.ts";

async function withYaml<T>(yaml: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, yaml);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

const load = (path: string) => loadConfig({ args: ["--config", path], env: {} });

Deno.test("a Coinbase -USDC product is refused at load, naming the -USD product that carries its data", async () => {
  await withYaml("exchanges:\n  coinbase:\n    symbols: [BTC-USDC, ETH-USD]\n", async (path) => {
    await assert.rejects(load(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(
        error.message,
        /exchanges\.coinbase\.symbols: Coinbase serves the market data of BTC-USDC as BTC-USD: configure BTC-USD/,
      );
      return true;
    });
  });
  // USDT-USDC and EURC-USDC have market data of their own.
  await withYaml("exchanges:\n  coinbase:\n    symbols: [USDT-USDC, EURC-USDC]\n", async (path) => {
    assert.deepEqual((await load(path)).exchanges.coinbase.symbols, ["USDT-USDC", "EURC-USDC"]);
  });
});

Deno.test("Kraken's legacy XBT and XDG are refused at load, naming WebSocket v2's BTC and DOGE", async () => {
  await withYaml(
    "exchanges:\n  kraken:\n    symbols: [XBT-USD, ETH-XBT, XDG-USD]\n",
    async (path) => {
      await assert.rejects(load(path), (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        for (
          const [given, v2] of [["XBT-USD", "BTC-USD"], ["ETH-XBT", "ETH-BTC"], [
            "XDG-USD",
            "DOGE-USD",
          ]]
        ) {
          assert.ok(
            error.message.includes(`Kraken's WebSocket v2 names ${given} ${v2}: configure ${v2}`),
            error.message,
          );
        }
        return true;
      });
    },
  );
  await withYaml("exchanges:\n  kraken:\n    symbols: [BTC-USD, DOGE-USD]\n", async (path) => {
    assert.deepEqual((await load(path)).exchanges.kraken.symbols, ["BTC-USD", "DOGE-USD"]);
  });
});
