// deno-lint-ignore-file no-console
/**
 * The Docker image's health check: asks `GET /api/health` of the engine at
 * the address and port its configuration gives it — `config/default.yaml`
 * (whose `http.host` is the image's `HTTP_HOST`), the file `TRADEWIRE_CONFIG`
 * names, and the environment, as the engine loads them — and exits 0 when it
 * answers 2xx, 1 otherwise. Flags given to the container's command are not
 * seen: set `http.host` and `http.port` in a file or the environment.
 *
 * @module
 */

import { type HttpConfig, loadConfig } from "../config/mod.ts";

/** How long the health check waits for the answer (ms): less than the HEALTHCHECK's 3 s. */
export const DEFAULT_HEALTH_TIMEOUT_MS = 2_000;

/** An IPv6 address of zeros only (`::`, `0:0::0`): every interface. */
const IPV6_ANY = /^[0:]+$/;

/**
 * The URL of the health route of an engine listening on `http.host` and
 * `http.port`: through the loopback interface when it listens on every
 * interface (`0.0.0.0`, `::`), else at the address or name it listens on.
 *
 * @example
 * ```ts
 * healthUrl({ host: "0.0.0.0", port: 8000 }); // "http://127.0.0.1:8000/api/health"
 * healthUrl({ host: "::", port: 9443 }); // "http://[::1]:9443/api/health"
 * ```
 */
export function healthUrl(http: Pick<HttpConfig, "host" | "port">): string {
  const bare = http.host.replace(/^\[(.*)\]$/, "$1");
  const host = bare === "0.0.0.0"
    ? "127.0.0.1"
    : !bare.includes(":")
    ? bare
    : IPV6_ANY.test(bare)
    ? "[::1]"
    : `[${bare}]`;
  return `http://${host}:${http.port}/api/health`;
}

if (import.meta.main) {
  let url: string;
  try {
    const config = await loadConfig({ args: [] });
    if (!config.http.enabled) {
      console.log("http.enabled is false: no API to ask");
      Deno.exit(0);
    }
    url = healthUrl(config.http);
  } catch (error) {
    // A ConfigError's message never shows a secret; the engine refuses this configuration too.
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(DEFAULT_HEALTH_TIMEOUT_MS) });
    await response.body?.cancel();
    console.log(`${url}: ${response.status}`);
    Deno.exit(response.ok ? 0 : 1);
  } catch (error) {
    console.error(`${url}: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}
