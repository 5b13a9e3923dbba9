/**
 * The Hono application: every HTTP route of the engine, with JSON errors.
 *
 * @module
 */

import { Hono } from "hono";
import { errorHandler, methodNotAllowed, notFound } from "./errors.ts";
import { healthRoutes, type HealthSource } from "./health.ts";
import { isLoopbackHost, requireLoopbackHost } from "./auth.ts";
import type { Logger } from "../lib/log.ts";

/** What the routes need from the running engine. */
export interface AppDeps {
  /** Engine name, reported by `GET /`. */
  name: string;
  /** Where health reads its figures. */
  health: HealthSource;
  /** For unexpected errors. */
  log: Logger;
  /** Feature routes by mount path, e.g. `{ "/api/v1/market-data": marketDataRoutes(…) }`. */
  routes?: Record<string, Hono>;
  /**
   * Where the server listens and the other host names it answers to: pass
   * `config.http`. When `host` is a loopback address every route refuses a
   * request whose `Host` is not a loopback name nor in `allowed_hosts`
   * (421): a page whose DNS name is rebound to 127.0.0.1 reads no market
   * data, health or trading answers.
   * @default {{}}
   */
  http?: { host?: string; allowed_hosts?: readonly string[] };
}

/**
 * Builds the application. Test it without sockets: `await app.request("/api/health")`.
 */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  app.onError(errorHandler(deps.log));
  app.notFound(notFound);
  if (deps.http?.host !== undefined && isLoopbackHost(deps.http.host)) {
    app.use("*", requireLoopbackHost({ allowedHosts: deps.http.allowed_hosts ?? [] }));
  }
  app.get("/", (c) => c.json({ name: deps.name, version: deps.health.version }));
  app.route("/api/health", healthRoutes(deps.health));
  for (const [path, routes] of Object.entries(deps.routes ?? {})) app.route(path, routes);
  // Last: a known path asked with a method it does not serve is a 405 naming those it does.
  app.all("*", methodNotAllowed(app));
  return app;
}
