/**
 * A fresh PostgreSQL database with every migration applied, for tests that
 * need the trading schema; dropped (connections terminated first) on dispose.
 *
 * @module
 */

import postgres from "postgres";
import type { Sql } from "postgres";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";

/** Admin URL of the local server (trust auth); `TW_TEST_POSTGRES_URL` overrides it. */
export const ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;

/** A migrated database and a pool on it. */
export interface MigratedDatabase extends AsyncDisposable {
  /** The pool (NUMERIC as strings, as the engine's). */
  sql: Sql;
  /** Its URL. */
  url: string;
  /** The migrator that applied the migrations (up/down tests use it). */
  migrator: Migrator;
}

/** Creates `tw_test_<random>`, applies every PostgreSQL migration and opens a pool of `poolSize`. */
export async function migratedDatabase(poolSize = 4): Promise<MigratedDatabase> {
  const name = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await admin`create database ${admin(name)}`;
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  const sql = createPostgres({ url: url.toString(), pool_size: poolSize, sslmode: "disable" });
  const migrator = new Migrator(sql, { dir: MIGRATIONS, clickhouse: null });
  const dispose = async () => {
    await sql.end({ timeout: 5 });
    const drop = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await drop`select pg_terminate_backend(pid) from pg_stat_activity
        where datname = ${name} and pid <> pg_backend_pid()`;
      await drop`drop database if exists ${drop(name)}`;
    } finally {
      await drop.end();
    }
  };
  try {
    await migrator.up(undefined, { only: "postgres" });
  } catch (error) {
    await dispose();
    throw error;
  }
  return { sql, url: url.toString(), migrator, [Symbol.asyncDispose]: dispose };
}

/**
 * Makes the database at `url` refuse writes — read-only, as a standby during
 * a failover (SQLSTATE 25006) — when `on`, or take them again, and ends its
 * backends so that its clients reconnect in the new mode; `admin` is a
 * connection to the server's admin database.
 */
export async function setReadOnly(admin: Sql, url: string, on: boolean): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  await admin.unsafe(
    on
      ? `alter database ${name} set default_transaction_read_only = on`
      : `alter database ${name} reset default_transaction_read_only`,
  );
  await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
}
