/**
 * The sockets of the PostgreSQL pool ({@linkcode watchedSockets}): a TCP (or
 * Unix) connection that is dropped when it sent a request and heard nothing
 * back for `answer_deadline_ms`. PostgreSQL that stops answering without
 * closing the connection — a network partition, a frozen server or disk —
 * would else hold every statement sent to it until TCP gives up (a quarter
 * of an hour, or never while the server's kernel still acknowledges).
 * Dropped, the statement fails as a lost connection (`ETIMEDOUT`): callers
 * treat it as a write whose outcome is unknown, which they already do for a
 * connection that drops.
 *
 * The watch sits below TLS (postgres.js starts TLS on top of the socket), so
 * it counts bytes, not messages: a connection waits for an answer from its
 * first write after the last byte it read until it reads again.
 *
 * It also ends a connection that must use TLS when the server refuses it
 * (`N` to the SSLRequest): postgres.js would start TLS all the same and the
 * server would hang up, an outage to every caller; this is an error of the
 * configuration ({@linkcode TLS_REFUSED_CODE}), as in libpq.
 *
 * @module
 */

import net from "node:net";
import { Duplex } from "node:stream";

/** Code of the error a connection is dropped with: a lost connection to `mapDbError`. */
export const ANSWER_TIMEOUT_CODE = "ETIMEDOUT";

/** Code of the error of a server refusing TLS that the connection requires: not an outage. */
export const TLS_REFUSED_CODE = "SSL_NOT_SUPPORTED";

/** Options of {@linkcode watchedSockets}. */
export interface WatchedSocketsOptions {
  /** Ms a connection waits for an answer before it is dropped; null never drops one. */
  answerDeadlineMs: number | null;
  /** The `sslmode` that requires TLS, named in the error when the server refuses it; null: not required. */
  tlsRequiredBy: string | null;
}

/** Longest wait for the end of stream to be read before a dropped connection is destroyed, ms. */
const DROP_GRACE_MS = 1_000;

/** What postgres.js hands its `socket` factory: the parsed hosts, ports and socket path. */
export interface PgSocketTarget {
  host: readonly string[];
  port: readonly number[];
  path?: string | false | undefined;
}

/**
 * A postgres.js `socket` factory whose connections are dropped after
 * `answerDeadlineMs` without an answer, and refused when they require TLS that
 * the server does not offer. Hosts are taken in turn, as postgres.js does with
 * several.
 *
 * @example
 * ```ts
 * const socket = watchedSockets({ answerDeadlineMs: 35_000, tlsRequiredBy: null });
 * const sql = postgres(url, { socket });
 * ```
 */
export function watchedSockets(options: WatchedSocketsOptions): (target: PgSocketTarget) => Duplex {
  let next = 0;
  return (target) => {
    if (target.path) {
      return new WatchedSocket(net.connect(target.path), options, target.path);
    }
    const i = next++ % Math.max(1, target.host.length);
    const host = target.host[i] ?? "localhost";
    const port = target.port[i] ?? target.port[0] ?? 5432;
    return new WatchedSocket(net.connect(port, host), options, `${host}:${port}`, host, port);
  };
}

/** A connection's socket, dropped when it waited `deadlineMs` for an answer. */
class WatchedSocket extends Duplex {
  /** Read by postgres.js: the TLS server name. */
  readonly host: string | undefined;
  /** The server's port. */
  readonly port: number | undefined;
  readonly #raw: net.Socket;
  readonly #deadlineMs: number | null;
  #tlsRequiredBy: string | null;
  #waiting: ReturnType<typeof setTimeout> | undefined;

  constructor(
    raw: net.Socket,
    options: WatchedSocketsOptions,
    where: string,
    host?: string,
    port?: number,
  ) {
    super({ allowHalfOpen: false });
    this.#raw = raw;
    this.#deadlineMs = options.answerDeadlineMs;
    this.#tlsRequiredBy = options.tlsRequiredBy;
    this.host = host;
    this.port = port;
    raw.on("data", (chunk: Uint8Array) => {
      this.#answered();
      // The first byte of a connection that asked for TLS answers the SSLRequest: S or N.
      if (this.#tlsRequiredBy !== null && chunk[0] === 0x4e) {
        const error = new Error(
          `PostgreSQL at ${where} does not support TLS, but sslmode=${this.#tlsRequiredBy} requires it`,
        );
        this.destroy(Object.assign(error, { code: TLS_REFUSED_CODE }));
        return;
      }
      this.#tlsRequiredBy = null;
      if (!this.push(chunk)) raw.pause();
    });
    raw.on("end", () => this.push(null));
    raw.on("error", (error: Error) => this.destroy(error));
    raw.on("close", () => this.destroy());
  }

  /** The raw socket's state, which postgres.js reads before its last words. */
  get readyState(): string {
    return this.#raw.readyState;
  }

  /** Passed to the raw socket (postgres.js's `keep_alive`). */
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.#raw.setKeepAlive(enable, initialDelay);
    return this;
  }

  /** Passed to the raw socket. */
  setNoDelay(noDelay?: boolean): this {
    this.#raw.setNoDelay(noDelay);
    return this;
  }

  override _write(
    chunk: Uint8Array,
    encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#asked();
    this.#raw.write(chunk, encoding, callback);
  }

  override _read(): void {
    this.#raw.resume();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#raw.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#answered();
    this.#raw.destroy();
    callback(error);
  }

  /** A request went out: the wait for its answer starts, unless one already runs. */
  #asked(): void {
    const ms = this.#deadlineMs;
    if (this.#waiting !== undefined || ms === null) return;
    const waiting = setTimeout(() => {
      this.#waiting = undefined;
      const error = new Error(
        `PostgreSQL sent nothing for ${ms} ms after a request; the connection is dropped`,
      );
      this.#drop(Object.assign(error, { code: ANSWER_TIMEOUT_CODE }));
    }, ms);
    Deno.unrefTimer(waiting);
    this.#waiting = waiting;
  }

  /**
   * Ends the connection as a server hanging up would, then fails it with
   * `error`: end of stream first, so that TLS on top (Deno's, wrapping this
   * stream) closes — destroyed at once, it stays open, and postgres.js with it.
   */
  #drop(error: Error): void {
    const fail = () => this.destroy(error);
    this.once("end", fail);
    const late = setTimeout(fail, DROP_GRACE_MS); // no reader took the end of stream
    Deno.unrefTimer(late);
    this.once("close", () => clearTimeout(late));
    this.push(null);
  }

  #answered(): void {
    if (this.#waiting === undefined) return;
    clearTimeout(this.#waiting);
    this.#waiting = undefined;
  }
}
