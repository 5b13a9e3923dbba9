/**
 * A loopback TCP proxy for tests that need a server to go away and come back
 * (ClickHouse down, then up) without touching the shared server: point the
 * client at the proxy, {@linkcode TcpProxy.cut} to drop every connection and
 * refuse new ones, {@linkcode TcpProxy.restore} to let traffic through again.
 *
 * @example
 * ```ts
 * await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: 8123 });
 * const client = createClickHouse({ url: proxy.url });
 * proxy.cut();     // requests now fail as if the server were gone
 * proxy.restore(); // and work again
 * proxy.stall();   // requests now go unanswered, connections open: a network partition
 * proxy.restore();
 * ```
 *
 * @module
 */

/** Where the proxy forwards to. */
export interface ProxyUpstream {
  /** Upstream host. */
  hostname: string;
  /** Upstream port. */
  port: number;
}

/** A running proxy. */
export interface TcpProxy {
  /** The loopback port it listens on. */
  readonly port: number;
  /** `http://127.0.0.1:<port>`, for HTTP clients. */
  readonly url: string;
  /** Whether it is cut. */
  readonly isCut: boolean;
  /** Connections accepted (and dropped while cut) so far. */
  readonly accepted: number;
  /** Connections open right now. */
  readonly open: number;
  /** Drops every open connection; new ones are closed as soon as they are accepted. */
  cut(): void;
  /**
   * Forwards nothing more either way and answers nothing, keeping every
   * connection open and accepting new ones: a network partition, or a server
   * that froze, as the client sees it. What is sent meanwhile is dropped.
   */
  stall(): void;
  /** Forwards new connections again; the connections open while stalled are closed. */
  restore(): void;
  /** Closes the listener and every connection, and waits for them to finish. */
  close(): Promise<void>;
  /** Same as `close`. */
  [Symbol.asyncDispose](): Promise<void>;
}

interface Pair {
  client: Deno.Conn;
  upstream: Deno.Conn | null;
  closed: boolean;
  /** Bytes of it were dropped while the proxy stalled. */
  stalled: boolean;
}

function closeQuietly(conn: Deno.Conn | null): void {
  try {
    conn?.close();
  } catch {
    // Already closed.
  }
}

async function pump(
  from: Deno.Conn,
  to: Deno.Conn | null,
  dropping: () => boolean,
): Promise<"eof" | "error"> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) {
        await to?.closeWrite().catch(() => {});
        return "eof";
      }
      if (to === null || dropping()) continue;
      let offset = 0;
      while (offset < n) offset += await to.write(buffer.subarray(offset, n));
    }
  } catch {
    return "error";
  }
}

/** Starts a proxy on a free loopback port forwarding to `upstream`. */
export function startTcpProxy(upstream: ProxyUpstream): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const pairs = new Set<Pair>();
  const tasks = new Set<Promise<void>>();
  let isCut = false;
  let isStalled = false;
  let accepted = 0;
  let closing = false;

  const closePair = (pair: Pair) => {
    if (pair.closed) return;
    pair.closed = true;
    closeQuietly(pair.client);
    closeQuietly(pair.upstream);
    pairs.delete(pair);
  };

  const serve = async (client: Deno.Conn) => {
    const pair: Pair = { client, upstream: null, closed: false, stalled: isStalled };
    pairs.add(pair);
    if (isStalled) {
      // Accepted, never answered: read and dropped until the client gives up or restore().
      await pump(client, null, () => true);
      closePair(pair);
      return;
    }
    try {
      pair.upstream = await Deno.connect({ hostname: upstream.hostname, port: upstream.port });
    } catch {
      closePair(pair);
      return;
    }
    if (pair.closed) {
      closeQuietly(pair.upstream);
      return;
    }
    const dropping = () => {
      if (isStalled) pair.stalled = true;
      return isStalled;
    };
    const results = await Promise.all([
      pump(client, pair.upstream, dropping).then((result) => {
        if (result === "error") closePair(pair);
      }),
      // When the server closes (an HTTP server ending an idle keep-alive connection), the
      // whole pair closes, as a direct connection would: a client that kept a half-closed
      // socket would send its next request into a connection nobody answers any more.
      pump(pair.upstream, client, dropping).then(() => closePair(pair)),
    ]);
    void results;
    closePair(pair);
  };

  const track = (task: Promise<void>) => {
    tasks.add(task);
    task.finally(() => tasks.delete(task));
  };

  const acceptLoop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        if (isCut || closing) {
          closeQuietly(conn);
          continue;
        }
        track(serve(conn));
      }
    } catch {
      // The listener was closed.
    }
  })();

  const cut = () => {
    isCut = true;
    for (const pair of [...pairs]) closePair(pair);
  };

  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      closing = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      cut();
      await acceptLoop;
      while (tasks.size > 0) await Promise.allSettled([...tasks]);
    })();

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get isCut() {
      return isCut;
    },
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    cut,
    stall: () => {
      isStalled = true;
      for (const pair of pairs) pair.stalled = true;
    },
    restore: () => {
      isCut = false;
      isStalled = false;
      for (const pair of [...pairs]) if (pair.stalled) closePair(pair);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
