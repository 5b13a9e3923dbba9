/**
 * Who may call the HTTP API: API-key authentication for the trading
 * endpoints, and the guards that keep web pages in a browser out of it.
 *
 * Keys are presented as `Authorization: Bearer <key>` or `X-API-Key: <key>`
 * and compared, in constant time, against the SHA-256 hashes in
 * `http.api_key_hashes`; the keys themselves are never stored or logged.
 *
 * A page on another site can make the user's browser send "simple" requests
 * (a `text/plain` or form POST needs no CORS preflight), and a page whose DNS
 * name is rebound to 127.0.0.1 is same-origin with the engine. Command-line
 * clients (curl, scripts, strategy code) send neither `Origin` nor
 * `Sec-Fetch-Site` and address the engine by the name they connect to, so
 * {@linkcode requireSameOrigin} and {@linkcode requireLoopbackHost} refuse
 * only what a browser sends on another site's behalf. The pages of the
 * origins in `http.allowed_origins` are let in, CORS and all, by
 * {@linkcode allowCrossOrigin}.
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { verifyApiKey } from "../config/mod.ts";
import { ApiError } from "./errors.ts";

/** Options for {@linkcode requireApiKey}. */
export interface RequireApiKeyOptions {
  /**
   * Accepted key hashes. With none configured the routes need no key (the
   * production profile refuses to start without hashes), and then answer
   * only clients on this machine (a loopback peer) unless
   * `allowKeylessRemote` is set.
   */
  hashes: readonly string[];
  /**
   * Without hashes, also answer clients on other machines
   * (`http.allow_keyless_remote`).
   * @default {false}
   */
  allowKeylessRemote?: boolean;
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
 * Without hashes no key is asked for, but a client whose address is not a
 * loopback one is refused (403 `forbidden`) unless `allowKeylessRemote`.
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
    } else if (!options.allowKeylessRemote) {
      const peer = peerAddress(c);
      if (peer !== null && !isLoopbackAddress(peer)) {
        throw new ApiError(
          403,
          "forbidden",
          `The trading API has no API key (http.api_key_hashes is empty) and answers only ` +
            `clients on this machine, not ${peer}: set http.api_key_hashes, or ` +
            `http.allow_keyless_remote: true if only trusted clients can reach it`,
        );
      }
    }
    await next();
  };
}

/** Options for {@linkcode requireSameOrigin}. */
export interface RequireSameOriginOptions {
  /**
   * Origins (`https://dashboard.example.com`) whose pages may call the
   * routes besides the API's own (`http.allowed_origins`).
   * @default {[]}
   */
  allowedOrigins?: readonly string[];
}

/**
 * Middleware refusing (403 `cross_origin`) a request a browser sends on
 * behalf of a page of another origin: one whose `Origin` is neither the
 * API's own (the scheme's host and port as in `Host`) nor one of
 * `allowedOrigins`, or one without `Origin` that says `Sec-Fetch-Site:
 * cross-site` or `same-site`. A request with neither header (curl, scripts)
 * passes.
 *
 * @example
 * ```ts
 * app.use("*", requireSameOrigin({ allowedOrigins: config.http.allowed_origins }));
 * ```
 */
export function requireSameOrigin(options: RequireSameOriginOptions = {}): MiddlewareHandler {
  const allowed = new Set((options.allowedOrigins ?? []).map(normalOrigin));
  return async function sameOrigin(c, next) {
    const origin = c.req.header("origin");
    if (origin !== undefined) {
      if (!allowed.has(normalOrigin(origin)) && !isOwnOrigin(origin, requestHost(c))) {
        throw new ApiError(
          403,
          "cross_origin",
          `Cross-origin request refused: Origin ${JSON.stringify(origin)} is not this API's ` +
            `origin nor one of http.allowed_origins`,
        );
      }
    } else {
      const site = c.req.header("sec-fetch-site")?.trim().toLowerCase();
      if (site === "cross-site" || site === "same-site") {
        throw new ApiError(
          403,
          "cross_origin",
          `Cross-site request refused (Sec-Fetch-Site: ${site}): a page of another origin ` +
            `cannot call this API unless its origin is in http.allowed_origins`,
        );
      }
    }
    await next();
  };
}

/** `Access-Control-Allow-Methods` of {@linkcode allowCrossOrigin}: what the trading routes serve. */
export const DEFAULT_CORS_METHODS: readonly string[] = ["GET", "POST", "DELETE"];
/**
 * `Access-Control-Allow-Headers` of {@linkcode allowCrossOrigin}: the request
 * headers the API reads that a page cannot send without a preflight.
 */
export const CORS_ALLOW_HEADERS: readonly string[] = [
  "authorization",
  "x-api-key",
  "content-type",
  "idempotency-key",
];
/** Response headers a page may read besides the safelisted ones: a 405's and a 503's. */
export const CORS_EXPOSE_HEADERS: readonly string[] = ["Allow", "Retry-After"];
/** How long a browser may reuse a preflight's answer, s (`Access-Control-Max-Age`). */
export const DEFAULT_CORS_MAX_AGE_S = 600;

/** Options for {@linkcode allowCrossOrigin}. */
export interface AllowCrossOriginOptions {
  /**
   * Origins (`https://dashboard.example.com`) whose pages may call the
   * routes (`http.allowed_origins`), compared as {@linkcode requireSameOrigin}
   * compares them.
   * @default {[]}
   */
  allowedOrigins?: readonly string[];
  /** Methods a preflight is told the routes take. @default {DEFAULT_CORS_METHODS} */
  methods?: readonly string[];
  /** Seconds a browser may keep a preflight's answer. @default {DEFAULT_CORS_MAX_AGE_S} */
  maxAgeS?: number;
}

/**
 * Middleware letting the pages of `allowedOrigins` call the routes from a
 * browser (CORS). Every answer to a request from one of them — errors
 * included, so the page reads a 401 or a 422 — carries
 * `Access-Control-Allow-Origin: <its origin>` (never `*`, never
 * credentials: API keys are headers, not cookies); once any origin is
 * allowed, every answer carries `Vary: Origin`. Its preflight (`OPTIONS` with
 * `Access-Control-Request-Method`, which carries no API key) is answered
 * 204 here, naming the methods and headers the page may send; register it
 * before {@linkcode requireApiKey}. A request of any other origin goes on
 * unchanged, to be refused by {@linkcode requireSameOrigin}; so does an
 * `OPTIONS` that is no preflight.
 *
 * @example
 * ```ts
 * app.use("*", allowCrossOrigin({ allowedOrigins: config.http.allowed_origins }));
 * app.use("*", requireSameOrigin({ allowedOrigins: config.http.allowed_origins }));
 * ```
 */
export function allowCrossOrigin(options: AllowCrossOriginOptions = {}): MiddlewareHandler {
  const headersFor = crossOriginHeaders(options.allowedOrigins ?? []);
  const methods = (options.methods ?? DEFAULT_CORS_METHODS).join(", ");
  const maxAge = String(options.maxAgeS ?? DEFAULT_CORS_MAX_AGE_S);
  return async function crossOrigin(c, next) {
    const headers = headersFor(c.req.header("origin"));
    if (headers === null) return await next();
    // Whether this origin is allowed changes the answer: a shared cache must not give it to another.
    const { Vary: vary, ...allow } = headers;
    c.header("Vary", vary, { append: true });
    if (allow["Access-Control-Allow-Origin"] === undefined) return await next();
    for (const [name, value] of Object.entries(allow)) c.header(name, value);
    if (c.req.method === "OPTIONS" && c.req.header("access-control-request-method") !== undefined) {
      c.header("Access-Control-Allow-Methods", methods);
      c.header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS.join(", "));
      c.header("Access-Control-Max-Age", maxAge);
      return c.body(null, 204);
    }
    await next();
  };
}

/**
 * The CORS headers {@linkcode allowCrossOrigin} gives an answer (a preflight's
 * aside) to a request from `origin`, for a server answering before the
 * middleware runs (a body refused as too large): null when no origin is
 * allowed, else `Vary: Origin` and, for an allowed origin,
 * `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers`.
 *
 * @example
 * ```ts
 * const headersFor = crossOriginHeaders(["https://desk.example.com"]);
 * headersFor("https://desk.example.com");
 * // { Vary: "Origin", "Access-Control-Allow-Origin": "https://desk.example.com", ... }
 * headersFor("https://evil.example"); // { Vary: "Origin" }
 * ```
 */
export function crossOriginHeaders(
  allowedOrigins: readonly string[],
): (origin: string | undefined) => Record<string, string> | null {
  const allowed = new Set(allowedOrigins.map(normalOrigin));
  return (origin) => {
    if (allowed.size === 0) return null;
    if (origin === undefined || !allowed.has(normalOrigin(origin))) return { Vary: "Origin" };
    return {
      Vary: "Origin",
      "Access-Control-Allow-Origin": origin,
      "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS.join(", "),
    };
  };
}

/** Options for {@linkcode requireLoopbackHost}. */
export interface RequireLoopbackHostOptions {
  /**
   * Host names (`tradewire-engine`) accepted in `Host` besides the loopback
   * ones (`http.allowed_hosts`), whatever the port.
   * @default {[]}
   */
  allowedHosts?: readonly string[];
}

/**
 * Middleware refusing (421 `misdirected_request`) a request whose `Host` is
 * not a loopback name or address (`127.0.0.1`, any `127.x.y.z`, `localhost`,
 * `[::1]`, with any port) nor one of `allowedHosts`: what a page reaches
 * when its DNS name is rebound to this machine's loopback address (DNS
 * rebinding), same-origin with itself, so neither CORS nor `Origin` stops it.
 *
 * @example
 * ```ts
 * if (isLoopbackHost(config.http.host)) app.use("*", requireLoopbackHost());
 * ```
 */
export function requireLoopbackHost(options: RequireLoopbackHostOptions = {}): MiddlewareHandler {
  const allowed = new Set((options.allowedHosts ?? []).map((host) => host.toLowerCase()));
  return async function loopbackHost(c, next) {
    const host = requestHost(c);
    const name = hostName(host);
    if (name === null || (!isLoopbackHost(name) && !allowed.has(name))) {
      throw new ApiError(
        421,
        "misdirected_request",
        `Host ${JSON.stringify(host)} is not a loopback name (127.0.0.1, localhost, [::1]): ` +
          `this API answers only requests addressed to this machine by one (a DNS name ` +
          `rebound to it is refused); add the name to http.allowed_hosts to serve it`,
      );
    }
    await next();
  };
}

/**
 * Whether `host` (a host name, an IPv4 address, an IPv6 one bare or in
 * brackets) names this machine's loopback interface: `localhost`,
 * `127.0.0.0/8`, `::1` or an IPv4-mapped `127.x.y.z`. `0.0.0.0` and `::`
 * (every interface) are not loopback.
 *
 * @example
 * ```ts
 * isLoopbackHost("127.0.0.1"); // true
 * isLoopbackHost("[::1]"); // true
 * isLoopbackHost("0.0.0.0"); // false
 * ```
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (bare === "localhost") return true;
  return isLoopbackAddress(bare);
}

/** Whether `address`, an IP address as a peer's is written, is a loopback one. */
function isLoopbackAddress(address: string): boolean {
  const bare = address.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare)) return true;
  if (!bare.includes(":")) return false;
  // Written out by URL: [::1], [::ffff:7f00:1] for ::ffff:127.0.0.1.
  const url = parseUrl(`http://[${bare}]/`);
  if (url === null) return false;
  const normal = url.hostname.slice(1, -1);
  return normal === "::1" || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(normal);
}

/** The host (and port) a request is addressed to: its `Host`, else its URL's. */
function requestHost(c: Context): string {
  return c.req.header("host")?.trim() || new URL(c.req.url).host;
}

/** The host name of a `Host` value, lower case, IPv6 in brackets; null when it is not one. */
function hostName(host: string): string | null {
  if (host === "" || /[\s/?#@\\]/.test(host)) return null;
  return parseUrl(`http://${host}/`)?.hostname ?? null;
}

/** Whether `origin` is the one of a page served from `host` over HTTP or HTTPS. */
function isOwnOrigin(origin: string, host: string): boolean {
  const page = parseUrl(origin);
  const self = hostName(host) === null ? null : parseUrl(`http://${host}/`);
  if (page === null || self === null) return false;
  if (page.protocol !== "http:" && page.protocol !== "https:") return false;
  const defaultPort = page.protocol === "https:" ? "443" : "80";
  return page.hostname === self.hostname &&
    (page.port || defaultPort) === (self.port || defaultPort);
}

/** `origin` as compared: lower case, without a trailing slash. */
function normalOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, "");
}

/** The address of the client a request came from, when the server says (Deno.serve's info). */
function peerAddress(c: Context): string | null {
  const env = c.env as { remoteAddr?: { hostname?: unknown } } | undefined;
  const hostname = env?.remoteAddr?.hostname;
  return typeof hostname === "string" ? hostname : null;
}

function parseUrl(text: string): URL | null {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}
