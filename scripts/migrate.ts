// deno-lint-ignore-file no-console -- a command-line tool prints its results
/**
 * Command line for schema migrations:
 *
 * ```sh
 * deno task migrate status [--only postgres|clickhouse] [config flags]
 * deno task migrate up [VERSION] [--only postgres|clickhouse] [config flags]
 * deno task migrate down VERSION|-1 --only postgres|clickhouse [config flags]
 * ```
 *
 * Config flags are those of the engine (`--config PATH`,
 * `--section.key=value`); environment variables apply as well. Exits 0 on
 * success, 1 on failure (including a database that cannot be reached, a
 * changed checksum, or pending/changed migrations reported by `status`), 2 on
 * a usage or configuration error.
 *
 * @module
 */

import type { ClickHouseClient } from "@clickhouse/client";
import type { ReservedSql, Sql } from "postgres";
import { loadConfig } from "../config/mod.ts";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { createPostgres, ensureDatabase } from "../adapters/postgres.ts";
import {
  type Engine,
  type EngineRun,
  type EngineStatus,
  MigrationError,
  Migrator,
} from "../adapters/migrator.ts";
import { INSTANCE_LOCK_KEY_OFFSET } from "../actors/instance_lock.ts";
import { createLogger } from "../lib/log.ts";
import { redactUrl } from "../lib/redact.ts";

/** The usage text printed for `--help` and usage errors. */
export const USAGE = `Usage: deno task migrate <command> [options] [config flags]

Commands:
  status            list applied and pending migrations of each database
  up [VERSION]      apply pending migrations (up to VERSION)
  down VERSION|-1   revert migrations above VERSION (-1: the newest one) of the
                    database named by --only (reverting ClickHouse's drops its
                    market data)

Options:
  --only postgres|clickhouse   act on one database only (default: both; down
                               needs it)
  -h, --help                   show this help

Config flags (as for the engine): --config PATH, --section.key=value`;

/** A parsed command line. */
export interface MigrateCommand {
  /** What to do. */
  command: "status" | "up" | "down" | "help";
  /** The VERSION argument, if given. */
  version?: number;
  /** `--only`. */
  only?: Engine;
  /** The arguments left for `loadConfig`. */
  configArgs: string[];
}

/** A usage mistake; the CLI prints it with {@linkcode USAGE} and exits 2. */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Splits the command line into the subcommand, its VERSION and `--only`, and
 * the config flags (passed on untouched, with the values they take).
 *
 * @example
 * ```ts
 * parseMigrateArgs(["down", "-1", "--only", "postgres", "--config", "prod.yaml"]);
 * // { command: "down", version: -1, only: "postgres", configArgs: ["--config", "prod.yaml"] }
 * ```
 */
export function parseMigrateArgs(argv: readonly string[]): MigrateCommand {
  const [command, ...rest] = argv;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    return { command: "help", configArgs: [] };
  }
  if (command !== "status" && command !== "up" && command !== "down") {
    throw new UsageError(`Unknown command "${command}"`);
  }
  const parsed: MigrateCommand = { command, configArgs: [] };
  const positionals: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? "";
    if (arg === "-h" || arg === "--help") return { command: "help", configArgs: [] };
    if (arg === "--only" || arg.startsWith("--only=")) {
      const value = arg === "--only" ? rest[++i] : arg.slice("--only=".length);
      if (value !== "postgres" && value !== "clickhouse") {
        throw new UsageError("--only takes postgres or clickhouse");
      }
      parsed.only = value;
    } else if (arg === "--print-config" || arg.startsWith("--print-config=")) {
      // The engine's flag: taken by the config loader, it would let the command run unasked.
      throw new UsageError(
        "--print-config is the engine's flag (deno task start --print-config prints the " +
          "configuration); migrate does not take it",
      );
    } else if (arg.startsWith("--")) {
      parsed.configArgs.push(arg);
      const name = arg.slice(2);
      const takesNext = !name.includes("=") && (name === "config" || name.includes("."));
      const next = rest[i + 1];
      if (takesNext && next !== undefined && !next.startsWith("--")) {
        parsed.configArgs.push(next);
        i++;
      }
    } else {
      positionals.push(arg);
    }
  }
  if (positionals.length > 1) throw new UsageError(`Unexpected argument "${positionals[1]}"`);
  const [version] = positionals;
  if (version !== undefined) {
    if (command === "status") throw new UsageError("status takes no VERSION");
    if (!/^(-1|\d+)$/.test(version) || (command === "up" && version === "-1")) {
      throw new UsageError(
        command === "up" ? "VERSION must be a number" : "VERSION must be a number or -1",
      );
    }
    parsed.version = Number(version);
  } else if (command === "down") {
    throw new UsageError("down needs a VERSION to go back to, or -1 for one step");
  }
  if (command === "down" && parsed.only === undefined) {
    // Each database has its own versions, and reverting ClickHouse's drops its market data.
    throw new UsageError(
      "down reverts one database at a time: add --only postgres or --only clickhouse " +
        "(reverting ClickHouse's migrations drops its market data)",
    );
  }
  return parsed;
}

function pad(rows: string[][]): string[] {
  const widths =
    rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length))) ?? [];
  return rows.map((row) =>
    "  " + row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd()
  );
}

/** The status of one database as a readable table. */
export function formatStatus(status: EngineStatus): string {
  const rows: string[][] = [["VERSION", "NAME", "STATE", "APPLIED AT", "MS"]];
  const entries = [
    ...status.applied.map((m) => ({
      version: m.version,
      cells: [
        m.name,
        m.file === null ? "applied (no file)" : m.checksumMismatch ? "CHANGED" : "applied",
        m.appliedAt.toISOString(),
        String(m.executionMs),
      ],
    })),
    ...status.pending.map((m) => ({ version: m.version, cells: [m.name, "pending", "", ""] })),
  ].sort((a, b) => a.version - b.version);
  if (entries.length === 0) return "  (no migrations)";
  for (const entry of entries) rows.push([String(entry.version).padStart(4, "0"), ...entry.cells]);
  return pad(rows).join("\n");
}

function formatRun(label: string, run: EngineRun): string {
  const rows = [
    ...run.applied.map((m) => ["applied", m, `${m.executionMs} ms`] as const),
    ...run.reverted.map((m) => ["reverted", m, `${m.executionMs} ms`] as const),
  ].map(([what, m, ms]) => [what, `${String(m.version).padStart(4, "0")}_${m.name}`, ms]);
  const body = rows.length === 0 ? "  nothing to do" : pad(rows).join("\n");
  return `${label} (${run.total} applied)\n${body}`;
}

function errorText(error: unknown): string {
  return redactUrl(error instanceof Error ? error.message : String(error));
}

/** Runs the CLI with `argv`; returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let command: MigrateCommand;
  try {
    command = parseMigrateArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (command.command === "help") {
    console.log(USAGE);
    return 0;
  }

  let config: Awaited<ReturnType<typeof loadConfig>>;
  try {
    config = await loadConfig({ args: command.configArgs });
  } catch (error) {
    console.error(errorText(error));
    return 2;
  }

  const engines: Engine[] = command.only ? [command.only] : ["postgres", "clickhouse"];
  const log = createLogger({ level: "warn", write: (line) => console.error(line) });
  let sql: Sql | null = null;
  let instance: ReservedSql | null = null;
  let clickhouse: ClickHouseClient | null = null;
  let failed = false;
  try {
    if (command.command === "up") {
      if (await ensureDatabase(config.postgres.url, config.postgres)) {
        console.log(`Created database ${new URL(config.postgres.url).pathname.slice(1)}`);
      }
    }
    // No answer deadline: a run waits for the migration lock with statement_timeout off.
    sql = createPostgres({ ...config.postgres, pool_size: 2, answer_deadline_ms: null }, log);
    if (engines.includes("clickhouse")) {
      clickhouse = createClickHouse(config.clickhouse, { database: "default", log });
    }
    const migrator = new Migrator(sql, {
      dir: config.migrations.dir,
      lockKey: config.migrations.lock_key,
      clickhouse: clickhouse ? { client: clickhouse, database: config.clickhouse.database } : null,
      log,
    });
    const where: Record<Engine, string> = {
      postgres: `PostgreSQL ${redactUrl(config.postgres.url)}`,
      clickhouse: `ClickHouse ${
        redactUrl(config.clickhouse.url)
      } database ${config.clickhouse.database}`,
    };
    if (command.command === "down") {
      // Reverting under a running engine would change the schema beneath it: hold the engine's
      // instance lock for the duration, or refuse.
      instance = await sql.reserve();
      const holder = await takeInstanceLock(instance, config.migrations.lock_key);
      if (holder !== null) {
        console.error(
          `An engine is running on this database (${holder}): stop it before reverting migrations`,
        );
        return 1;
      }
    }
    for (const engine of engines) {
      try {
        if (command.command === "status") {
          const status = (await migrator.status({ only: engine }))[engine];
          if (!status) continue;
          console.log(`${where[engine]}\n${formatStatus(status)}\n`);
          if (status.pending.length > 0 || status.applied.some((m) => m.checksumMismatch)) {
            failed = true;
          }
        } else {
          const run = command.command === "up"
            ? await migrator.up(command.version, { only: engine })
            : await migrator.down(command.version ?? -1, { only: engine });
          const result = run[engine];
          if (result) console.log(formatRun(where[engine], result) + "\n");
        }
      } catch (error) {
        failed = true;
        const kind = error instanceof MigrationError ? "" : "error: ";
        console.error(`${where[engine]}: ${kind}${errorText(error)}\n`);
        if (command.command !== "status") break;
      }
    }
  } catch (error) {
    failed = true;
    console.error(errorText(error));
  } finally {
    instance?.release(); // the lock goes with the session when the pool ends
    await sql?.end({ timeout: 5 });
    await clickhouse?.close();
  }
  return failed ? 1 : 0;
}

/**
 * Takes the engine's instance lock (`lock_key +`
 * {@linkcode INSTANCE_LOCK_KEY_OFFSET}) on `sql`'s session: null once taken,
 * else who holds it (the backend's pid, application and address).
 */
export async function takeInstanceLock(sql: ReservedSql, lockKey: number): Promise<string | null> {
  const key = BigInt(lockKey) + BigInt(INSTANCE_LOCK_KEY_OFFSET);
  const [taken] = await sql<Array<{ locked: boolean }>>`
    select pg_try_advisory_lock(${key.toString()}::bigint) as locked`;
  if (taken?.locked === true) return null;
  const [row] = await sql<Array<{ pid: number; application_name: string; addr: string | null }>>`
    select a.pid, a.application_name, host(a.client_addr) as addr
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1
      and l.classid = ${((key >> 32n) & 0xffffffffn).toString()}::oid
      and l.objid = ${(key & 0xffffffffn).toString()}::oid
      and l.database = (select oid from pg_database where datname = current_database())
    limit 1`;
  if (row === undefined) return "holder unknown";
  return `backend ${row.pid}, ${row.application_name || "no application name"}` +
    (row.addr === null ? "" : ` from ${row.addr}`);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
