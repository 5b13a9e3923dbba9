/**
 * What the keyset pages of a list (`selectPage`, here through `listOrders`)
 * promise while other transactions commit between pages: no row twice,
 * every row committed before the first page, in id order. A row whose
 * transaction took its id before a page past that id was read and commits
 * later may be left behind by that listing (ids are taken at insert, not at
 * commit); a new listing from the first page shows it.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { insertOrder, listOrders, upsertSymbols } from "../db/mod.ts";
import { migratedDatabase } from "./_postgres.ts";

const ORDER = { symbol: "AAPL", side: "buy", qty: "1", strategy: "s" } as const;

/** An order inserted in a transaction that commits only when `commit()` is called. */
async function openInsert(sql: Sql) {
  const inserted = Promise.withResolvers<string>();
  const release = Promise.withResolvers<void>();
  const done = sql.begin(async (tx) => {
    inserted.resolve((await insertOrder(tx, { ...ORDER, strategy: "late" })).id);
    await release.promise;
  });
  const id = await Promise.race([inserted.promise, done.then(() => "")]);
  return {
    id,
    async commit() {
      release.resolve();
      await done;
    },
  };
}

/** Every id of a listing, page by page; `between` runs once after the first page. */
async function pageThrough(
  sql: Sql,
  options: { direction: "asc" | "desc"; limit: number },
  between: () => Promise<void>,
): Promise<string[]> {
  let page = await listOrders(sql, options);
  const seen = page.items.map((o) => o.id);
  await between();
  while (page.next !== null) {
    page = await listOrders(sql, { ...options, after: page.next });
    seen.push(...page.items.map((o) => o.id));
  }
  return seen;
}

async function committedIds(sql: Sql): Promise<string[]> {
  return (await sql`SELECT id::text FROM orders ORDER BY id`).map((r) => r.id as string);
}

function assertListing(seen: string[], before: string[], direction: "asc" | "desc") {
  assert.equal(new Set(seen).size, seen.length, `no order twice: ${seen}`);
  const ordered = seen.map(BigInt);
  for (let i = 1; i < ordered.length; i++) {
    const [a, b] = [ordered[i - 1]!, ordered[i]!];
    assert.ok(direction === "asc" ? a < b : a > b, `${direction} id order: ${seen}`);
  }
  for (const id of before) assert.ok(seen.includes(id), `order ${id} listed: ${seen}`);
}

for (const direction of ["desc", "asc"] as const) {
  Deno.test(`listOrders ${direction} lists every order committed before its first page once while another commits between pages`, async () => {
    await using db = await migratedDatabase(4);
    await upsertSymbols(db.sql, [{ symbol: "AAPL" }]);
    // desc: ids 1, 2 committed, 3 open, 4 committed; asc: 1 open, 2..4 committed.
    if (direction === "desc") { for (let i = 0; i < 2; i++) await insertOrder(db.sql, ORDER); }
    const late = await openInsert(db.sql);
    assert.equal(late.id, direction === "desc" ? "3" : "1");
    for (let i = 0; i < (direction === "desc" ? 1 : 3); i++) await insertOrder(db.sql, ORDER);
    const before = await committedIds(db.sql);

    const seen = await pageThrough(
      db.sql,
      { direction, limit: direction === "desc" ? 2 : 1 },
      late.commit,
    );

    assertListing(seen, before, direction);
    const fresh = await pageThrough(db.sql, { direction, limit: 2 }, async () => {});
    assert.deepEqual(new Set(fresh), new Set(await committedIds(db.sql)), "a new listing shows it");
    assert.ok(fresh.includes(late.id));
  });
}
