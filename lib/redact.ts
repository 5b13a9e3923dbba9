/**
 * Redaction of secrets before anything is printed or logged.
 *
 * @module
 */

/** What a redacted value is replaced with. */
export const REDACTED = "***";

/**
 * Key names whose values are secrets (`password`, `sslpassword`, `api_key`…),
 * matched against the whole key once normalised by {@linkcode isSecretName}
 * (lower case, `-` as `_`). An Alpaca key id (`key_id`, the `APCA-API-KEY-ID`
 * header) counts as one: it is half of the credentials and names the account.
 */
export const SECRET_KEY_PATTERN =
  /(password|passwd)$|(^|_)(pass|secret|secret_?key|token|api_?key|api_?secret|private_?key|credentials?|authorization|key_?id)$/;

/**
 * Whether a key or header name names a secret: {@linkcode SECRET_KEY_PATTERN}
 * matched whatever the case and whether words are joined by `-` or `_`.
 *
 * @example
 * ```ts
 * isSecretName("APCA-API-SECRET-KEY"); // true
 * isSecretName("x-api-key"); // true
 * isSecretName("api_key_hashes"); // false
 * ```
 */
export function isSecretName(name: string): boolean {
  return SECRET_KEY_PATTERN.test(name.toLowerCase().replaceAll("-", "_"));
}

/** Where a URL starts: its scheme and `://`. */
const URL_START = /\b([a-z][a-z0-9+.-]*):\/\//gi;
/**
 * The longest `user:password` taken to hold a `x://` of its own
 * (`postgres://tw:Zq8://pw@db`): a password of more than 1 KiB has none.
 */
const MAX_USERINFO_LENGTH = 1024;

/**
 * Characters that end a URL in free text (white space, quotes, brackets,
 * `\`): a URL met in a log message or an error ends there, so text after it
 * is kept even when it holds an `@`.
 */
const TEXT_END = /[\s"<>\\]/;

/**
 * The start of a user name and password (`user:pass`) rather than a host
 * and port (`host:5432`, `host:5432/db`, `host:`).
 */
const USER_AND_PASSWORD = /^[^:/?#]*:(?!\d*(?:[/?#]|$))/;

/** A user name and its `:`, before any `/`, `?` or `#`. */
const USER_NAME = /^[^:/?#]*:/;

/** Schemes whose userinfo without a `:` is a secret: NATS takes `token@host` as the token. */
const TOKEN_SCHEMES: ReadonlySet<string> = new Set(["nats", "tls", "ws", "wss"]);

/** A query parameter (`?`, `&` or `;`, a name, `=`, a value). */
const URL_QUERY_PARAM = /([?&;])([^=&#\s,]+)=([^&#\s,]*)/g;

/**
 * Replaces the secrets of the URLs in `text` with {@linkcode REDACTED}: the
 * password, the token of a NATS-style `token@host` URL (`nats:`, `tls:`,
 * `ws:`, `wss:`), and secret query parameters (`?password=`, `&token=`,
 * `?sslpassword=`…). Leaves text without such URLs as it is.
 *
 * A password is everything from the `:` after the user name to the last `@`
 * before the host, whatever it holds: a raw `@`, `#`, `?`, `'` or `/` (a
 * base64 password put in a URL without percent-encoding), even `x://`. In
 * free text a URL ends at white space, a quote, `<`, `>` or `\`, so an `@`
 * after it (an e-mail address) is not taken for the end of a password. A
 * string that starts with a URL is taken as a URL (a setting, a logged `url`
 * field) or a comma-separated list of them: there a password, or the user
 * name before it, may hold white space, `"` or `\` too, up to the last `@`
 * of its URL.
 *
 * @example
 * ```ts
 * redactUrl("postgres://app:hunter2@db:5432/tw"); // "postgres://app:***@db:5432/tw"
 * redactUrl("postgres://app:p@ss/w0rd@db/tw"); // "postgres://app:***@db/tw"
 * redactUrl("nats://s3cr3t@127.0.0.1:4222"); // "nats://***@127.0.0.1:4222"
 * ```
 */
export function redactUrl(text: string): string {
  const starts = [...text.matchAll(URL_START)];
  if (starts.length === 0) return redactQuery(text);
  const whole = starts[0]?.index === text.length - text.trimStart().length;
  let out = text.slice(0, starts[0]?.index ?? 0);
  for (let i = 0; i < starts.length;) {
    const start = starts[i] as RegExpExecArray;
    const scheme = start[1] ?? "";
    const from = start.index + start[0].length;
    // A `x://` met while this URL is still in its password (`postgres://tw:Zq8://pw@db`) is part
    // of it, not the start of the next URL.
    // Looked for only within MAX_USERINFO_LENGTH of the scheme: text repeating `x://` would
    // otherwise cost a look at all the text after each (quadratic).
    let next = i + 1;
    while (
      next < starts.length &&
      (starts[next]?.index ?? 0) - from <= MAX_USERINFO_LENGTH &&
      inPassword(text.slice(from, starts[next]?.index), starts[next]?.[0] ?? "")
    ) next++;
    const to = starts[next]?.index ?? text.length;
    const url = text.slice(from, to);
    const end = userinfoEnd(url, whole);
    out += `${scheme}://` + (end === -1 ? url : redactUserinfo(scheme, url.slice(0, end)) +
      url.slice(end));
    i = next;
  }
  return redactQuery(out);
}

/**
 * Whether `url` (the text after a `scheme://`, up to a later `x://`) ends in
 * a password, so that `x://` is part of it: it starts with `user:`, holds no
 * white space or quote (which end a URL in free text), no separator (`,`)
 * comes before `x://`, and no host has begun: after its last `@`, if any,
 * comes no `/`, `?` or `#` (`tw:a@b://pw@db` is one password; a host ending
 * in a scheme, `@b://`, is none).
 */
function inPassword(url: string, next: string): boolean {
  const at = url.lastIndexOf("@");
  return (at === -1 || !/[/?#]/.test(url.slice(at + 1))) && !TEXT_END.test(url) &&
    !url.endsWith(",") &&
    USER_AND_PASSWORD.test(url + next);
}

/**
 * The index of the `@` ending the userinfo of `url` (the text after `://`,
 * up to the next URL), or -1 when it has none.
 */
function userinfoEnd(url: string, whole: boolean): number {
  const textEnd = url.search(TEXT_END);
  const first = textEnd === -1 ? url : url.slice(0, textEnd);
  const at = first.lastIndexOf("@");
  if (at !== -1) {
    // A `/` before the `@` is in a password after `user:`, and after `user:1234` (a password that
    // starts with digits) unless a `?` comes before the `@`; else the host ended at the `/` and the
    // `@` is in the path or query (`wss://host:9443/stream?streams=btcusdt@trade`).
    const slash = first.indexOf("/");
    if (slash === -1 || slash > at) return at;
    const prefix = first.slice(0, slash);
    if (
      USER_AND_PASSWORD.test(first) ||
      (prefix.includes(":") && !first.slice(slash, at).includes("?"))
    ) return at;
    return prefix.lastIndexOf("@");
  }
  if (textEnd === -1 || !whole) return -1;
  // A setting whose password holds white space, `"` or `\`, or whose user name does (the URL
  // parser drops a tab or a new line, keeps a space: `postgres://tw\n:pw@db`): its userinfo ends
  // at the last `@` of its last run of text (the host and path hold none of those characters).
  const trimmed = url.replace(/[\s,]+$/, "");
  let lastRun = trimmed.length;
  while (lastRun > 0 && !TEXT_END.test(trimmed[lastRun - 1] ?? "")) lastRun--;
  const lastAt = trimmed.lastIndexOf("@");
  if (lastAt < lastRun) return -1;
  // `user:word…` before the first white space, quote or `\`: a password (`tw:hun ter2`).
  if (USER_AND_PASSWORD.test(first)) return lastAt;
  // Else that text reads as a host (`tw:`, `tw:12`) or the user name holds white space: a setting
  // whose password starts with white space, a quote, `\` or digits then a space (`tw: pw`,
  // `tw:12 ab`), or whose user name holds white space (`t w:pw`) — or prose after a URL
  // (`https://example.com down: reported by bob@example.com`). Prose holds several words; a
  // setting's userinfo holds at most one run of white space.
  const userinfo = trimmed.slice(0, lastAt);
  return USER_NAME.test(userinfo) && (userinfo.match(/\s+/g) ?? []).length <= 1 ? lastAt : -1;
}

function redactUserinfo(scheme: string, userinfo: string): string {
  const colon = userinfo.indexOf(":");
  if (colon !== -1) return `${userinfo.slice(0, colon)}:${REDACTED}`;
  return TOKEN_SCHEMES.has(scheme.toLowerCase()) && userinfo !== "" ? REDACTED : userinfo;
}

function redactQuery(text: string): string {
  return text.replace(
    URL_QUERY_PARAM,
    (match, separator: string, key: string) =>
      isSecretName(key) ? `${separator}${key}=${REDACTED}` : match,
  );
}

/** What {@linkcode redactSecrets} puts in place of an object found inside itself. */
export const CIRCULAR = "[Circular]";

/**
 * Returns a deep copy of `value` with secret-named keys ({@linkcode isSecretName})
 * replaced by {@linkcode REDACTED} and the secrets of URLs in strings redacted
 * ({@linkcode redactUrl}). An object found inside itself (a library's object
 * that points back at its owner) is copied once and then written
 * {@linkcode CIRCULAR}, so a copy always ends.
 */
export function redactSecrets(value: unknown): unknown {
  return redactWithin(value, new Set());
}

/** {@linkcode redactSecrets} of `value`, found inside the objects of `ancestors`. */
function redactWithin(value: unknown, ancestors: Set<object>): unknown {
  if (typeof value === "string") return redactUrl(value);
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) return value;
  if (ancestors.has(value)) return CIRCULAR;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return value.map((item) => redactWithin(item, ancestors));
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) {
      const secret = isSecretName(key) && inner !== undefined && inner !== null && inner !== "";
      out[key] = secret ? REDACTED : redactWithin(inner, ancestors);
    }
    return out;
  } finally {
    ancestors.delete(value);
  }
}

/**
 * `text` with every occurrence of each of `secrets` replaced by
 * {@linkcode REDACTED}, longest first (so a secret holding another is
 * replaced whole); empty secrets are ignored. For text that came from
 * elsewhere and may echo credentials back: an error page showing the
 * request's headers.
 *
 * @example
 * ```ts
 * redactValues("apca-api-secret-key: s3cr3t", ["s3cr3t"]); // "apca-api-secret-key: ***"
 * ```
 */
export function redactValues(text: string, secrets: readonly string[]): string {
  const sorted = secrets.filter((secret) => secret !== "").sort((a, b) => b.length - a.length);
  let result = text;
  for (const secret of sorted) result = result.replaceAll(secret, REDACTED);
  return result;
}
