/**
 * CPU time of processes and threads, read from Linux's `/proc`, for the
 * benchmarks that print what each part of the system used.
 *
 * @module
 */

import type { Sql } from "postgres";

/**
 * CPU seconds used so far by the process (all threads) or thread whose `stat`
 * file this is; with `reaped`, also by the children it has waited for.
 */
export function ticks(path: string, reaped = false): number {
  // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th,
  // cutime and cstime (the children waited for) the 14th and 15th.
  const fields = Deno.readTextFileSync(path).split(") ")[1]!.split(" ");
  const own = Number(fields[11]) + Number(fields[12]);
  return (reaped ? own + Number(fields[13]) + Number(fields[14]) : own) / 100;
}

/** The ids of the running processes whose command name starts with `name`. */
export function pidsNamed(name: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/comm`).startsWith(name)) {
        pids.push(Number(entry.name));
      }
    } catch { /* gone meanwhile */ }
  }
  return pids;
}

/**
 * CPU seconds used so far by the processes named `name`: those running and
 * the children they have waited for. A server that forks a process per
 * connection (PostgreSQL) thus counts a backend that ended between two
 * readings, which its parent has reaped; counting only the running ones made
 * the difference negative when one ended.
 */
export function ticksNamed(name: string): number {
  let seconds = 0;
  for (const pid of pidsNamed(name)) {
    try {
      seconds += ticks(`/proc/${pid}/stat`, true);
    } catch { /* gone meanwhile */ }
  }
  return seconds;
}

/** CPU seconds used so far by each running backend of one PostgreSQL database, by process id. */
export type BackendSeconds = Map<number, number>;

/**
 * CPU seconds used so far by each backend serving the database `sql` is
 * connected to (`pg_stat_activity`, this connection's included): the
 * database's own work, not other databases' or clients' on the same server.
 */
export async function backendSeconds(sql: Sql): Promise<BackendSeconds> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = current_database()`;
  const seconds: BackendSeconds = new Map();
  for (const { pid } of rows) {
    try {
      seconds.set(pid, ticks(`/proc/${pid}/stat`));
    } catch { /* ended meanwhile */ }
  }
  return seconds;
}

/**
 * CPU seconds the backends used between two {@linkcode backendSeconds}
 * readings: those at both, the difference; those started in between, all of
 * theirs. `ended` counts backends at the first reading gone by the second,
 * whose CPU since then is unknown (not counted): the figure is a lower bound
 * unless it is 0.
 */
export function backendSecondsBetween(
  start: BackendSeconds,
  end: BackendSeconds,
): { seconds: number; ended: number } {
  let seconds = 0;
  for (const [pid, used] of end) seconds += used - (start.get(pid) ?? 0);
  let ended = 0;
  for (const pid of start.keys()) if (!end.has(pid)) ended++;
  return { seconds, ended };
}
