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
 * Replaces the password of a URL with {@linkcode REDACTED}; leaves text that is
 * not a URL with credentials as it is.
 *
 * @example
 * ```ts
 * redactUrl("postgres://app:hunter2@db:5432/tw"); // "postgres://app:***@db:5432/tw"
 * ```
 */
export function redactUrl(text: string): string {
  return text.replace(
    /\b([a-z][a-z0-9+.-]*:\/\/[^/\s:@]*):([^@\s/]*)@/gi,
    (_match, prefix: string) => `${prefix}:${REDACTED}@`,
  );
}

/**
 * Returns a deep copy of `value` with secret-named keys replaced by
 * {@linkcode REDACTED} and passwords in URL strings redacted.
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
