/**
 * The HTTP server as a supervised child: ready once it listens, stopped
 * gracefully (in-flight requests finish) when its supervisor stops it.
 *
 * @module
 */

import type { Hono } from "hono";
import type { ChildSpec, Running } from "../actors/types.ts";
import { type Logger, nullLogger } from "../lib/log.ts";

/** Where the server listens: the `http` section of the configuration. */
export interface HttpOptions {
  /** Interface to bind, e.g. `127.0.0.1` or `0.0.0.0`. */
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

/** Options for {@linkcode httpServer}. */
export interface HttpServerOptions {
  /** @default {nullLogger} */
  log?: Logger;
  /** Called with the bound address once listening (useful with port 0). */
  onListen?: (address: { hostname: string; port: number }) => void;
  /** Milliseconds the supervisor gives in-flight requests at shutdown. @default {5000} */
  shutdownMs?: number;
}

/** A child that serves `app` on `options.host:options.port`. */
export function httpServer(
  app: Hono,
  options: HttpOptions,
  { log = nullLogger, onListen, shutdownMs = 5000 }: HttpServerOptions = {},
): ChildSpec {
  return {
    name: "http",
    restart: "permanent",
    shutdownMs,
    start(signal: AbortSignal): Running {
      let listening!: () => void;
      const ready = new Promise<void>((resolve) => listening = resolve);
      let server: Deno.HttpServer;
      try {
        server = Deno.serve({
          hostname: options.host,
          port: options.port,
          signal,
          onListen(address) {
            log.info("HTTP listening", { host: address.hostname, port: address.port });
            onListen?.(address);
            listening();
          },
          onError(error) {
            log.error("HTTP handler failed", { error });
            return Response.json(
              { error: { code: "internal", message: "Internal server error" } },
              { status: 500 },
            );
          },
        }, app.fetch);
      } catch (error) {
        const failed = Promise.reject(
          new Error(`Cannot listen on ${options.host}:${options.port}`, { cause: error }),
        );
        return { ready: failed, done: failed, stats: () => ({ kind: "worker" }) };
      }
      return { ready, done: server.finished, stats: () => ({ kind: "worker" }) };
    },
  };
}
