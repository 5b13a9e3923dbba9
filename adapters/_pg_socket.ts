/**
 * The sockets of the PostgreSQL pool ({@linkcode watchedSockets}): a TCP (or
 * Unix) connection that is dropped when PostgreSQL owes it an answer and has
 * sent nothing for `answer_deadline_ms`. PostgreSQL that stops answering
 * without closing the connection — a network partition, a frozen server or
 * disk — would else hold every statement sent to it until TCP gives up (a
 * quarter of an hour, or never while something on the way still
 * acknowledges). Dropped, the statement fails as a lost connection
 * (`ETIMEDOUT`): callers treat it as a write whose outcome is unknown, which
 * they already do for a connection that drops.
 *
 * The socket reads the protocol to know when an answer is owed: each `Sync`
 * or simple `Query` it sends (and the startup) owes one `ReadyForQuery`, and
 * a `Flush` owes whatever comes next.
 * While one is owed, every byte PostgreSQL sends restarts the wait — a long
 * result streaming in, or statements queued behind one another, each
 * answered within the server's `statement_timeout` — and once none is owed
 * the connection may stay silent for ever (idle, or listening). To read it
 * under TLS the socket speaks TLS itself: it asks for it (`SSLRequest`) as
 * postgres.js would, and hands postgres.js the plaintext. A server that
 * refuses TLS the connection requires (`N`) is a configuration error
 * ({@linkcode TLS_REFUSED_CODE}), as in libpq; postgres.js would start TLS
 * all the same and the server would hang up, an outage to every caller.
 *
 * A connection hung up on while it starts, before PostgreSQL said a word
 * (PostgreSQL, or a proxy before it, refusing connections for a moment), is
 * opened again until postgres.js's connect timeout, as postgres.js reconnects
 * its own sockets: its statements wait for PostgreSQL to take connections
 * again instead of failing while it already does.
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { Duplex } from "node:stream";

/** Code of the error a connection is dropped with: a lost connection to `mapDbError`. */
export const ANSWER_TIMEOUT_CODE = "ETIMEDOUT";

/** Code of the error of a server refusing TLS that the connection requires: not an outage. */
export const TLS_REFUSED_CODE = "SSL_NOT_SUPPORTED";

/** postgres.js's `ssl` values: off, TLS if the server offers it, TLS required (verified or not). */
export type PgSsl = false | "prefer" | "require" | "verify-full" | tls.ConnectionOptions;

/** Options of {@linkcode watchedSockets}. */
export interface WatchedSocketsOptions {
  /** Ms a connection owed an answer waits for a byte before it is dropped; null never drops one. */
  answerDeadlineMs: number | null;
  /** TLS as postgres.js's `ssl` option says (postgres.js itself is then given none). */
  ssl: PgSsl;
  /** The `sslmode` named when a server refuses TLS the connection requires. */
  sslmode: string;
}

/** What postgres.js hands its `socket` factory: the parsed hosts, ports and socket path. */
export interface PgSocketTarget {
  host: readonly string[];
  port: readonly number[];
  path?: string | false | undefined;
}

/** `SSLRequest`: length 8, code 80877103. */
const SSL_REQUEST = new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]);
/** The protocol version of a `StartupMessage` (3.0), which owes a `ReadyForQuery`. */
const PROTOCOL_3 = 196_608;
const SYNC = 0x53; // 'S'
const QUERY = 0x51; // 'Q'
const FLUSH = 0x48; // 'H'
const READY_FOR_QUERY = 0x5a; // 'Z'

/**
 * A postgres.js `socket` factory (for a single host or Unix socket: postgres.js
 * tries several hosts itself) whose connections are dropped after
 * `answerDeadlineMs` without a byte while an answer is owed, and speak TLS as
 * `ssl` says. Give postgres.js `ssl: false` with it.
 *
 * @example
 * ```ts
 * const socket = watchedSockets({ answerDeadlineMs: 35_000, ssl: "prefer", sslmode: "prefer" });
 * const sql = postgres(url, { socket, ssl: false });
 * ```
 */
export function watchedSockets(options: WatchedSocketsOptions): (target: PgSocketTarget) => Duplex {
  return (target) => {
    const path = target.path;
    if (path) return new WatchedSocket(() => net.connect(path), options, path);
    const host = target.host[0] ?? "localhost";
    const port = target.port[0] ?? 5432;
    return new WatchedSocket(() => net.connect(port, host), options, `${host}:${port}`, host, port);
  };
}

/** First wait before a start-up hung up on is tried again, ms; doubled each time. */
const REOPEN_INITIAL_MS = 25;
/** Longest wait between two tries of a start-up hung up on, ms. */
const REOPEN_MAX_MS = 1_000;
/** Errors of a connection its peer hung up on, as a close is: the start-up may be tried again. */
const HUNG_UP_CODES: ReadonlySet<string> = new Set(["ECONNRESET", "EPIPE"]);

/**
 * Counts the messages of one direction of the protocol across chunks:
 * calls `onMessage(type, code)` at each message's header — `type` the
 * message's type byte, or null for the untyped first message of a frontend
 * (`code` then its protocol version or request code).
 */
class MessageScanner {
  #untyped: boolean;
  #head: number[] = [];
  #skip = 0;
  readonly #onMessage: (type: number | null, code: number) => void;

  constructor(untypedFirst: boolean, onMessage: (type: number | null, code: number) => void) {
    this.#untyped = untypedFirst;
    this.#onMessage = onMessage;
  }

  scan(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      this.#head.push(chunk[i++]!);
      const head = this.#head;
      if (this.#untyped) {
        if (head.length < 8) continue;
        const length = int32(head, 0);
        this.#onMessage(null, int32(head, 4));
        this.#skip = Math.max(0, length - 8);
        this.#untyped = false;
      } else {
        if (head.length < 5) continue;
        this.#onMessage(head[0]!, 0);
        this.#skip = Math.max(0, int32(head, 1) - 4);
      }
      this.#head = [];
    }
  }
}

function int32(bytes: readonly number[], at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>>
    0;
}

/** A connection's socket: TLS as configured, dropped when it waited `deadlineMs` for an answer. */
class WatchedSocket extends Duplex {
  /** The server's host name (postgres.js reads it). */
  readonly host: string | undefined;
  /** The server's port. */
  readonly port: number | undefined;
  /** Opens a TCP (or Unix) connection to PostgreSQL. */
  readonly #connect: () => net.Socket;
  readonly #options: WatchedSocketsOptions;
  readonly #where: string;
  #raw: net.Socket;
  /** What postgres.js's bytes go through: the raw socket, or TLS over it, once negotiated. */
  #wire: net.Socket | tls.TLSSocket | null = null;
  /** Writes made before the wire was ready. */
  #queued: Array<{ chunk: Uint8Array; callback: (error?: Error | null) => void }> = [];
  /** What postgres.js wrote before PostgreSQL said a word: sent again on a connection reopened. */
  #unanswered: Uint8Array[] = [];
  /** A byte of PostgreSQL's reached postgres.js: the start-up can no longer be tried again. */
  #heard = false;
  /** Tries of the start-up so far ({@linkcode REOPEN_INITIAL_MS}). */
  #reopened = 0;
  #reopening: ReturnType<typeof setTimeout> | undefined;
  /** `setKeepAlive` and `setNoDelay` as postgres.js asked, for a connection reopened. */
  #keepAlive: [boolean | undefined, number | undefined] | undefined;
  #noDelay: boolean | undefined;
  readonly #deadlineMs: number | null;
  #waiting: ReturnType<typeof setTimeout> | undefined;
  /** `ReadyForQuery` messages PostgreSQL owes. */
  #owed = 0;
  /**
   * A `Flush` was sent and nothing has come back since: postgres.js sends
   * Parse + Describe + Flush, no Sync, the first time a statement with
   * parameters runs on a connection, and waits for that answer.
   */
  #flushed = false;
  readonly #sent = new MessageScanner(true, (type, code) => {
    if (type === null ? code === PROTOCOL_3 : type === SYNC || type === QUERY) this.#owed++;
    else if (type === FLUSH) this.#flushed = true;
  });
  readonly #received = new MessageScanner(false, (type) => {
    this.#flushed = false;
    if (type !== READY_FOR_QUERY) return;
    this.#ready = true;
    if (this.#owed > 0) this.#owed--;
  });
  /** PostgreSQL said it was ready once: the startup is over. */
  #ready = false;
  /** Closed while it started: what postgres.js writes goes nowhere until it gives up. */
  #dead = false;

  constructor(
    connect: () => net.Socket,
    options: WatchedSocketsOptions,
    where: string,
    host?: string,
    port?: number,
  ) {
    super({ allowHalfOpen: false });
    this.#connect = connect;
    this.#options = options;
    this.#where = where;
    this.#deadlineMs = options.answerDeadlineMs;
    this.host = host;
    this.port = port;
    this.#raw = connect();
    this.#open(this.#raw);
  }

  /** Takes PostgreSQL's connection `raw` and, where `ssl` says so, negotiates TLS (postgres.js's way). */
  #open(raw: net.Socket): void {
    const current = () => raw === this.#raw && this.#reopening === undefined && !this.destroyed;
    raw.on("error", (error: Error) => current() && this.#lost(error));
    raw.on("close", () => current() && this.#closed());
    if (this.#keepAlive !== undefined) raw.setKeepAlive(...this.#keepAlive);
    if (this.#noDelay !== undefined) raw.setNoDelay(this.#noDelay);
    const options = this.#options;
    const where = this.#where;
    const host = this.host;
    if (options.ssl === false) {
      this.#use(raw);
      return;
    }
    // postgres.js's own negotiation: ask for TLS, take S or N.
    const ssl = options.ssl;
    const answer = (chunk: Uint8Array) => {
      raw.off("data", answer);
      if (!current()) return;
      this.#answered();
      if (chunk[0] === 0x53 && chunk.length === 1) {
        const secure = tls.connect({
          socket: raw,
          // The name the certificate must carry (an IP address: an IP SAN), as libpq checks it.
          host,
          servername: host === undefined || net.isIP(host) !== 0 ? undefined : host,
          ...(ssl === "prefer" || ssl === "require"
            ? { rejectUnauthorized: false }
            : ssl === "verify-full"
            ? {}
            : ssl),
        } as tls.ConnectionOptions);
        secure.on("error", (error: Error) => current() && this.#lost(error));
        secure.once("secureConnect", () => current() && this.#use(secure));
      } else if (chunk[0] === 0x4e && chunk.length === 1 && ssl === "prefer") {
        this.#use(raw);
      } else if (chunk[0] === 0x4e && chunk.length === 1) {
        const error = new Error(
          `PostgreSQL at ${where} does not support TLS, but sslmode=${options.sslmode} requires it`,
        );
        this.#fail(Object.assign(error, { code: TLS_REFUSED_CODE }));
      } else {
        // Bytes after the answer were not sent by PostgreSQL over TLS: refuse them (CVE-2021-23222).
        this.#fail(new Error(`PostgreSQL at ${where} gave an invalid answer to the TLS request`));
      }
    };
    raw.on("data", answer);
    this.#expectAnswer();
    raw.write(SSL_REQUEST);
  }

  /** The raw socket's state, which postgres.js reads before its last words. */
  get readyState(): string {
    return this.#raw.readyState;
  }

  /** Passed to the raw socket (postgres.js's `keep_alive`). */
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.#keepAlive = [enable, initialDelay];
    this.#raw.setKeepAlive(enable, initialDelay);
    return this;
  }

  /** Passed to the raw socket. */
  setNoDelay(noDelay?: boolean): this {
    this.#noDelay = noDelay;
    this.#raw.setNoDelay(noDelay);
    return this;
  }

  override _write(
    chunk: Uint8Array,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    if (this.#dead) {
      callback();
      return;
    }
    this.#sent.scan(chunk);
    if (this.#owes()) this.#expectAnswer();
    if (!this.#heard) this.#unanswered.push(chunk.slice());
    const wire = this.#wire;
    if (wire === null) {
      this.#queued.push({ chunk, callback });
      return;
    }
    this.#send(wire, chunk, callback);
  }

  /**
   * Writes `chunk` to `wire`. A write's error is the connection's, handled as
   * its `error` would be (a hang-up while starting is a close): not the
   * stream's, which would reach postgres.js as an error without that handling.
   */
  #send(
    wire: net.Socket | tls.TLSSocket,
    chunk: Uint8Array,
    callback: (error?: Error | null) => void,
  ): void {
    wire.write(chunk, (error?: Error | null) => {
      if (error && wire === this.#wire && this.#reopening === undefined) this.#lost(error);
      callback();
    });
  }

  override _read(): void {
    this.#wire?.resume();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#wire === null) callback();
    else this.#wire.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#answered();
    clearTimeout(this.#reopening);
    if (this.#wire !== null && this.#wire !== this.#raw) this.#wire.destroy();
    this.#raw.destroy();
    // Writes that never went out: the close (or `error`) tells postgres.js the connection is
    // gone, as for a socket of its own — an error of theirs would be one without a code.
    for (const { callback: queued } of this.#queued.splice(0)) queued();
    callback(error);
  }

  /**
   * The connection closed under postgres.js. Ready once, it ends as a socket
   * of postgres.js's own would. Closed while it starts (PostgreSQL, or a proxy
   * before it, hanging up at once), it is opened again — with a growing pause,
   * the start-up sent again — as long as PostgreSQL has said nothing on it,
   * until postgres.js's connect timeout ends it: a statement waiting for the
   * connection goes through once PostgreSQL takes connections again, as on
   * postgres.js's own sockets (which it reconnects), and fails as a
   * connection never made (`CONNECT_TIMEOUT`) if it does not within the
   * connect timeout — a close alone would leave postgres.js reconnecting for
   * ever with that statement waiting. Closed after PostgreSQL said something
   * (the start-up cannot be sent again), it is left to that timeout.
   *
   * Failing the start-up at once is no way out: the connection's first
   * statement after a reconnection is postgres.js's fetch of the array types,
   * whose failure it leaves unhandled (porsager/postgres#1192), and that
   * statement, lost with a connection, waits on the reconnection.
   */
  #closed(): void {
    if (this.destroyed) return;
    if (this.#ready || (!this.#owes() && this.#wire !== null && this.#queued.length === 0)) {
      this.destroy();
      return;
    }
    if (!this.#heard) {
      this.#reopen();
      return;
    }
    this.#dead = true;
    this.#answered();
  }

  /** The connection failed with `error`: a hang-up before PostgreSQL said a word is a close. */
  #lost(error: Error): void {
    const code = (error as Error & { code?: unknown }).code;
    if (!this.#ready && !this.#heard && typeof code === "string" && HUNG_UP_CODES.has(code)) {
      this.#closed();
    } else {
      this.#fail(error);
    }
  }

  /** Opens the connection again after a pause, to send the start-up postgres.js wrote again. */
  #reopen(): void {
    if (this.#reopening !== undefined) return;
    const pause = Math.min(REOPEN_MAX_MS, REOPEN_INITIAL_MS * 2 ** this.#reopened++);
    this.#reopening = setTimeout(() => {
      this.#reopening = undefined;
      if (this.destroyed) return;
      this.#raw = this.#connect();
      this.#open(this.#raw);
    }, pause);
    const wire = this.#wire;
    this.#wire = null;
    if (wire !== null && wire !== this.#raw) wire.destroy();
    this.#raw.destroy();
    // What went out is sent again first (its callbacks ran, or run, on the old connection), then
    // what was waiting for a wire: the last of the writes kept.
    const sent = this.#unanswered.slice(0, this.#unanswered.length - this.#queued.length);
    this.#queued = [...sent.map((chunk) => ({ chunk, callback: () => {} })), ...this.#queued];
  }

  /** Ends the connection with `error` for postgres.js. */
  #fail(error: Error): void {
    this.destroy(error);
  }

  /**
   * An `error` event nobody listens to any more — postgres.js lets a closed
   * connection's socket go, listeners and all — is dropped, not thrown: it
   * would stop the engine for a connection already handled.
   */
  // deno-lint-ignore no-explicit-any
  override emit(event: string | symbol, ...args: any[]): boolean {
    if (event === "error" && this.listenerCount("error") === 0) return false;
    return super.emit(event, ...args);
  }

  /** Whether PostgreSQL owes this connection an answer. */
  #owes(): boolean {
    return this.#owed > 0 || this.#flushed;
  }

  /** Carries postgres.js's bytes over `wire` from now on, starting with those queued. */
  #use(wire: net.Socket | tls.TLSSocket): void {
    if (this.destroyed) return;
    this.#wire = wire;
    const current = () => wire === this.#wire && !this.destroyed;
    wire.on("data", (chunk: Uint8Array) => {
      if (!current()) return;
      this.#heard = true;
      this.#unanswered = [];
      this.#received.scan(chunk);
      // Any byte is progress; none owed, the connection may rest.
      if (this.#owes()) this.#expectAnswer(true);
      else this.#answered();
      if (!this.push(chunk)) wire.pause();
    });
    // PostgreSQL hung up: the connection is over (a stream merely ended would refuse
    // postgres.js's next write with an error nobody listens for any more).
    wire.on("end", () => current() && this.#closed());
    if (wire !== this.#raw) wire.on("close", () => current() && this.#closed());
    for (const { chunk, callback } of this.#queued.splice(0)) this.#send(wire, chunk, callback);
  }

  /** Waits for a byte from PostgreSQL (afresh when `restart`), dropping the connection when none comes. */
  #expectAnswer(restart = false): void {
    const ms = this.#deadlineMs;
    if (ms === null) return;
    if (this.#waiting !== undefined) {
      if (!restart) return;
      clearTimeout(this.#waiting);
    }
    const waiting = setTimeout(() => {
      this.#waiting = undefined;
      const error = new Error(
        `PostgreSQL sent nothing for ${ms} ms while an answer was owed; the connection is dropped`,
      );
      this.#fail(Object.assign(error, { code: ANSWER_TIMEOUT_CODE }));
    }, ms);
    Deno.unrefTimer(waiting);
    this.#waiting = waiting;
  }

  #answered(): void {
    if (this.#waiting === undefined) return;
    clearTimeout(this.#waiting);
    this.#waiting = undefined;
  }
}
