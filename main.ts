// deno-lint-ignore-file no-console
/**
 * Tradewire's entry point: `deno task start`.
 *
 * Exit codes: 0 after a graceful stop (SIGINT/SIGTERM, also one received
 * while the engine loads or starts), 1 when the engine fails (a child cannot
 * start, the root supervisor gives up, an uncaught error, shutdown takes
 * longer than `engine.shutdown_timeout_ms`), 2 for an invalid configuration.
 *
 * @module
 */

import type { Engine } from "./engine.ts";
import type { Logger } from "./lib/log.ts";

// The signal handlers come first, before the modules are loaded (a static import is evaluated
// before this module's first line): a SIGTERM during the load would otherwise end the process by
// the signal's default action (exit 143). Until the engine can be stopped, a signal is noted.
const SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];
let received: Deno.Signal | undefined;
let onSignal = (name: Deno.Signal) => {
  received ??= name;
};
const handlers = SIGNALS.map((name) => [name, () => onSignal(name)] as const);
for (const [name, handler] of handlers) Deno.addSignalListener(name, handler);

async function main(): Promise<number> {
  const { ConfigError, loadConfig, redactConfig } = await import("./config/mod.ts");
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 2;
    }
    throw error;
  }
  if (Deno.args.includes("--print-config")) {
    console.log(JSON.stringify(redactConfig(config), null, 2));
    return 0;
  }

  const { createLogger } = await import("./lib/log.ts");
  const log: Logger = createLogger({
    level: config.log.level,
    bindings: { engine: config.engine.name },
  });
  const starting = new AbortController();
  let engine: Engine | undefined;
  let forced: ReturnType<typeof setTimeout> | undefined;
  let failed = false;
  const stop = (reason: string) => {
    if (forced !== undefined) {
      // A stop under way (a signal's) became a failure: the engine records and publishes exit
      // code 1 unless it already has. While it starts, it asks `failed` when it records.
      if (failed) engine?.stop({ failed });
      return;
    }
    forced = setTimeout(() => {
      log.error("shutdown took too long; exiting", {
        timeout_ms: config.engine.shutdown_timeout_ms,
      });
      Deno.exit(1);
    }, config.engine.shutdown_timeout_ms);
    if (engine) engine.stop({ failed });
    else starting.abort(new Error(reason));
  };
  onSignal = (name) => {
    log.info("signal received", { signal: name });
    stop(`${name} received while starting`);
  };
  // An uncaught error or unhandled rejection (a library's event without a listener) stops the
  // engine as a failure would, instead of ending the process on the spot with a stack trace.
  const onUncaught = (error: unknown) => {
    log.error("uncaught error; engine stopping", { error });
    failed = true;
    stop("uncaught error while starting");
  };
  const { connectionLossMessage } = await import("./lib/socket_errors.ts");
  const onUnhandled = (error: unknown) => {
    // A connection loss its client library handles by itself is logged; anything else stops.
    const loss = connectionLossMessage(error);
    if (loss !== null) {
      log.warn(loss, { error });
      return;
    }
    onUncaught(error);
  };
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    onUnhandled(event.error);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    onUnhandled(event.reason);
  });
  if (received !== undefined) onSignal(received);

  const stoppedEarly = () => {
    clearTimeout(forced);
    log.info("engine start cancelled");
    return failed ? 1 : 0;
  };
  if (starting.signal.aborted) return stoppedEarly();
  const { startEngine } = await import("./engine.ts");
  if (starting.signal.aborted) return stoppedEarly();
  try {
    engine = await startEngine(config, { log, signal: starting.signal, failed: () => failed });
  } catch (error) {
    clearTimeout(forced);
    if (starting.signal.aborted) return failed ? 1 : 0;
    log.error("engine could not start", { error });
    return 1;
  }
  // A stop that came after the supervisors were up, while the run was being recorded,
  // aborted nothing: stop now.
  if (starting.signal.aborted) engine.stop({ failed });
  const code = await engine.closed();
  clearTimeout(forced);
  for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
  return failed ? 1 : code;
}

Deno.exit(await main());
