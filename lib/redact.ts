/**
 * Redaction of secrets before anything is printed or logged.
 *
 * @module
 */

/** What a redacted value is replaced with. */
export const REDACTED = "***";

/** Key names whose values are secrets, matched case-insensitively against the whole key. */
export const SECRET_KEY_PATTERN =
  /(^|_|-)(password|passwd|pass|secret|secret_?key|token|api_?key|api_?secret|private_?key|credentials?|authorization)$/i;

/**
 * A URL's scheme and userinfo: everything from `//` to the last `@` before the
 * host (a password may hold a raw `@`, `#`, `?` or `'`; URL parsers split at
 * the last `@`). It stops at a `/` (the path), at white space and at `"`, `<`,
 * `>` and `\` (the end of a quoted or bracketed URL in a log line).
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*):\/\/([^\s/"<>\\]*)@/gi;

/** Schemes whose userinfo without a `:` is a secret: NATS takes `token@host` as the token. */
const TOKEN_SCHEMES: ReadonlySet<string> = new Set(["nats", "tls", "ws", "wss"]);

/** A query parameter (`?`, `&` or `;`, a name, `=`, a value). */
const URL_QUERY_PARAM = /([?&;])([^=&#\s,]+)=([^&#\s,]*)/g;

/**
 * Replaces the secrets of the URLs in `text` with {@linkcode REDACTED}: the
 * password (all of it up to the last `@` before the host), the token of a
 * NATS-style `token@host` URL (`nats:`, `tls:`, `ws:`, `wss:`), and secret
 * query parameters (`?password=`, `&token=`, `?sslpassword=`…). Leaves text
 * without such URLs as it is.
 *
 * @example
 * ```ts
 * redactUrl("postgres://app:hunter2@db:5432/tw"); // "postgres://app:***@db:5432/tw"
 * redactUrl("postgres://app:p@ss@db/tw"); // "postgres://app:***@db/tw"
 * redactUrl("nats://s3cr3t@127.0.0.1:4222"); // "nats://***@127.0.0.1:4222"
 * ```
 */
export function redactUrl(text: string): string {
  return text.replace(URL_USERINFO, (match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(":");
    if (colon !== -1) return `${scheme}://${userinfo.slice(0, colon)}:${REDACTED}@`;
    return TOKEN_SCHEMES.has(scheme.toLowerCase()) && userinfo !== ""
      ? `${scheme}://${REDACTED}@`
      : match;
  }).replace(
    URL_QUERY_PARAM,
    (match, separator: string, key: string) =>
      SECRET_KEY_PATTERN.test(key) || /password$/i.test(key)
        ? `${separator}${key}=${REDACTED}`
        : match,
  );
}

/**
 * Returns a deep copy of `value` with secret-named keys replaced by
 * {@linkcode REDACTED} and the secrets of URLs in strings redacted
 * ({@linkcode redactUrl}).
 */
export function redactSecrets(value: unknown): unknown {
  if (typeof value === "string") return redactUrl(value);
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    const secret = SECRET_KEY_PATTERN.test(key) && inner !== undefined && inner !== null &&
      inner !== "";
    out[key] = secret ? REDACTED : redactSecrets(inner);
  }
  return out;
}
