// deno-lint-ignore-file no-console
/**
 * Tradewire's entry point: `deno task start`.
 *
 * Exit codes: 0 after a graceful stop (SIGINT/SIGTERM), 1 when the engine
 * fails (a child cannot start, the root supervisor gives up, shutdown takes
 * longer than `engine.shutdown_timeout_ms`), 2 for an invalid configuration.
 *
 * @module
 */

import { ConfigError, loadConfig, redactConfig } from "./config/mod.ts";
import { createLogger } from "./lib/log.ts";
import { startEngine } from "./engine.ts";

async function main(): Promise<number> {
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

  const log = createLogger({ level: config.log.level, bindings: { engine: config.engine.name } });
  const starting = new AbortController();
  let engine: Awaited<ReturnType<typeof startEngine>> | undefined;
  let forced: ReturnType<typeof setTimeout> | undefined;
  const onSignal = (name: Deno.Signal) => () => {
    log.info("signal received", { signal: name });
    if (forced !== undefined) return;
    forced = setTimeout(() => {
      log.error("shutdown took too long; exiting", {
        timeout_ms: config.engine.shutdown_timeout_ms,
      });
      Deno.exit(1);
    }, config.engine.shutdown_timeout_ms);
    if (engine) engine.stop();
    else starting.abort(new Error(`${name} received while starting`));
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((name) => [name, onSignal(name)] as const);
  for (const [name, handler] of handlers) Deno.addSignalListener(name, handler);

  try {
    engine = await startEngine(config, { log, signal: starting.signal });
  } catch (error) {
    if (starting.signal.aborted) return 0;
    log.error("engine could not start", { error });
    return 1;
  }
  // A signal that came after the supervisors were up, while the run was being recorded,
  // aborted nothing: stop now.
  if (starting.signal.aborted) engine.stop();
  const code = await engine.closed();
  clearTimeout(forced);
  for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
  return code;
}

Deno.exit(await main());
