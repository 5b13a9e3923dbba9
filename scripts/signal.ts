// deno-lint-ignore-file no-console -- a command-line tool prints its results
/**
 * Publishes one signal to the engine through JetStream, for a machine without
 * the `nats` CLI:
 *
 * ```sh
 * deno task signal STRATEGY '{"id":"m-0001","symbol":"BTC-USDT","side":"buy","qty":"0.5"}'
 * echo '{"symbol":"ETH-USD","side":"sell","qty":"1"}' | deno task signal momentum
 * ```
 *
 * The body goes as given to `signals.<STRATEGY>`; JetStream's acknowledgement
 * (the `SIGNALS` stream's sequence) is printed, so a signal no stream
 * captured is an error, not silently lost. A body with an `id` goes with
 * `Nats-Msg-Id: <strategy>:<id>` (the engine's idempotency key), so the same
 * signal published again within the stream's duplicate window (2 minutes) —
 * a run repeated after a timeout — is dropped by JetStream and printed as
 * `"duplicate": true`; the engine records a signal id once in any case. NATS comes from the engine's
 * configuration (`NATS_URL`, `TRADEWIRE_NATS__*`, `--config PATH`, flags).
 * Exits 0 once stored, 1 when NATS refuses or does not store it, 2 on a
 * usage or configuration error. The engine's answer (the order, or the
 * reasons of a refusal) is in `orders.*` and `signals.rejected`, and in
 * `GET /api/v1/trading/signals`.
 *
 * @module
 */

import { jetstream } from "@nats-io/jetstream";
import { connectNats } from "../adapters/nats.ts";
import { loadConfig } from "../config/mod.ts";
import { SIGNAL_ID_PATTERN, STRATEGY_PATTERN } from "../trading/signal.ts";
import { REJECTED_TOKEN } from "../trading/signals_stream.ts";

/** The usage text printed for a usage error. */
export const USAGE =
  "usage: deno task signal STRATEGY [JSON] [config flags]   (or pipe the JSON on standard input)";

/**
 * The `Nats-Msg-Id` of the signal `text` published by `strategy`: the
 * engine's idempotency key `<strategy>:<id>` (the body's own valid
 * `strategy` winning, as in the engine), or null when the body has no valid
 * `id` (or is not a JSON object: the engine refuses it with its reasons).
 *
 * @example
 * ```ts
 * signalMsgId("momentum", '{"id":"m-1","symbol":"BTC-USDT","side":"buy","qty":"1"}'); // "momentum:m-1"
 * signalMsgId("momentum", '{"symbol":"BTC-USDT","side":"buy","qty":"1"}'); // null
 * ```
 */
export function signalMsgId(strategy: string, text: string): string | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return null;
  const { id, strategy: named } = body as { id?: unknown; strategy?: unknown };
  if (typeof id !== "string" || !SIGNAL_ID_PATTERN.test(id)) return null;
  const owner = typeof named === "string" && STRATEGY_PATTERN.test(named) ? named : strategy;
  return `${owner}:${id}`;
}

/** Publishes the signal of `argv`; resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [strategy, ...rest] = argv;
  const body = rest[0] !== undefined && !rest[0].startsWith("--") ? rest.shift() : undefined;
  if (strategy === undefined || !STRATEGY_PATTERN.test(strategy) || strategy === REJECTED_TOKEN) {
    console.error(
      `${USAGE}\nSTRATEGY: 1-64 characters of [A-Za-z0-9_-], not "${REJECTED_TOKEN}"`,
    );
    return 2;
  }
  const text = body ?? (await new Response(Deno.stdin.readable).text()).trim();
  if (text === "") {
    console.error(USAGE);
    return 2;
  }
  let config;
  try {
    config = await loadConfig({ args: rest });
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 2;
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error("NATS unreachable for 10 s")), 10_000);
  try {
    const nc = await connectNats(config.nats, {
      signal: controller.signal,
    });
    try {
      const msgID = signalMsgId(strategy, text);
      const ack = await jetstream(nc).publish(
        `signals.${strategy}`,
        new TextEncoder().encode(text),
        msgID === null ? undefined : { msgID },
      );
      console.log(JSON.stringify({ stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate }));
      return 0;
    } finally {
      await nc.close();
    }
  } catch (error) {
    console.error(`not published: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
