/**
 * Errors at the HTTP edge: handlers throw, one `onError` turns what they threw
 * into `{ "error": { "code", "message" } }` with the right status — never a
 * stack trace.
 *
 * @module
 */

import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "../lib/log.ts";

/** An error a handler throws to answer with `status`, a machine `code` and a message. */
export class ApiError extends Error {
  /** The HTTP status. */
  readonly status: ContentfulStatusCode;
  /** A stable, machine-readable code, e.g. `"not_found"`. */
  readonly code: string;
  /** Extra detail placed beside code and message, e.g. validation reasons. */
  readonly details: unknown;

  /** Makes an error answered with `status` and `{ code, message, details }`. */
  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown; details?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = options?.details;
  }
}

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

/** Builds the `onError` handler; unexpected errors are logged and answered 500 without detail. */
export function errorHandler(log: Logger) {
  return function onError(error: Error, c: Context): Response {
    if (error instanceof ApiError) {
      const body: ErrorBody = { error: { code: error.code, message: error.message } };
      if (error.details !== undefined) body.error.details = error.details;
      return c.json(body, error.status);
    }
    if (error instanceof HTTPException) {
      const status = error.status;
      const code = CODES[status] ?? "http_error";
      return c.json<ErrorBody>({ error: { code, message: error.message || code } }, status);
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

/** The `notFound` handler: a JSON 404 naming the path. */
export function notFound(c: Context): Response {
  return c.json<ErrorBody>(
    { error: { code: "not_found", message: `No route for ${c.req.method} ${c.req.path}` } },
    404,
  );
}
