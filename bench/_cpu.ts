/**
 * CPU time of processes and threads, read from Linux's `/proc`, for the
 * benchmarks that print what each part of the system used.
 *
 * @module
 */

/** CPU seconds used so far by the process (all threads) or thread whose `stat` file this is. */
export function ticks(path: string): number {
  // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
  const fields = Deno.readTextFileSync(path).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
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

/** CPU seconds used so far by every running process named `name` (0 for one that just ended). */
export function ticksNamed(name: string): number {
  let seconds = 0;
  for (const pid of pidsNamed(name)) {
    try {
      seconds += ticks(`/proc/${pid}/stat`);
    } catch { /* gone meanwhile */ }
  }
  return seconds;
}
