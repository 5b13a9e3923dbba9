/**
 * The trading bench's command-line flags (bench/trading_bench.ts
 * `parseTradingBenchArgs`). Review 50: `--burst=20k` ran with NaN signals and
 * `--latency 1500` (a space, not `=`) was silently ignored; now both are
 * refused, naming the flag, and the bench exits 2.
 */
import assert from "node:assert/strict";
import { DEFAULT_TRADING_BENCH_OPTIONS, parseTradingBenchArgs } from "../bench/trading_bench.ts";

Deno.test("trading bench flags: none give the defaults, --name=N sets one", () => {
  assert.deepEqual(parseTradingBenchArgs([]), DEFAULT_TRADING_BENCH_OPTIONS);
  assert.deepEqual(parseTradingBenchArgs(["--burst=20000", "--latency=1500"]), {
    ...DEFAULT_TRADING_BENCH_OPTIONS,
    burst: 20000,
    latency: 1500,
  });
});

Deno.test("trading bench flags: a value that is not a whole number of at least 1 is refused", () => {
  for (const arg of ["--burst=20k", "--burst=", "--floors=0", "--batch=-5", "--latency=1.5"]) {
    assert.throws(() => parseTradingBenchArgs([arg]), RangeError, arg);
  }
});

Deno.test("trading bench flags: an unknown or space-separated flag is refused", () => {
  for (const args of [["--latency", "1500"], ["--bursts=10"], ["burst=10"], ["--help"]]) {
    assert.throws(() => parseTradingBenchArgs(args), TypeError, args.join(" "));
  }
});

Deno.test("trading bench exits 2 with a message naming a bad flag", async () => {
  for (const [arg, said] of [["--burst=20k", "--burst"], ["--latency", "--latency"]]) {
    const { code, stderr, stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../bench/trading_bench.ts", import.meta.url).pathname, arg!],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const message = new TextDecoder().decode(stderr);
    assert.equal(code, 2, `${arg}: exit ${code}, ${message}`);
    assert.ok(message.includes(said!), message);
    assert.equal(new TextDecoder().decode(stdout), "");
  }
});
