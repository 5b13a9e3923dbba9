/**
 * Do the common order-list queries (GET /api/v1/trading/orders with
 * `status`, with `symbol` and `status`) use an index on a table with enough
 * rows? Captures the statement a real `listOrders` call sends and EXPLAIN
 * ANALYZEs it with the same parameters: rows read = returned + removed by filter.
 */
import assert from "node:assert/strict";
import { listOrders, type OrderStatus } from "../db/mod.ts";
import postgres from "postgres";
import { migratedDatabase } from "./_postgres.ts";

const HISTORY = 200_000;

/**
 * Runs `listOrders` on a pool that records its statement, then EXPLAIN ANALYZEs that very
 * statement with the same parameters; returns the rows the plan read (returned + filtered out).
 */
async function rowsRead(
  url: string,
  filter: { symbol?: string; status: OrderStatus[] },
): Promise<{ read: number; found: number; plan: string }> {
  const seen: { query: string; params: unknown[] }[] = [];
  const sql = postgres(url, {
    max: 1,
    onnotice: () => {},
    debug: (_conn, query, params) => seen.push({ query, params: params as unknown[] }),
  });
  try {
    const page = await listOrders(sql, { ...filter, limit: 100 });
    const q = seen.find((s) => /FROM "orders"/i.test(s.query));
    assert.ok(q, "listOrders statement not captured");
    const [row] = await sql.unsafe(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${q.query}`,
      q.params as never[],
    );
    const plan = (row as Record<string, unknown>)["QUERY PLAN"] as { Plan: Node }[];
    let read = 0;
    const walk = (n: Node) => {
      if (n["Relation Name"] === "orders") {
        read += (n["Actual Rows"] ?? 0) + (n["Rows Removed by Filter"] ?? 0);
      }
      for (const c of n.Plans ?? []) walk(c);
    };
    walk(plan[0]!.Plan);
    const scans: string[] = [];
    const names = (n: Node) => {
      if (n["Relation Name"]) scans.push(`${n["Node Type"]} ${n["Index Name"] ?? ""}`.trim());
      for (const c of n.Plans ?? []) names(c);
    };
    names(plan[0]!.Plan);
    return { read, found: page.items.length, plan: scans.join(", ") };
  } finally {
    await sql.end();
  }
}

type Node = {
  "Node Type"?: string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Actual Rows"?: number;
  "Rows Removed by Filter"?: number;
  Plans?: Node[];
};

Deno.test("GET /orders?symbol=..&status=.. and ?status=open reads the few matching rows, not the whole order history", async () => {
  await using db = await migratedDatabase(2);
  const sql = db.sql;
  await sql`insert into symbols (symbol) select 'S' || g from generate_series(1, 20) g`;
  // A long history of filled orders, and a handful still working.
  await sql`insert into orders (symbol, side, qty, status, filled_qty, avg_fill_price, strategy)
    select 'S' || (g % 20 + 1), 'buy', 1, 'filled', 1, 10, 'strat'
    from generate_series(1, ${HISTORY}) g`;
  await sql`insert into orders (symbol, side, qty, status, strategy)
    select 'S1', 'buy', 1, 'submitted', 'strat' from generate_series(1, 5)`;
  await sql`update orders set status = 'submitted', filled_qty = 0, avg_fill_price = null
    where id in (10, 20, 30)`;
  await sql`analyze orders`;

  const bySymbol = await rowsRead(db.url, { symbol: "S1", status: ["submitted"] });
  const open = await rowsRead(db.url, { status: ["submitted", "partially_filled"] });
  assert.equal(bySymbol.found, 6);
  assert.equal(open.found, 8);
  assert.ok(
    bySymbol.read < 1000 && open.read < 1000,
    `tuples read for 6 and 8 matching orders out of ${HISTORY}: ` +
      `symbol+status ${bySymbol.read} (${bySymbol.plan}), status only ${open.read} (${open.plan}); ` +
      `orders_symbol_status_idx unused, no index leads with status)`,
  );
});

Deno.test("migration 0007 adds orders_status_id_idx (status, id); its down file drops it", async () => {
  await using db = await migratedDatabase(2);
  const index = async () =>
    (await db.sql<{ def: string }[]>`select indexdef as def from pg_indexes
      where tablename = 'orders' and indexname = 'orders_status_id_idx'`)[0]?.def;
  assert.match(String(await index()), /ON public\.orders USING btree \(status, id\)$/);
  const down = await db.migrator.down(6, { only: "postgres" });
  // Newest first: the migrations after 0007, then 0007.
  assert.equal(down.postgres?.reverted.at(-1)?.name, "orders_status_idx");
  assert.equal(await index(), undefined);
  await db.migrator.up(undefined, { only: "postgres" });
  assert.ok(await index());
});

Deno.test("listOrders refuses an unknown status before it reaches SQL", async () => {
  await using db = await migratedDatabase(1);
  await assert.rejects(
    listOrders(db.sql, { status: ["filled", "x},{y" as OrderStatus] }),
    (e: unknown) => e instanceof RangeError && /Unknown order status x\},\{y/.test(e.message),
  );
});
