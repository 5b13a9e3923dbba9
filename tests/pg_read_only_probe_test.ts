/**
 * PostgreSQL refusing work for now — read-only (a standby, a database set
 * `default_transaction_read_only`), out of disk or memory: how its errors are
 * classified (`isTemporaryRefusal`: retry as an outage, nothing written), how
 * `probePostgres` sees a read-only server on a scratch database, and how
 * health words a service that answers but cannot work.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import {
  createPostgres,
  databaseErrorKind,
  isTemporaryRefusal,
  probePostgres,
} from "../adapters/postgres.ts";
import { detailedHealth, type HealthSource, UnusableServiceError } from "../api/health.ts";
import { DbConnectionError, mapDbError, mayHaveCommitted } from "../db/errors.ts";
import { ADMIN_URL } from "./_postgres.ts";

function withCode(code: string): Error {
  return Object.assign(new Error(`code ${code}`), { code });
}

Deno.test("isTemporaryRefusal: read-only, out of disk or memory; not a lost connection or a statement's own error", () => {
  for (const code of ["25006", "53000", "53100", "53200"]) {
    assert.equal(isTemporaryRefusal(withCode(code)), true, code);
    // Waited for as an outage (a connection error), but never taken as maybe committed.
    assert.equal(databaseErrorKind(withCode(code)), "connection", code);
    assert.ok(mapDbError(withCode(code)) instanceof DbConnectionError, code);
    assert.equal(mayHaveCommitted(mapDbError(withCode(code))), false, code);
  }
  assert.equal(isTemporaryRefusal(new Error("wrapped", { cause: withCode("25006") })), true);
  assert.equal(isTemporaryRefusal(new AggregateError([withCode("53100")])), true);
  // too_many_connections is a connection code; a configuration limit is the statement's.
  for (const code of ["53300", "53400", "57P01", "08006", "23505", "22P02", "40001", "25P02"]) {
    assert.equal(isTemporaryRefusal(withCode(code)), false, code);
  }
  assert.equal(isTemporaryRefusal("25006"), false);
  assert.equal(isTemporaryRefusal(null), false);
});

Deno.test("probePostgres says whether PostgreSQL takes writes; a write on a read-only database is a temporary refusal", async () => {
  const name = `tw_test_ro_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(name)}`;
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  try {
    {
      await using pool = pooled(url.toString());
      const probe = await probePostgres(pool.sql);
      assert.equal(probe.read_only, null);
      assert.ok(probe.latency_ms >= 0);
    }
    await admin.unsafe(`alter database ${name} set default_transaction_read_only = on`);
    {
      // New sessions are read-only.
      await using pool = pooled(url.toString());
      assert.equal((await probePostgres(pool.sql)).read_only, "transaction_read_only is on");
      const refused = await pool.sql`create table t (x int)`.then(() => null, (e) => e);
      assert.equal(refused?.code, "25006");
      assert.equal(isTemporaryRefusal(refused), true);
      assert.equal(mayHaveCommitted(mapDbError(refused)), false);
    }
  } finally {
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
    await admin`drop database if exists ${admin(name)}`;
    await admin.end();
  }
});

function pooled(url: string) {
  const sql = createPostgres({ url, pool_size: 1, sslmode: "disable" });
  return { sql, [Symbol.asyncDispose]: () => sql.end({ timeout: 5 }) };
}

function source(postgresProbe: () => Promise<number>): HealthSource {
  return {
    version: "test",
    startedAt: Date.now(),
    probes: {
      postgres: postgresProbe,
      nats: () => Promise.resolve(0.1),
      clickhouse: () => Promise.resolve(0.1),
    },
    actors: () => [],
  };
}

Deno.test("health: a service that answers but cannot work (UnusableServiceError) is down and named for what it is", async () => {
  const readOnly = await detailedHealth(
    source(() => Promise.reject(new UnusableServiceError("read-only (in recovery)"))),
  );
  assert.equal(readOnly.status, "down");
  assert.deepEqual(readOnly.components.postgres, {
    status: "down",
    latency_ms: null,
    error: "read-only (in recovery)",
  });
  assert.deepEqual(readOnly.problems, ["postgres is read-only (in recovery)"]);
  const unreachable = await detailedHealth(
    source(() => Promise.reject(new Error("connect ECONNREFUSED"))),
  );
  assert.equal(unreachable.status, "down");
  assert.deepEqual(unreachable.problems, ["postgres is down: connect ECONNREFUSED"]);
});
