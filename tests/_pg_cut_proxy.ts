/**
 * A loopback proxy in front of PostgreSQL for tests of the trading path under
 * database faults: it reads the client's protocol messages and cuts the
 * connection at a chosen statement, so that the client cannot know the
 * statement's outcome:
 *
 * - `after`: the statement is forwarded, PostgreSQL runs it (and, for an
 *   autocommit statement or a COMMIT, commits it); the proxy swallows the
 *   answer and, once PostgreSQL said ReadyForQuery for it, closes the
 *   connection. The client sees a connection error for a statement that
 *   took effect.
 * - `before`: the chunk holding the statement is dropped and the connection
 *   closed: the statement never reached PostgreSQL.
 *
 * `cut()` / `restore()` drop every connection and refuse new ones (the
 * database is down) as `_tcp_proxy.ts` does.
 *
 * @module
 */

/** When to cut: a statement whose text `match` accepts; `times` statements, then disarmed. */
export interface StatementFault {
  match: (query: string) => boolean;
  mode: "before" | "after";
  /** How many statements to cut this way. @default {1} */
  times?: number;
}

/** A running proxy. */
export interface PgFaultProxy extends AsyncDisposable {
  readonly port: number;
  /** `postgres://postgres@127.0.0.1:<port>/<db>` for `database`. */
  urlFor(database: string): string;
  /** Arms a fault; resolves when it fired `times` times. */
  arm(fault: StatementFault): Promise<void>;
  /** Disarms a fault not fired yet. */
  disarm(): void;
  /** Statements cut so far, with their text. */
  readonly fired: string[];
  /** Drops every connection and refuses new ones. */
  cut(): void;
  /** Lets connections through again. */
  restore(): void;
  close(): Promise<void>;
}

const decoder = new TextDecoder();

function cstring(bytes: Uint8Array, offset: number): [string, number] {
  let end = offset;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return [decoder.decode(bytes.subarray(offset, end)), end + 1];
}

function int32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset + offset, 4).getInt32(0);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Starts a proxy forwarding to PostgreSQL at 127.0.0.1:`upstreamPort`. */
export function startPgFaultProxy(upstreamPort = 5432): PgFaultProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<{ close(): void }>();
  const fired: string[] = [];
  let fault: (StatementFault & { left: number; done: () => void }) | null = null;
  let isCut = false;
  const tasks = new Set<Promise<void>>();

  const serve = async (client: Deno.Conn) => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    } catch {
      client.close();
      return;
    }
    let closed = false;
    const handle = {
      close() {
        if (closed) return;
        closed = true;
        try {
          client.close();
        } catch { /* closed */ }
        try {
          upstream.close();
        } catch { /* closed */ }
        conns.delete(handle);
      },
    };
    conns.add(handle);
    // Client → server state.
    const statements = new Map<string, string>();
    let startupDone = false;
    let pending: Uint8Array = new Uint8Array(0);
    let syncs = 0; // Sync and Query messages forwarded (each gets one ReadyForQuery)
    // Set once a statement is cut `after`: swallow answers, close at ReadyForQuery number `target`.
    let swallowing = false;
    let armedForSync = false;
    let target = Infinity;
    // The ReadyForQuery after authentication answers no Sync of the client.
    let readies = -1;
    let spending: Uint8Array = new Uint8Array(0);

    /** Looks at the client's messages in `chunk`; returns "drop" to cut before, else forwards. */
    const inspect = (chunk: Uint8Array): "forward" | "drop" => {
      pending = concat(pending, chunk);
      let offset = 0;
      let verdict: "forward" | "drop" = "forward";
      for (;;) {
        if (!startupDone) {
          if (pending.length - offset < 4) break;
          const length = int32(pending, offset);
          if (pending.length - offset < length) break;
          offset += length;
          startupDone = true;
          continue;
        }
        if (pending.length - offset < 5) break;
        const type = String.fromCharCode(pending[offset]!);
        const length = int32(pending, offset + 1);
        if (pending.length - offset < 1 + length) break;
        const body = pending.subarray(offset + 5, offset + 1 + length);
        offset += 1 + length;
        let query: string | null = null;
        if (type === "P") {
          const [name, next] = cstring(body, 0);
          const [text] = cstring(body, next);
          statements.set(name, text);
        } else if (type === "B") {
          const [, next] = cstring(body, 0);
          const [name] = cstring(body, next);
          query = statements.get(name) ?? null;
        } else if (type === "Q") {
          [query] = cstring(body, 0);
          syncs++;
        } else if (type === "S") {
          syncs++;
          if (armedForSync) {
            armedForSync = false;
            target = syncs;
          }
        }
        if (query !== null && fault !== null && !swallowing && fault.match(query)) {
          fired.push(query);
          const f = fault;
          if (--f.left <= 0) {
            fault = null;
            queueMicrotask(f.done);
          }
          if (f.mode === "before") {
            verdict = "drop";
          } else {
            swallowing = true;
            if (type === "Q") target = syncs;
            else armedForSync = true;
          }
        }
      }
      pending = pending.slice(offset);
      return verdict;
    };

    /** Server → client: true to forward; closes the pair after the cut statement's ReadyForQuery. */
    const onServer = (chunk: Uint8Array): boolean => {
      // ReadyForQuery messages are counted even while forwarding, to know which one ends the cut.
      spending = concat(spending, chunk);
      let offset = 0;
      for (;;) {
        if (spending.length - offset < 5) break;
        const type = String.fromCharCode(spending[offset]!);
        const length = int32(spending, offset + 1);
        if (spending.length - offset < 1 + length) break;
        offset += 1 + length;
        if (type === "Z") readies++;
      }
      spending = spending.slice(offset);
      if (swallowing && readies >= target) handle.close();
      return !swallowing;
    };

    const c2s = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await client.read(buffer);
          if (n === null) break;
          const chunk = buffer.slice(0, n);
          if (inspect(chunk) === "drop") {
            handle.close();
            break;
          }
          let o = 0;
          while (o < n) o += await upstream.write(chunk.subarray(o));
        }
      } catch { /* closed */ }
      handle.close();
    })();
    const s2c = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await upstream.read(buffer);
          if (n === null) break;
          const chunk = buffer.slice(0, n);
          if (!onServer(chunk)) continue;
          let o = 0;
          while (o < n) o += await client.write(chunk.subarray(o));
        }
      } catch { /* closed */ }
      handle.close();
    })();
    await Promise.all([c2s, s2c]);
  };

  const acceptLoop = (async () => {
    try {
      for await (const conn of listener) {
        if (isCut) {
          try {
            conn.close();
          } catch { /* closed */ }
          continue;
        }
        const task = serve(conn);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch { /* listener closed */ }
  })();

  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      isCut = true;
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of [...conns]) c.close();
      await acceptLoop;
      while (tasks.size > 0) await Promise.allSettled([...tasks]);
    })();

  return {
    port,
    urlFor: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    arm(f) {
      return new Promise<void>((resolve) => {
        fault = { ...f, left: f.times ?? 1, done: resolve };
      });
    },
    disarm() {
      fault = null;
    },
    fired,
    cut() {
      isCut = true;
      for (const c of [...conns]) c.close();
    },
    restore() {
      isCut = false;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
