import assert from "node:assert/strict";
import postgres from "postgres";
import {
  INSTANCE_LOCK_NAME,
  instanceLockActor,
  InstanceLockError,
} from "../actors/instance_lock.ts";
import { memoryLogger, nullLogger } from "../lib/log.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";
import { freshDatabase, startEngineProcess, waitForJson } from "./_engine_process.ts";

const KEY = 727376;

async function scratch() {
  const db = await freshDatabase();
  const admin = postgres(db.url, { max: 1, onnotice: () => {} });
  return {
    url: db.url,
    admin,
    /** Ends the backends holding the lock on `application`'s connections, as a restart would. */
    async cutLockConnections(): Promise<number> {
      const rows = await admin`
        select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and application_name like '%instance lock'`;
      return rows.length;
    },
    async [Symbol.asyncDispose]() {
      await admin.end();
      await db.drop();
    },
  };
}

Deno.test("a second engine's instance lock waits, then fails naming the holder; it is taken once released", async () => {
  await using db = await scratch();
  const first = new AbortController();
  const a = instanceLockActor({ postgres: { url: db.url }, key: KEY, log: nullLogger })
    .start(first.signal);
  await deadline(a.ready, 10_000, "first lock taken");

  const second = new AbortController();
  const b = instanceLockActor({ postgres: { url: db.url }, key: KEY, waitMs: 300 })
    .start(second.signal);
  const error = await b.ready.then(() => null, (e) => e);
  assert.ok(error instanceof InstanceLockError, String(error));
  assert.match(error.message, /Another engine holds this database's instance lock/);
  assert.match(error.holder ?? "", /application "tradewire instance lock"/);

  first.abort();
  await deadline(a.done, 10_000, "first lock released");
  const third = new AbortController();
  const c = instanceLockActor({ postgres: { url: db.url }, key: KEY, waitMs: 5_000 })
    .start(third.signal);
  await deadline(c.ready, 10_000, "lock taken after its release");
  third.abort();
  await deadline(c.done, 10_000, "third lock released");
});

Deno.test("a start waits for a lock that is released within its wait", async () => {
  await using db = await scratch();
  const holding = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    await holding`select pg_advisory_lock(${KEY})`;
    const stop = new AbortController();
    const { log, lines } = memoryLogger();
    const lock = instanceLockActor({ postgres: { url: db.url }, key: KEY, log, waitMs: 10_000 })
      .start(stop.signal);
    await waitFor(
      () =>
        lines.some((l) => l.message === "another engine holds the instance lock; waiting for it"),
      5_000,
      "the wait logged",
    );
    assert.equal(await isSettled(lock.ready), false);
    await holding`select pg_advisory_unlock(${KEY})`;
    await deadline(lock.ready, 5_000, "lock taken once released");
    stop.abort();
    await deadline(lock.done, 10_000, "lock released");
  } finally {
    await holding.end();
  }
});

Deno.test("a lock lost with its connection is taken again when no other engine took it", async () => {
  await using db = await scratch();
  const stop = new AbortController();
  const { log, lines } = memoryLogger();
  const lock = instanceLockActor({ postgres: { url: db.url }, key: KEY, log, checkMs: 50 })
    .start(stop.signal);
  await deadline(lock.ready, 10_000, "lock taken");
  assert.equal(await db.cutLockConnections(), 1);
  await waitFor(
    () =>
      lines.some((l) => l.message === "instance lock taken again after its connection was lost"),
    10_000,
    "lock taken again",
  );
  assert.equal(await isSettled(lock.done), false);
  const [row] = await db.admin`
    select count(*)::int as n from pg_locks
    where locktype = 'advisory' and objid = ${KEY}::oid and granted`;
  assert.equal(row?.n, 1);
  stop.abort();
  await deadline(lock.done, 10_000, "lock released");
});

Deno.test("a lock lost with its connection and taken by another engine fails the child", async () => {
  await using db = await scratch();
  const stop = new AbortController();
  const lock = instanceLockActor({
    postgres: { url: db.url },
    key: KEY,
    log: nullLogger,
    checkMs: 200,
  }).start(stop.signal);
  await deadline(lock.ready, 10_000, "lock taken");
  const other = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    assert.equal(await db.cutLockConnections(), 1);
    const [taken] = await other`select pg_try_advisory_lock(${KEY}) as locked`;
    assert.equal(taken?.locked, true);
    const error = await deadline(lock.done.then(() => null, (e) => e), 10_000, "child failed");
    assert.ok(error instanceof InstanceLockError, String(error));
    assert.match(error.message, /another engine holds it now/);
  } finally {
    stop.abort();
    await other.end();
  }
});

Deno.test("the instance lock child is named for the supervision tree", () => {
  const spec = instanceLockActor({ postgres: { url: "postgres://x@127.0.0.1/x" }, key: KEY });
  assert.equal(spec.name, INSTANCE_LOCK_NAME);
  assert.throws(
    () => instanceLockActor({ postgres: { url: "postgres://x@127.0.0.1/x" }, key: 0.5 }),
    RangeError,
  );
});

Deno.test("a second engine on the same database exits 1 naming the first, which goes on serving", async () => {
  const db = await freshDatabase();
  try {
    await using first = await startEngineProcess({}, [], { databaseUrl: db.url });
    await waitForJson(first, "/api/health/detailed", (body) => body.status === "ok", 60_000);
    await using second = await startEngineProcess({}, [], { databaseUrl: db.url });
    const { code } = await deadline(second.status, 60_000, "the second engine to end");
    assert.equal(code, 1, second.stderr());
    assert.match(
      JSON.stringify(second.lines),
      /Another engine holds this database's instance lock/,
    );
    assert.ok(!second.lines.some((l) => l.message === "HTTP listening"));
    const health = await first.get("/api/health/detailed");
    assert.equal(health.status, 200);
    await health.body?.cancel();
    assert.equal(await first.kill("SIGTERM"), 0);
  } finally {
    await db.drop();
  }
});
