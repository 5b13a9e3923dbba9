/**
 * Health: liveness, and a detailed report of the backing services and of
 * every actor in the supervision tree.
 *
 * @module
 */

import { Hono } from "hono";
import type { ActorInfo } from "../actors/types.ts";

/** The services the engine depends on. */
export const COMPONENTS = ["postgres", "nats", "clickhouse"] as const;
/** One of {@linkcode COMPONENTS}. */
export type Component = typeof COMPONENTS[number];

/** The state of one backing service. */
export interface ComponentHealth {
  /** Whether its probe answered in time and found it able to do its work. */
  status: "up" | "down";
  /** Probe round trip in milliseconds; null when down. */
  latency_ms: number | null;
  /** Why it is down. */
  error?: string;
}

/**
 * A probe's finding that its service answers but cannot do the engine's work
 * (PostgreSQL read-only): the service counts as down, and its problem reads
 * `<service> is <message>` (`postgres is read-only (in recovery)`) instead
 * of `<service> is down: <message>`.
 *
 * @example
 * ```ts
 * const probe = async () => {
 *   const { latency_ms, read_only } = await probePostgres(sql);
 *   if (read_only !== null) throw new UnusableServiceError(`read-only (${read_only})`);
 *   return latency_ms;
 * };
 * ```
 */
export class UnusableServiceError extends Error {
  /** Creates the error; `message` says what the service is, e.g. `read-only (in recovery)`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UnusableServiceError";
  }
}

/** The body of `GET /api/health/detailed`. */
export interface DetailedHealth {
  /** ok: all up and running; degraded: working with a part missing; down: cannot work. */
  status: "ok" | "degraded" | "down";
  /** Engine version. */
  version: string;
  /** Seconds since the engine started. */
  uptime_s: number;
  /** Each backing service. */
  components: Record<Component, ComponentHealth>;
  /** Every actor and supervisor in the tree. */
  actors: ActorInfo[];
  /**
   * Every reason the engine is not `ok` (empty when it is): services down,
   * actors not running, then the engine's own (a feed not live, …).
   */
  problems: string[];
  /** More sections reported by parts of the engine (e.g. migrations). */
  [section: string]: unknown;
}

/** What the health routes read from the running engine. */
export interface HealthSource {
  /** Engine version. */
  version: string;
  /** When the engine started, in milliseconds since the epoch. */
  startedAt: number;
  /**
   * A probe per service: resolves to its latency in milliseconds, rejects when
   * it is down — with an {@linkcode UnusableServiceError} when it answers but
   * cannot do its work.
   */
  probes: Record<Component, () => Promise<number>>;
  /** The supervision tree's rows. */
  actors: () => ActorInfo[];
  /** Further sections of the report. */
  sections?: () => Record<string, unknown>;
  /** Problems that make the engine degraded although every service is up (e.g. a feed not live). */
  degraded?: () => string[];
  /** Milliseconds a probe may take before the service counts as down. @default {2000} */
  probeTimeoutMs?: number;
}

/** Services without which the engine cannot work at all. */
const ESSENTIAL: readonly Component[] = ["postgres", "nats"];
/** Actor states that mean all is well. */
const HEALTHY_ACTOR: ReadonlySet<ActorInfo["status"]> = new Set(["running", "exited"]);

/** Probes every service at once and classifies the engine's state. */
export async function detailedHealth(source: HealthSource): Promise<DetailedHealth> {
  const timeoutMs = source.probeTimeoutMs ?? 2000;
  const results = await Promise.all(
    COMPONENTS.map((name) => probe(source.probes[name], timeoutMs)),
  );
  const components = Object.fromEntries(
    COMPONENTS.map((name, i) => [name, results[i]!.health]),
  ) as Record<Component, ComponentHealth>;
  const actors = source.actors();
  const problems: string[] = [];
  COMPONENTS.forEach((name, i) => {
    const { health: { status, error }, unusable } = results[i]!;
    if (status !== "down") return;
    if (unusable) problems.push(`${name} is ${error}`);
    else problems.push(`${name} is down${error === undefined ? "" : `: ${error}`}`);
  });
  for (const actor of actors) {
    if (HEALTHY_ACTOR.has(actor.status)) continue;
    const why = actor.last_error === null ? "" : ` (last error: ${actor.last_error})`;
    problems.push(`actor ${actor.name} is ${actor.status}${why}`);
  }
  problems.push(...source.degraded?.() ?? []);
  let status: DetailedHealth["status"] = "ok";
  if (ESSENTIAL.some((name) => components[name].status === "down")) status = "down";
  else if (problems.length > 0) status = "degraded";
  return {
    status,
    version: source.version,
    uptime_s: Math.round((Date.now() - source.startedAt) / 1000),
    components,
    actors,
    problems,
    ...source.sections?.(),
  };
}

/** A probe's outcome; `unusable` when it rejected with an {@linkcode UnusableServiceError}. */
async function probe(
  check: () => Promise<number>,
  timeoutMs: number,
): Promise<{ health: ComponentHealth; unusable: boolean }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const latency = await Promise.race([check(), timeout]);
    return {
      health: { status: "up", latency_ms: Math.round(latency * 1000) / 1000 },
      unusable: false,
    };
  } catch (error) {
    return {
      health: {
        status: "down",
        latency_ms: null,
        error: error instanceof Error ? error.message : String(error),
      },
      unusable: error instanceof UnusableServiceError,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The health routes: `GET /` (liveness) and `GET /detailed`. The detailed
 * report needs no API key, and its probes use the engine's own connections
 * (a query on the PostgreSQL pool): requests that arrive while a round of
 * probes runs share its report instead of each probing again, so a burst of
 * them costs one round; a request after the round ends starts a new one.
 */
export function healthRoutes(source: HealthSource): Hono {
  let running: Promise<DetailedHealth> | undefined;
  const report = (): Promise<DetailedHealth> =>
    running ??= detailedHealth(source).finally(() => {
      running = undefined;
    });
  return new Hono()
    .get("/", (c) => c.json({ status: "ok" }))
    .get("/detailed", async (c) => {
      const health = await report();
      return c.json(health, health.status === "ok" ? 200 : 503);
    });
}
