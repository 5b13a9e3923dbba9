import assert from "node:assert/strict";
import postgres from "postgres";
import {
  INSTANCE_LOCK_NAME,
  instanceLockActor,
  InstanceLockError,
} from "../actors/instance_lock.ts";
import { memoryLogger, nullLogger } from "../lib/log.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { DEFAULT_MD_CLEAN_STREAM } from "../market/md_stream.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { scratchDatabase } from "./_postgres.ts";

const KEY = 727376;

async function scratch() {
  const db = await scratchDatabase();
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

Deno.test("a second engine on the same database exits 1 naming the first, changing nothing of it", async () => {
  await using nats = await startNatsServer();
  const db = await scratchDatabase();
  const nc = await connect({ servers: nats.url });
  try {
    await using first = await startEngineProcess({ NATS_URL: nats.url }, [], {
      databaseUrl: db.url,
    });
    await waitForJson(first, "/api/health/detailed", (body) => body.status === "ok", 60_000);
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info(DEFAULT_MD_CLEAN_STREAM)).config;
    // The second engine has another market-data retention: refused by the lock, it must not
    // have applied it to the running engine's stream.
    await using second = await startEngineProcess(
      {
        NATS_URL: nats.url,
        TRADEWIRE_WRITER__STREAM_MAX_AGE_S: "600",
        TRADEWIRE_WRITER__STREAM_MAX_BYTES: String(1024 * 1024),
      },
      [],
      { databaseUrl: db.url },
    );
    const { code } = await deadline(second.status, 60_000, "the second engine to end");
    assert.equal(code, 1, second.stderr());
    assert.match(
      JSON.stringify(second.lines),
      /Another engine holds this database's instance lock/,
    );
    assert.ok(!second.lines.some((l) => l.message === "HTTP listening"));
    const after = (await jsm.streams.info(DEFAULT_MD_CLEAN_STREAM)).config;
    assert.deepEqual(
      { max_age: after.max_age, max_bytes: after.max_bytes },
      { max_age: before.max_age, max_bytes: before.max_bytes },
    );
    const health = await first.get("/api/health/detailed");
    assert.equal(health.status, 200);
    await health.body?.cancel();
    assert.equal(await first.kill("SIGTERM"), 0);
  } finally {
    await nc.close();
    await db.drop();
  }
});

/**
 * A loopback proxy to PostgreSQL that can drop its clients' sockets while
 * keeping the sockets to the server open: what PostgreSQL sees when the
 * network between the engine and it fails for longer than the client's TCP
 * timeouts (or a NAT/firewall resets the client side): the client's
 * connection is gone, the backend lives on until the server's keepalive
 * (2 h by default on Linux) notices.
 */
function orphaningProxy() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const pairs: Array<{ client: Deno.Conn; upstream: Deno.Conn; orphaned: boolean }> = [];
  const orphans: Deno.Conn[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, pair: { orphaned: boolean }) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null || pair.orphaned) return;
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
    } catch {
      // closed
    }
  };
  const accepting = (async () => {
    try {
      for await (const client of listener) {
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: 5432 });
        const pair = { client, upstream, orphaned: false };
        pairs.push(pair);
        pump(client, upstream, pair).then(() => {
          if (!pair.orphaned) {
            try {
              upstream.close();
            } catch { /* closed */ }
          }
        });
        pump(upstream, client, pair).then(() => {
          if (!pair.orphaned) {
            try {
              client.close();
            } catch { /* closed */ }
          }
        });
      }
    } catch {
      // listener closed
    }
  })();
  return {
    port,
    /** Closes every client socket; the server's sockets stay open (and silent). */
    dropClients() {
      for (const pair of pairs.splice(0)) {
        pair.orphaned = true;
        orphans.push(pair.upstream);
        try {
          pair.client.close();
        } catch { /* closed */ }
      }
    },
    async close() {
      listener.close();
      for (const pair of pairs) {
        try {
          pair.client.close();
        } catch { /* closed */ }
        try {
          pair.upstream.close();
        } catch { /* closed */ }
      }
      for (const orphan of orphans) {
        try {
          orphan.close();
        } catch { /* closed */ }
      }
      await accepting;
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };
}

Deno.test("a lock whose connection broke on the engine's side only is taken back from its orphaned backend", async () => {
  await using db = await scratch();
  await using proxy = orphaningProxy();
  const stop = new AbortController();
  const { log, lines } = memoryLogger();
  const url = new URL(db.url);
  url.port = String(proxy.port);
  const lock = instanceLockActor({
    postgres: { url: url.toString(), sslmode: "disable" },
    key: KEY,
    log,
    checkMs: 100,
  }).start(stop.signal);
  try {
    await deadline(lock.ready, 10_000, "lock taken");
    const [before] = await db.admin`
      select l.pid from pg_locks l
      where l.locktype = 'advisory' and l.objid = ${KEY}::oid and l.granted`;
    // The network drops the engine's side of the lock connection; PostgreSQL keeps the backend
    // (and the lock) until its keepalive notices — hours. No other engine exists.
    proxy.dropClients();
    await waitFor(
      () =>
        lines.some((l) => l.message === "instance lock taken again after its connection was lost"),
      10_000,
      "the lock taken back",
    );
    const [after] = await db.admin`
      select l.pid from pg_locks l
      where l.locktype = 'advisory' and l.objid = ${KEY}::oid and l.granted`;
    assert.notEqual(after?.pid, before?.pid, "held by the new connection, not the orphan");
    assert.equal(await isSettled(lock.done), false, "the child goes on");
  } finally {
    stop.abort();
    await deadline(lock.done.catch(() => {}), 10_000, "lock child ended");
  }
});
