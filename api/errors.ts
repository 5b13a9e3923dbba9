/**
 * Errors at the HTTP edge: handlers throw, one `onError` turns what they threw
 * into `{ "error": { "code", "message" } }` with the right status — never a
 * stack trace.
 *
 * @module
 */

import type { Context, Handler, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { basePath } from "hono/route";
import { PatternRouter } from "hono/router/pattern-router";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "../lib/log.ts";
import { DbConnectionError, DbTimeoutError, mapDbError, SerializationError } from "../db/errors.ts";

/** An error a handler throws to answer with `status`, a machine `code` and a message. */
export class ApiError extends Error {
  /** The HTTP status. */
  readonly status: ContentfulStatusCode;
  /** A stable, machine-readable code, e.g. `"not_found"`. */
  readonly code: string;
  /** Extra detail placed beside code and message, e.g. validation reasons. */
  readonly details: unknown;
  /** Response headers sent with the error, e.g. `Allow` with a 405. */
  readonly headers: Readonly<Record<string, string>>;

  /** Makes an error answered with `status` and `{ code, message, details }`. */
  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown; details?: unknown; headers?: Record<string, string> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = options?.details;
    this.headers = options?.headers ?? {};
  }
}

/**
 * Thrown by a handler that gave up because its client went away (the
 * request's signal aborted: a dashboard reloaded, curl interrupted, a proxy's
 * timeout). {@linkcode errorHandler} logs it at debug level, not as an engine
 * error, and answers an empty 499 that nobody reads.
 *
 * @example
 * ```ts
 * if (c.req.raw.signal.aborted) throw new ClientGoneError("The client went away");
 * ```
 */
export class ClientGoneError extends Error {
  /** Makes the error; `cause` is what the abort interrupted. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ClientGoneError";
  }
}

/** Status answered to a client that went away (nginx's "client closed request"): never read. */
export const CLIENT_GONE_STATUS = 499;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

const CODES: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  422: "unprocessable_entity",
  429: "too_many_requests",
  503: "unavailable",
};

/** Seconds a client is told to wait before retrying a request the database could not serve. */
export const DATABASE_RETRY_AFTER_S = 1;

/**
 * The 503 message for a request the database could not serve: unreachable,
 * timed out or a transaction conflict that outlived its retries. The request
 * may have been carried out (a lost answer to a commit), so a retry must be
 * the same request — for a signal, the same `id` or `Idempotency-Key`.
 */
function databaseUnavailable(error: Error): string | null {
  if (error instanceof DbConnectionError) {
    return "The database cannot be reached; the request may or may not have been carried " +
      "out: retry the same request (a signal with the same id or Idempotency-Key)";
  }
  if (error instanceof DbTimeoutError) {
    return "The database did not answer in time; retry the same request";
  }
  if (error instanceof SerializationError) {
    return "The database refused the request as conflicting with another; retry the same request";
  }
  return null;
}

/**
 * Builds the `onError` handler. Database outages, timeouts and conflicts that
 * outlived their retries are answered 503 with `Retry-After`; a request body
 * that could not be read because the client's connection ended mid-body is
 * logged at debug level (no stack) and answered 400 if anyone still listens;
 * so is a request whose client went away (a {@linkcode ClientGoneError}, or
 * the request's own abort), answered an empty 499; other unexpected errors are
 * logged and answered 500 without detail.
 */
export function errorHandler(log: Logger) {
  return function onError(error: Error, c: Context): Response {
    if (error instanceof ApiError) {
      for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
      const body: ErrorBody = { error: { code: error.code, message: error.message } };
      if (error.details !== undefined) body.error.details = error.details;
      return c.json(body, error.status);
    }
    if (error instanceof HTTPException) {
      const status = error.status;
      const code = CODES[status] ?? "http_error";
      return c.json<ErrorBody>({ error: { code, message: error.message || code } }, status);
    }
    const mapped = mapDbError(error);
    const unavailable = databaseUnavailable(mapped);
    if (unavailable !== null) {
      log.warn("request failed: database unavailable", {
        method: c.req.method,
        path: c.req.path,
        error: mapped,
      });
      c.header("Retry-After", String(DATABASE_RETRY_AFTER_S));
      return c.json<ErrorBody>({ error: { code: "unavailable", message: unavailable } }, 503);
    }
    if (clientGone(error, c)) {
      // The client's doing (it stopped waiting), not the engine's: no stack, no alarm.
      log.debug("request abandoned by the client", {
        method: c.req.method,
        path: c.req.path,
        reason: `${error.name}: ${error.message}`,
      });
      return new Response(null, { status: CLIENT_GONE_STATUS });
    }
    if (bodyReadFailed(error, c)) {
      // The client's doing (an upload dropped mid-body), not the engine's: no stack, no alarm.
      log.debug("request body could not be read", {
        method: c.req.method,
        path: c.req.path,
        reason: `${error.name}: ${error.message}`,
      });
      return c.json<ErrorBody>({
        error: {
          code: "bad_request",
          message:
            "The request body could not be read: the connection ended before it was complete",
        },
      }, 400);
    }
    log.error("unhandled error in request", {
      method: c.req.method,
      path: c.req.path,
      error,
    });
    return c.json<ErrorBody>(
      { error: { code: "internal", message: "Internal server error" } },
      500,
    );
  };
}

/**
 * Whether `error` is the end of a request whose client went away: a
 * {@linkcode ClientGoneError}, or, once the request's signal aborted, that
 * abort itself (its reason, or an `AbortError`).
 */
function clientGone(error: Error, c: Context): boolean {
  if (error instanceof ClientGoneError) return true;
  const signal = c.req.raw.signal;
  return signal.aborted && (error === signal.reason || error.name === "AbortError");
}

/** What reading a request body throws when the client's connection goes away mid-body. */
const BODY_READ_ERRORS = [
  Deno.errors.BadResource,
  Deno.errors.Http,
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
  Deno.errors.UnexpectedEof,
  Deno.errors.BrokenPipe,
  Deno.errors.Interrupted,
];

/**
 * Whether `error` is a request body that could not be read because the
 * connection ended (a client aborting its upload), rather than a fault of a
 * handler: a connection error of Deno, itself or as its cause, on a request
 * that has a body.
 */
function bodyReadFailed(error: Error, c: Context): boolean {
  if (c.req.raw.body === null) return false;
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (BODY_READ_ERRORS.some((kind) => e instanceof kind)) return true;
  }
  return false;
}

/** The `notFound` handler: a JSON 404 naming the path. */
export function notFound(c: Context): Response {
  return c.json<ErrorBody>(
    { error: { code: "not_found", message: `No route for ${c.req.method} ${c.req.path}` } },
    404,
  );
}

/**
 * A handler to register last on `app` with `app.all("*", methodNotAllowed(app))`:
 * a request that reached it found no route for its method, so a path that
 * `app` serves with other methods is answered 405 `method_not_allowed` with an
 * `Allow` header naming them (RFC 9110 §15.5.6); any other path goes on to the
 * `notFound` handler. Works on a sub-app mounted with `app.route(path, sub)`.
 *
 * @example
 * ```ts
 * const app = new Hono();
 * app.post("/signal", (c) => c.json({}));
 * app.all("*", methodNotAllowed(app));
 * (await app.request("/signal")).headers.get("allow"); // "POST"
 * ```
 */
export function methodNotAllowed(app: Hono): Handler {
  let router: PatternRouter<[method: string, path: string]> | undefined;
  return function methodNotAllowed(c) {
    if (router === undefined) {
      // Built at the first request, once every route is registered; middleware (ALL) is not a method served.
      router = new PatternRouter<[string, string]>();
      for (const route of app.routes) {
        if (route.method !== "ALL") router.add("ALL", route.path, [route.method, route.path]);
      }
    }
    const base = basePath(c);
    const path = base === "/" ? c.req.path : c.req.path.slice(base.length) || "/";
    // PatternRouter takes `/orders/` for `/orders`; the app's router (strict) does not: no route.
    const slash = path.endsWith("/");
    const methods = new Set(
      router.match("ALL", path)[0]
        .filter(([[, route]]) => route.endsWith("*") || route.endsWith("/") === slash)
        .map(([[method]]) => method),
    );
    if (methods.size === 0) return c.notFound();
    if (methods.has("GET")) methods.add("HEAD");
    const allow = [...methods].sort().join(", ");
    throw new ApiError(
      405,
      "method_not_allowed",
      `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow}`,
      { headers: { Allow: allow } },
    );
  };
}
