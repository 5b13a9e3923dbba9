import assert from "node:assert/strict";
import { sendTrades, startMarketPipeline } from "./_market_pipeline.ts";
import { waitFor } from "./_helpers.ts";

const N = 3_000;

Deno.test("N trades from a fake venue become exactly N rows in market_trades", async () => {
  await using pipeline = await startMarketPipeline();
  sendTrades(pipeline, N);
  await waitFor(async () => await pipeline.countFinal("market_trades") >= N, 60_000, "all rows");
  // Rows can be visible before the writer's insert call returns and counts them.
  await waitFor(
    () => pipeline.status.writer.rows_written.market_trades === N,
    10_000,
    "writer counted the rows",
  );
  assert.equal(await pipeline.countFinal("market_trades"), N);
  assert.equal(await pipeline.countAll("market_trades"), N);
  const feed = pipeline.status.feed("binance");
  assert.equal(feed.malformed, 0);
  assert.equal(pipeline.status.validator.accepted, N);
  assert.deepEqual(pipeline.status.validator.rejected, {});
  assert.equal(pipeline.status.writer.rows_written.market_trades, N);
});

Deno.test("with ClickHouse down for part of the run, nothing is lost and nothing duplicated", async () => {
  await using pipeline = await startMarketPipeline();
  const proxy = pipeline.proxy;
  assert.ok(proxy, "the pipeline has its ClickHouse proxy");
  sendTrades(pipeline, N / 3);
  await waitFor(
    async () => await pipeline.countFinal("market_trades") >= N / 3,
    60_000,
    "first third",
  );

  proxy.cut();
  sendTrades(pipeline, (2 * N) / 3, N / 3);
  await waitFor(
    () => pipeline.status.writer.clickhouse === "down",
    30_000,
    "writer sees ClickHouse down",
  );
  assert.ok(pipeline.status.writer.failures > 0);
  assert.ok(await pipeline.countFinal("market_trades") < N);

  proxy.restore();
  await waitFor(
    async () => await pipeline.countFinal("market_trades") >= N,
    60_000,
    "all rows after recovery",
  );
  await waitFor(
    () => pipeline.status.writer.clickhouse === "up",
    10_000,
    "writer sees ClickHouse up",
  );
  assert.equal(await pipeline.countFinal("market_trades"), N);
  const uniq = await pipeline.clickhouse.query({
    query:
      `SELECT uniqExact(exchange, symbol, trade_id) AS n FROM ${pipeline.database}.market_trades`,
    format: "JSONEachRow",
  });
  assert.equal(Number((await uniq.json<{ n: string }>())[0]?.n), N);
  assert.equal(pipeline.status.validator.accepted, N);
});
