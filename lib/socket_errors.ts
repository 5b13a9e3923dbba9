/**
 * Socket errors a client library may leave unhandled although it handles
 * the connection's loss itself.
 *
 * postgres.js flushes small writes from a `setImmediate`; when PostgreSQL
 * has just closed the connection (a restart, a proxy cut), Deno's
 * `node:net` refuses that write ("This socket has been ended by the other
 * party", `EPIPE`) and the refusal can surface as an unhandled rejection,
 * while postgres.js goes on to fail the connection's queries and reconnect.
 * `main.ts` logs such an error instead of stopping the engine for it.
 *
 * @module
 */

/**
 * Whether `error` only says that a socket's peer had gone when something was
 * written to it (`EPIPE`, or Node's "ended by the other party" refusal):
 * the connection is lost, which its client notices and handles on its own.
 *
 * @example
 * ```ts
 * isPeerGoneError(Object.assign(new Error("This socket has been ended by the other party"), {
 *   code: "EPIPE",
 * })); // true
 * isPeerGoneError(new TypeError("x is undefined")); // false
 * ```
 */
export function isPeerGoneError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as Error & { code?: unknown }).code;
  return code === "EPIPE" || error.message === "This socket has been ended by the other party";
}
