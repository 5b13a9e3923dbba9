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

/** A name for a scratch database: `tw_test_` and 16 random hex digits. */
export function scratchName(): string {
  return `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
}

/** The URL of database `name` on the local server ({@linkcode ADMIN_URL} with its path). */
export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops database `name` if it exists, after ending its connections. */
export async function dropDatabase(name: string): Promise<void> {
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await admin`select pg_terminate_backend(pid) from pg_stat_activity
      where datname = ${name} and pid <> pg_backend_pid()`;
    await admin`drop database if exists ${admin(name)}`;
  } finally {
    await admin.end();
  }
}

/** An empty database of the local server, dropped on dispose or by `drop()`. */
export interface ScratchDatabase extends AsyncDisposable {
  /** Its name, `tw_test_<random>`. */
  name: string;
  /** Its URL. */
  url: string;
  /** Drops it (its connections ended first). */
  drop(): Promise<void>;
}

/** Creates an empty `tw_test_<random>` database. */
export async function scratchDatabase(): Promise<ScratchDatabase> {
  const name = scratchName();
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await admin`create database ${admin(name)}`;
  } finally {
    await admin.end();
  }
  const drop = () => dropDatabase(name);
  return { name, url: databaseUrl(name), drop, [Symbol.asyncDispose]: drop };
}

/** Creates `tw_test_<random>`, applies every PostgreSQL migration and opens a pool of `poolSize`. */
export async function migratedDatabase(poolSize = 4): Promise<MigratedDatabase> {
  const db = await scratchDatabase();
  const sql = createPostgres({ url: db.url, pool_size: poolSize, sslmode: "disable" });
  const migrator = new Migrator(sql, { dir: MIGRATIONS, clickhouse: null });
  const dispose = async () => {
    await sql.end({ timeout: 5 });
    await db.drop();
  };
  try {
    await migrator.up(undefined, { only: "postgres" });
  } catch (error) {
    await dispose();
    throw error;
  }
  return { sql, url: db.url, migrator, [Symbol.asyncDispose]: dispose };
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
