/**
 * Query parameters as the API reads them: each given once.
 *
 * @module
 */

import { ApiError } from "./errors.ts";

/**
 * The query parameters `params` (as Hono's `c.req.queries()` gives them),
 * each given once: a parameter given more than once
 * (`status=filled&status=cancelled`) is a 400 naming it, never half-read.
 *
 * @example
 * ```ts
 * singleParams({ symbol: ["AAPL"] }); // { symbol: "AAPL" }
 * singleParams({ symbol: ["AAPL", "MSFT"] }); // throws ApiError 400
 * ```
 */
export function singleParams(params: Record<string, string[]>): Record<string, string> {
  const once: Record<string, string> = {};
  for (const [key, values] of Object.entries(params)) {
    if (values.length !== 1) {
      throw new ApiError(
        400,
        "bad_request",
        `Parameter ${JSON.stringify(key)} is given ${values.length} times; give it once` +
          (key === "status" ? " (several statuses: status=a,b)" : ""),
      );
    }
    once[key] = values[0]!;
  }
  return once;
}
