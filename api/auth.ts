/**
 * API-key authentication for the trading endpoints. Keys are presented as
 * `Authorization: Bearer <key>` or `X-API-Key: <key>` and compared, in
 * constant time, against the SHA-256 hashes in `http.api_key_hashes`; the
 * keys themselves are never stored or logged.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { verifyApiKey } from "../config/mod.ts";
import { ApiError } from "./errors.ts";

/** Options for {@linkcode requireApiKey}. */
export interface RequireApiKeyOptions {
  /**
   * Accepted key hashes. With none configured every request passes — the
   * production profile refuses to start without hashes, so this only happens
   * in development.
   */
  hashes: readonly string[];
}

/** The key a request presents, or null. */
export function presentedKey(authorization: string | undefined, header: string | undefined) {
  if (header) return header.trim();
  const match = /^Bearer\s+(.+)$/i.exec(authorization ?? "");
  return match ? match[1]!.trim() : null;
}

/**
 * Middleware refusing requests without a valid API key: 401 `unauthorized`
 * when no key is presented, 403 `forbidden` when the key is not accepted.
 *
 * @example
 * ```ts
 * app.use("/api/v1/trading/*", requireApiKey({ hashes: config.http.api_key_hashes }));
 * ```
 */
export function requireApiKey(options: RequireApiKeyOptions): MiddlewareHandler {
  return async function apiKey(c, next) {
    if (options.hashes.length > 0) {
      const key = presentedKey(c.req.header("authorization"), c.req.header("x-api-key"));
      if (key === null) {
        throw new ApiError(
          401,
          "unauthorized",
          "An API key is required (Authorization: Bearer <key>)",
        );
      }
      if (!(await verifyApiKey(key, options.hashes))) {
        throw new ApiError(403, "forbidden", "The API key is not accepted");
      }
    }
    await next();
  };
}
