/**
 * The HTTP server as a supervised child: ready once it listens, stopped
 * gracefully (in-flight requests finish) when its supervisor stops it.
 *
 * @module
 */

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ChildSpec, Running } from "../actors/types.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { crossOriginHeaders } from "./auth.ts";
import { ApiError, errorHandler } from "./errors.ts";

/** Largest request body, in bytes, when `http.max_body_bytes` is not set: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1_048_576;

/** Where the server listens: the `http` section of the configuration. */
export interface HttpOptions {
  /** Interface to bind, e.g. `127.0.0.1` or `0.0.0.0`. */
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Largest request body in bytes; larger is a 413. @default {DEFAULT_MAX_BODY_BYTES} */
  max_body_bytes?: number;
  /** Origins whose pages may call the API; a 413 to one of them carries CORS headers. @default {[]} */
  allowed_origins?: readonly string[];
}

/** Options for {@linkcode withBodyLimit}. */
export interface WithBodyLimitOptions {
  /**
   * Origins whose pages may call the API (`http.allowed_origins`): a 413
   * answered to one of them carries the CORS headers the API's own answers
   * do ({@linkcode crossOriginHeaders}).
   * @default {[]}
   */
  allowedOrigins?: readonly string[];
}

/**
 * `app` behind a request body limit: a body larger than `maxBytes` (by its
 * `Content-Length`, or counted as it streams in) is answered 413 with the
 * JSON error body before any route reads it.
 *
 * @example
 * ```ts
 * const served = withBodyLimit(app, 1024);
 * const res = await served.request("/api/v1/trading/signal", {
 *   method: "POST",
 *   body: "x".repeat(2048),
 * });
 * res.status; // 413
 * ```
 */
export function withBodyLimit(
  app: Hono,
  maxBytes: number,
  log: Logger = nullLogger,
  options: WithBodyLimitOptions = {},
): Hono {
  const headersFor = crossOriginHeaders(options.allowedOrigins ?? []);
  const limited = new Hono();
  limited.onError(errorHandler(log));
  limited.use(
    "*",
    bodyLimit({
      maxSize: maxBytes,
      onError(c) {
        throw new ApiError(
          413,
          "payload_too_large",
          `The request body is larger than ${maxBytes} bytes`,
          // The page of an allowed origin reads the 413, as it reads the API's other errors.
          { headers: headersFor(c.req.header("origin")) ?? {} },
        );
      },
    }),
  );
  limited.all("*", (c) => app.fetch(c.req.raw, c.env));
  return limited;
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

/**
 * A child that serves `app` on `options.host:options.port`, refusing request
 * bodies larger than `options.max_body_bytes` ({@linkcode withBodyLimit}).
 */
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
      const served = withBodyLimit(app, options.max_body_bytes ?? DEFAULT_MAX_BODY_BYTES, log, {
        allowedOrigins: options.allowed_origins ?? [],
      });
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
        }, served.fetch);
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
