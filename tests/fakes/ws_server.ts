/**
 * A loopback WebSocket server for feed tests, to build venue fakes on.
 *
 * WebSockets are served by `Deno.serve` + `Deno.upgradeWebSocket`; in front
 * of it sits a small TCP relay on the public port, so a test can also cut a
 * connection the way a network does (no close frame) and refuse new
 * connections. Plain HTTP requests (REST endpoints such as Binance's
 * `GET /api/v3/depth`) go to the `http` hook.
 *
 * @example
 * ```ts
 * import { startWsServer } from "./ws_server.ts";
 *
 * await using server = await startWsServer({
 *   onOpen: (socket) => socket.send('{"hello":1}'),
 *   onMessage: (socket, text) => socket.send(text), // echo
 *   http: (request) => new URL(request.url).pathname === "/api/v3/depth"
 *     ? Response.json({ lastUpdateId: 1, bids: [], asks: [] })
 *     : undefined,
 * });
 * server.url; // "ws://127.0.0.1:<port>"
 * server.sockets[0]?.drop(); // cut the first connection without a close frame
 * server.refuse(); // new connections fail until server.accept()
 * ```
 *
 * @module
 */

/** What a connection hook receives: the server's side of one WebSocket. */
export interface FakeSocket {
  /** 1 for the first connection the server accepted, then 2, 3… */
  readonly id: number;
  /** The path and query the client asked for, e.g. `/stream?streams=btcusdt@trade`. */
  readonly path: string;
  /** Text frames received from the client, in order. */
  readonly received: string[];
  /** Whether the socket is open (not closing, not closed, not dropped). */
  readonly open: boolean;
  /** Resolves once the connection is gone, whichever way it ended. */
  readonly closed: Promise<void>;
  /** The close code and reason the server saw, once closed (code 1005 without a close frame status, 1006 when cut). */
  readonly closeInfo: { code: number; reason: string } | null;
  /** Sends a text (string) or binary (bytes) frame; ignored once the socket is not open. */
  send(data: string | Uint8Array): void;
  /** Closes cleanly: sends a close frame with `code` and `reason`. */
  close(code?: number, reason?: string): void;
  /** Cuts the TCP connection without a close frame, as a network failure does. */
  drop(): void;
}

/** Hooks of a {@linkcode FakeWsServer}; they may be replaced while it runs. */
export interface WsServerHooks {
  /** A client connected (the WebSocket is open). */
  onOpen?: (socket: FakeSocket) => void;
  /** A text frame arrived (binary frames are decoded as UTF-8). */
  onMessage?: (socket: FakeSocket, text: string) => void;
  /** A connection ended. */
  onClose?: (socket: FakeSocket) => void;
  /**
   * Answers a plain HTTP request; returning `undefined` (or having no hook)
   * answers 404.
   */
  http?: (request: Request) => Response | undefined | Promise<Response | undefined>;
}

/** Options of {@linkcode startWsServer}. */
export interface WsServerOptions extends WsServerHooks {
  /** Port to listen on. @default {a free loopback port} */
  port?: number;
}

/**
 * How {@linkcode FakeWsServer.refuse} turns connections away: `"reset"`
 * accepts the TCP connection and closes it at once (the client's handshake
 * fails), a number answers the upgrade request with that HTTP status.
 */
export type RefuseMode = "reset" | number;

/** A running fake server. */
export interface FakeWsServer extends AsyncDisposable {
  /** Its port. */
  readonly port: number;
  /** `ws://127.0.0.1:<port>`. */
  readonly url: string;
  /** `http://127.0.0.1:<port>`, for REST requests. */
  readonly httpUrl: string;
  /** The hooks in use; assign to change them. */
  hooks: WsServerHooks;
  /** WebSocket connections accepted since the start. */
  readonly connections: number;
  /** Connection attempts turned away by {@linkcode FakeWsServer.refuse}. */
  readonly refused: number;
  /** HTTP requests answered by the `http` hook (404s included). */
  readonly httpRequests: number;
  /** Every accepted connection, oldest first. */
  readonly sockets: readonly FakeSocket[];
  /** The connections currently open. */
  openSockets(): FakeSocket[];
  /** The most recently accepted connection, if any. */
  readonly latest: FakeSocket | undefined;
  /** Sends `data` on every open connection. */
  broadcast(data: string | Uint8Array): void;
  /** Turns new connections away (see {@linkcode RefuseMode}) until {@linkcode FakeWsServer.accept}, or for `forMs` milliseconds when given. */
  refuse(mode?: RefuseMode, forMs?: number): void;
  /** Accepts connections again. */
  accept(): void;
  /** Closes every connection and the listeners; resolves when all is released. */
  stop(): Promise<void>;
}

const decoder = new TextDecoder();

/** A loopback TCP port that nothing listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}

/** One client connection through the relay. */
interface Relay {
  client: Deno.TcpConn;
  upstream: Deno.TcpConn | null;
  socket: Socket | null;
}

class Socket implements FakeSocket {
  readonly id: number;
  readonly path: string;
  readonly received: string[] = [];
  readonly closed: Promise<void>;
  closeInfo: { code: number; reason: string } | null = null;
  readonly #ws: WebSocket;
  readonly #relay: Relay | undefined;
  #resolveClosed!: () => void;
  #gone = false;

  constructor(id: number, path: string, ws: WebSocket, relay: Relay | undefined) {
    this.id = id;
    this.path = path;
    this.#ws = ws;
    this.#relay = relay;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  get open(): boolean {
    return !this.#gone && this.#ws.readyState === WebSocket.OPEN;
  }

  send(data: string | Uint8Array): void {
    if (this.open) this.#ws.send(data);
  }

  close(code = 1000, reason = ""): void {
    if (this.open) this.#ws.close(code, reason);
  }

  drop(): void {
    this.#gone = true;
    if (this.#relay) {
      closeQuietly(this.#relay.client);
      if (this.#relay.upstream) closeQuietly(this.#relay.upstream);
    }
  }

  ended(code: number, reason: string): void {
    this.#gone = true;
    this.closeInfo = { code, reason };
    this.#resolveClosed();
  }
}

/**
 * Starts a fake WebSocket server on a loopback port and resolves once it
 * accepts connections.
 */
export async function startWsServer(options: WsServerOptions = {}): Promise<FakeWsServer> {
  const { port: wantedPort, ...hooks } = options;
  const port = wantedPort ?? freePort();
  const state = {
    hooks: hooks as WsServerHooks,
    connections: 0,
    refused: 0,
    httpRequests: 0,
    refusing: null as RefuseMode | null,
    refuseTimer: undefined as ReturnType<typeof setTimeout> | undefined,
    stopping: false,
  };
  const sockets: Socket[] = [];
  const relays = new Map<number, Relay>();
  const relayDone = new Set<Promise<void>>();

  const backendAbort = new AbortController();
  let listening!: () => void;
  const listened = new Promise<void>((resolve) => listening = resolve);
  const backend = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: backendAbort.signal,
    onListen: () => listening(),
  }, async (request, info) => {
    const relay = relays.get(info.remoteAddr.port);
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      state.httpRequests++;
      const response = await state.hooks.http?.(request);
      return response ?? new Response("Not found", { status: 404 });
    }
    if (typeof state.refusing === "number") {
      state.refused++;
      return new Response("Refused", { status: state.refusing });
    }
    const { socket: ws, response } = Deno.upgradeWebSocket(request);
    ws.binaryType = "arraybuffer";
    const url = new URL(request.url);
    const socket = new Socket(++state.connections, url.pathname + url.search, ws, relay);
    if (relay) relay.socket = socket;
    sockets.push(socket);
    ws.onopen = () => state.hooks.onOpen?.(socket);
    ws.onmessage = (event) => {
      const text = typeof event.data === "string"
        ? event.data
        : decoder.decode(event.data as ArrayBuffer);
      socket.received.push(text);
      state.hooks.onMessage?.(socket, text);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      socket.ended(event.code, event.reason);
      state.hooks.onClose?.(socket);
    };
    return response;
  });
  await listened;
  const backendPort = backend.addr.port;

  const listener = Deno.listen({ hostname: "127.0.0.1", port });

  const pipe = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
    } catch {
      // One side was closed: the relay is over.
    }
  };

  const serveClient = async (client: Deno.TcpConn) => {
    if (state.refusing === "reset" || state.stopping) {
      state.refused++;
      closeQuietly(client);
      return;
    }
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: backendPort });
    } catch {
      closeQuietly(client);
      return;
    }
    const localPort = (upstream.localAddr as Deno.NetAddr).port;
    const relay: Relay = { client, upstream, socket: null };
    relays.set(localPort, relay);
    await Promise.all([pipe(client, upstream), pipe(upstream, client)].map((p) =>
      p.finally(() => {
        closeQuietly(client);
        closeQuietly(upstream);
      })
    ));
    relays.delete(localPort);
  };

  const acceptLoop = (async () => {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch {
        return; // The listener was closed.
      }
      const done = serveClient(client);
      relayDone.add(done);
      done.finally(() => relayDone.delete(done));
    }
  })();

  const clearRefuseTimer = () => {
    if (state.refuseTimer !== undefined) clearTimeout(state.refuseTimer);
    state.refuseTimer = undefined;
  };

  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      state.stopping = true;
      clearRefuseTimer();
      closeQuietly(listener);
      await acceptLoop;
      for (const relay of relays.values()) {
        closeQuietly(relay.client);
        if (relay.upstream) closeQuietly(relay.upstream);
      }
      await Promise.all([...relayDone]);
      await Promise.all(sockets.map((socket) => socket.closed));
      backendAbort.abort();
      await backend.finished;
    })();

  const server: FakeWsServer = {
    port,
    url: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    get hooks() {
      return state.hooks;
    },
    set hooks(value: WsServerHooks) {
      state.hooks = value;
    },
    get connections() {
      return state.connections;
    },
    get refused() {
      return state.refused;
    },
    get httpRequests() {
      return state.httpRequests;
    },
    sockets,
    openSockets: () => sockets.filter((socket) => socket.open),
    get latest() {
      return sockets.at(-1);
    },
    broadcast(data) {
      for (const socket of sockets) socket.send(data);
    },
    refuse(mode = "reset", forMs) {
      clearRefuseTimer();
      state.refusing = mode;
      if (forMs !== undefined) {
        state.refuseTimer = setTimeout(() => {
          state.refuseTimer = undefined;
          state.refusing = null;
        }, forMs);
      }
    },
    accept() {
      clearRefuseTimer();
      state.refusing = null;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
  return server;
}
