/**
 * CPU time of processes and threads, read from Linux's `/proc`, for the
 * benchmarks that print what each part of the system used.
 *
 * @module
 */

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
