/**
 * Pulls from a durable JetStream consumer on one inbox that lives as long as
 * the puller, so that no message the server sends is ever left undelivered.
 *
 * Why not nats.js `consumer.fetch()`: every fetch subscribes a fresh inbox and
 * stops itself after two missed idle heartbeats. When the event loop is busy
 * for about a second, the fetch unsubscribes while the server's pull request is
 * still open, and whatever the server then sends for it waits out the
 * consumer's `ack_wait` before it is delivered again. Here the inbox outlives
 * every request, so a late message is still received; a request that the
 * server never answers is given up locally shortly after its expiry, and the
 * next one can be sent at once.
 *
 * One request is in flight at a time: {@link JetStreamPuller.pull} asks for up
 * to `batch` messages and resolves when the server has answered it in full.
 * Messages reach the `onMessage` callback as they arrive, in order.
 *
 * @example
 * ```ts
 * const puller = new JetStreamPuller(nc, "MD_CLEAN", "writer", (msg) => {
 *   handle(msg.data);
 *   msg.ack();
 * });
 * while (running) await puller.pull(100, { expiresMs: 1_000 });
 * await puller.close();
 * ```
 *
 * @module
 */

import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { assertPositiveInteger } from "../lib/assert.ts";
import { NANOS_PER_MS } from "./nats.ts";

/**
 * Milliseconds a pull may outlast its expiry before it is given up locally.
 * The server's 408 normally comes within a millisecond of the expiry, but
 * nats-server 2.9 now and then sends neither it nor further messages for an
 * expired request; giving such a pull up soon costs nothing, because the inbox
 * stays subscribed and still receives whatever comes late.
 */
export const DEFAULT_PULL_GRACE_MS = 200;

const ACK = Uint8Array.of(43, 65, 67, 75); // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75); // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73); // +WPI

/** Where a message stands in its consumer, read from its reply subject. */
export interface DeliveryInfo {
  stream: string;
  consumer: string;
  /** How many times this message has been delivered, this time included. */
  deliveryCount: number;
  streamSequence: number;
  deliverySequence: number;
  /** Messages left for the consumer after this one. */
  pending: number;
}

/**
 * Reads a JetStream reply subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`
 * or its newer form with a domain and account hash after `$JS.ACK`; null for any other subject.
 */
export function parseAckSubject(reply: string): DeliveryInfo | null {
  const tokens = reply.split(".");
  if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return null;
  // Old form: 9 tokens. New form: domain and account hash after $JS.ACK, and a trailing token.
  const at = tokens.length === 9 ? 2 : tokens.length >= 11 ? 4 : -1;
  if (at < 0) return null;
  // The timestamp (in nanoseconds, at + 5) is beyond a safe integer and is not read.
  const [deliveryCount, streamSequence, deliverySequence, pending] = [2, 3, 4, 6].map((i) =>
    Number(tokens[at + i])
  ) as [number, number, number, number];
  if (![deliveryCount, streamSequence, deliverySequence, pending].every(Number.isSafeInteger)) {
    return null;
  }
  return {
    stream: tokens[at]!,
    consumer: tokens[at + 1]!,
    deliveryCount,
    streamSequence,
    deliverySequence,
    pending,
  };
}

/** One message pulled from the consumer, to be acknowledged once. */
export class PulledMessage {
  readonly #nc: NatsConnection;
  readonly #msg: Msg;
  readonly #info: DeliveryInfo;
  #settled = false;

  constructor(nc: NatsConnection, msg: Msg, info: DeliveryInfo) {
    this.#nc = nc;
    this.#msg = msg;
    this.#info = info;
  }

  /** The subject the message was published on. */
  get subject(): string {
    return this.#msg.subject;
  }

  /** The message body. */
  get data(): Uint8Array {
    return this.#msg.data;
  }

  /** Its sequence in the stream. */
  get seq(): number {
    return this.#info.streamSequence;
  }

  /** Where it stands in its consumer. */
  get info(): DeliveryInfo {
    return this.#info;
  }

  /** True when the consumer has delivered it before. */
  get redelivered(): boolean {
    return this.#info.deliveryCount > 1;
  }

  /** Acknowledges it: the consumer will not deliver it again. Later calls do nothing. */
  ack(): void {
    this.#settle(ACK);
  }

  /** Hands it back for redelivery now. Later calls do nothing. */
  nak(): void {
    this.#settle(NAK);
  }

  /** Restarts its `ack_wait`: still being worked on. Does nothing once it is settled. */
  working(): void {
    if (!this.#settled) this.#publish(WPI);
  }

  #settle(payload: Uint8Array): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#publish(payload);
  }

  #publish(payload: Uint8Array): void {
    const reply = this.#msg.reply;
    // A closed connection drops the acknowledgement; the server then redelivers after ack_wait.
    if (reply && !this.#nc.isClosed()) this.#nc.publish(reply, payload);
  }
}

/** How a pull request ended. */
export interface PullResult {
  /** Messages received for this request. */
  received: number;
  /**
   * The server's status when it ended the request before `batch` messages
   * (408: expired; 409: refused, e.g. the consumer was deleted or too many
   * requests wait; 404/503: no such consumer or no JetStream), or null.
   */
  status: { code: number; description: string } | null;
  /** True when the server never answered and the request was given up locally. */
  timedOut: boolean;
}

/** Options of {@link JetStreamPuller.pull}. */
export interface PullOptions {
  /** How long the server keeps the request open, in ms. */
  expiresMs: number;
  /** How long past `expiresMs` to wait for the server's answer. @default {DEFAULT_PULL_GRACE_MS} */
  graceMs?: number | undefined;
}

interface PendingPull {
  batch: number;
  received: number;
  timer: ReturnType<typeof setTimeout>;
  resolve: (result: PullResult) => void;
  reject: (error: unknown) => void;
}

/** Pulls from one durable consumer on an inbox that lives until {@link close}. */
export class JetStreamPuller {
  readonly #nc: NatsConnection;
  readonly #subject: string;
  readonly #inbox: string;
  readonly #sub: Subscription;
  readonly #onMessage: (msg: PulledMessage) => void;
  #pending: PendingPull | null = null;
  /** What `onMessage` threw: it closed the puller, and every later pull fails with it. */
  #failure: { error: unknown } | null = null;

  /**
   * Subscribes the inbox. `onMessage` gets every message of the consumer, in
   * order, including late ones of a request already given up. If it throws,
   * the puller closes and the pull in flight (and every later one) rejects
   * with that error.
   */
  constructor(
    nc: NatsConnection,
    stream: string,
    consumer: string,
    onMessage: (msg: PulledMessage) => void,
  ) {
    this.#nc = nc;
    this.#subject = `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`;
    this.#inbox = `_INBOX.${crypto.randomUUID().replaceAll("-", "")}`;
    this.#onMessage = onMessage;
    this.#sub = nc.subscribe(this.#inbox, {
      callback: (error, msg) => {
        if (error) {
          this.#end({ received: this.#pending?.received ?? 0, status: null, timedOut: false });
        } else this.#receive(msg);
      },
    });
  }

  /** True while a request is in flight. */
  get pulling(): boolean {
    return this.#pending !== null;
  }

  /** True once the puller is closed, by {@link close} or by an error of `onMessage`. */
  get closed(): boolean {
    return this.#sub.isClosed();
  }

  /**
   * Asks for up to `batch` messages, for at most `expiresMs` on the server, and
   * resolves when the server has sent them all or ended the request.
   */
  pull(batch: number, options: PullOptions): Promise<PullResult> {
    assertPositiveInteger(batch, "batch");
    assertPositiveInteger(options.expiresMs, "expiresMs");
    if (this.#pending) throw new Error("A pull is already in flight");
    if (this.#failure) return Promise.reject(this.#failure.error);
    if (this.#sub.isClosed()) throw new Error("The puller is closed");
    return new Promise<PullResult>((resolve, reject) => {
      const timer = setTimeout(
        // A timer can fire before I/O that arrived while the event loop was busy is read:
        // read it first, so that an answer already here still ends the pull normally.
        () => {
          const pending = this.#pending;
          setTimeout(() => {
            if (pending !== null && pending === this.#pending) {
              this.#end({ received: pending.received, status: null, timedOut: true });
            }
          }, 0);
        },
        options.expiresMs + (options.graceMs ?? DEFAULT_PULL_GRACE_MS),
      );
      this.#pending = { batch, received: 0, timer, resolve, reject };
      const request = JSON.stringify({ batch, expires: options.expiresMs * NANOS_PER_MS });
      try {
        this.#nc.publish(this.#subject, request, { reply: this.#inbox });
      } catch (error) {
        clearTimeout(timer);
        this.#pending = null;
        throw error;
      }
    });
  }

  /** Unsubscribes the inbox; a pull in flight resolves with what it received. */
  close(): Promise<void> {
    if (!this.#sub.isClosed()) this.#sub.unsubscribe();
    this.#end({ received: this.#pending?.received ?? 0, status: null, timedOut: false });
    return Promise.resolve();
  }

  #receive(msg: Msg): void {
    const info = msg.reply ? parseAckSubject(msg.reply) : null;
    if (info === null) {
      const code = msg.headers?.code ?? 0;
      // 100: idle heartbeat or flow control, which only push consumers ask for.
      if (code === 0 || code === 100) return;
      this.#end({
        received: this.#pending?.received ?? 0,
        status: { code, description: msg.headers?.description ?? "" },
        timedOut: false,
      });
      return;
    }
    const pending = this.#pending;
    if (pending) pending.received++;
    try {
      this.#onMessage(new PulledMessage(this.#nc, msg, info));
    } catch (error) {
      this.#failure = { error };
      this.#sub.unsubscribe();
      this.#pending = null;
      if (pending) {
        clearTimeout(pending.timer);
        pending.reject(error);
      }
      return;
    }
    if (pending && pending === this.#pending && pending.received >= pending.batch) {
      this.#end({ received: pending.received, status: null, timedOut: false });
    }
  }

  #end(result: PullResult): void {
    const pending = this.#pending;
    if (!pending) return;
    this.#pending = null;
    clearTimeout(pending.timer);
    pending.resolve(result);
  }
}
