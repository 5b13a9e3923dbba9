/**
 * The streams actor: creates or updates the engine's own JetStream streams
 * (`ENGINE_EVENTS`, `MD_CLEAN`) at start, creates them again whenever they
 * are found missing, and tells health which stream or durable consumer the
 * engine needs is missing.
 *
 * At start it runs `ensureStreams` once; its failure is a start failure (the
 * engine does not start without its streams). Then, after every NATS
 * reconnect and every `check_ms` while connected — every `recheck_ms` while
 * something is missing or JetStream did not answer — it checks:
 *
 * - each of its streams: one that is missing (NATS came back without its
 *   JetStream store, `nats stream rm`) is created again, with the settings
 *   of its spec, and logged; one that exists is left as it is (settings are
 *   brought in line at start only, so an operator's change is not fought);
 * - each needed durable consumer (`consumers`: the execution actor's on
 *   `SIGNALS`, the position tracker's on `FILLS`, the batch writer's on
 *   `MD_CLEAN`): one that is missing, or whose stream is, is reported but
 *   not created — its actor creates it (and its stream) when it starts
 *   again, which it does when it finds its consumer gone.
 *
 * {@linkcode StreamsChildSpec.problems} lists what the last check found
 * ("JetStream stream SIGNALS is missing", "JetStream consumer execution of
 * stream SIGNALS is missing", "JetStream did not answer the streams check:
 * …"); health is degraded while it lists anything. From a NATS disconnect
 * until the check after the reconnect has answered it lists
 * {@linkcode NOT_CHECKED}: NATS may be back without its store, and a
 * moment's "ok" then would be wrong. The actor never fails after its start: a
 * check that fails is reported and tried again.
 *
 * @example
 * ```ts
 * const streams = streamsActor({ nats, streams: [...ENGINE_STREAMS], log });
 * health.degraded = () => streams.problems();
 * ```
 *
 * @module
 */

import type { NatsConnection, Status } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  ensureStreams,
  isConsumerNotFound,
  isStreamNotFound,
  type StreamSpec,
} from "../adapters/nats.ts";
import type { Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import { Wakeup } from "../lib/wakeup.ts";
import { actor, isConnected } from "./actor.ts";
import type { ChildSpec } from "./types.ts";

/** Name of the actor in the supervision tree. */
export const STREAMS_ACTOR_NAME = "streams";
/** How often the streams and consumers are checked while all is well, in ms. */
export const DEFAULT_STREAMS_CHECK_MS = 30_000;
/** How often they are checked while something is missing or JetStream did not answer, in ms. */
export const DEFAULT_STREAMS_RECHECK_MS = 1_000;

/** The problem reported from a NATS disconnect until the check after the reconnect. */
export const NOT_CHECKED = "JetStream streams and consumers not checked since NATS reconnected";

/** A durable consumer the engine needs, created by its own actor. */
export interface NeededConsumer {
  /** Its stream. */
  stream: string;
  /** Its durable name. */
  consumer: string;
}

/** What {@linkcode streamsActor} needs. */
export interface StreamsActorDeps {
  /** The engine's NATS connection. */
  nats: NatsConnection;
  /** The streams it creates or updates at start and creates again when missing. */
  streams: readonly StreamSpec[];
  /** Durable consumers (and their streams) reported when missing. @default {[]} */
  consumers?: readonly NeededConsumer[] | undefined;
  /** @default {DEFAULT_STREAMS_CHECK_MS} */
  check_ms?: number | undefined;
  /** @default {DEFAULT_STREAMS_RECHECK_MS} */
  recheck_ms?: number | undefined;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
}

/** The streams actor's spec, with what health reads. */
export interface StreamsChildSpec extends ChildSpec {
  /** What the last check found missing or failing; empty when all is there. */
  problems(): string[];
}

/**
 * Creates the streams actor (see the module doc): after the instance lock in
 * the root supervisor, so that an engine refused by it changes nothing.
 */
export function streamsActor(deps: StreamsActorDeps): StreamsChildSpec {
  let problems: string[] = [];
  const spec = actor({
    name: STREAMS_ACTOR_NAME,
    async start(ctx) {
      await ensureStreams(deps.nats, deps.streams, ctx.log);
    },
    async run(ctx) {
      const wake = new Wakeup();
      const onAbort = () => wake.notify();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      let reconnected = false;
      const statuses = deps.nats.status() as AsyncIterable<Status> & { stop?: () => void };
      const watching = (async () => {
        for await (const status of statuses) {
          if (status.type === "reconnect") {
            reconnected = true;
            wake.notify();
          } else if (status.type === "disconnect") {
            // Until the check after the reconnect: NATS may come back without its store.
            problems = [NOT_CHECKED];
          }
        }
      })().catch((error) => ctx.log.warn("NATS status watch ended", { error }));
      try {
        while (!ctx.signal.aborted) {
          if (!reconnected) {
            const waitMs = problems.length > 0
              ? deps.recheck_ms ?? DEFAULT_STREAMS_RECHECK_MS
              : deps.check_ms ?? DEFAULT_STREAMS_CHECK_MS;
            const timer = new AbortController();
            const slept = ctx.clock.sleep(waitMs, timer.signal).catch(() => {});
            await Promise.race([slept, wake.wait()]);
            timer.abort();
            if (ctx.signal.aborted) break;
          }
          reconnected = false;
          if (!isConnected(deps.nats)) continue;
          const found = await check(deps, ctx.log);
          // Disconnected meanwhile: the check after the reconnect tells.
          if (!isConnected(deps.nats) || reconnected) continue;
          if (found.join("\n") !== problems.join("\n")) {
            if (found.length > 0) ctx.log.warn("JetStream streams check found problems", { found });
            else ctx.log.info("JetStream streams and consumers all there again");
          }
          problems = found;
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        statuses.stop?.();
        await watching;
      }
    },
  }, {
    nats: deps.nats,
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  return Object.assign(spec, { problems: () => [...problems] });
}

/** One check (see the module doc): the problems found; never rejects. */
async function check(deps: StreamsActorDeps, log: Logger): Promise<string[]> {
  const problems: string[] = [];
  try {
    const jsm = await jetstreamManager(deps.nats);
    for (const spec of deps.streams) {
      try {
        await jsm.streams.info(spec.name);
        continue;
      } catch (error) {
        if (!isStreamNotFound(error)) throw error;
      }
      await jsm.streams.add(spec);
      log.warn("JetStream stream was missing: created again", { stream: spec.name });
    }
    const missingStreams = new Set<string>();
    for (const { stream, consumer } of deps.consumers ?? []) {
      if (missingStreams.has(stream)) continue;
      try {
        await jsm.consumers.info(stream, consumer);
      } catch (error) {
        if (isStreamNotFound(error)) {
          missingStreams.add(stream);
          problems.push(`JetStream stream ${stream} is missing`);
        } else if (isConsumerNotFound(error)) {
          problems.push(`JetStream consumer ${consumer} of stream ${stream} is missing`);
        } else throw error;
      }
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    problems.push(`JetStream did not answer the streams check: ${message}`);
  }
  return problems;
}
