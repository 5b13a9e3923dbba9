/**
 * Structured JSON logging: one object a line with `level`, `time`, the
 * logger's bindings (e.g. `actor`), `message` and the caller's fields; a
 * field named like one of the others is written as `field_<name>`. Library
 * code receives a {@linkcode Logger}; only `main.ts` decides where lines go.
 *
 * @module
 */

import { CIRCULAR, redactSecrets } from "./redact.ts";

/** Log levels, least to most severe. */
export const LEVELS = ["debug", "info", "warn", "error"] as const;
/** One of {@linkcode LEVELS}. */
export type Level = typeof LEVELS[number];

/** Extra structured fields on a log line. */
export type Fields = Record<string, unknown>;

/** A structured logger. */
export interface Logger {
  /** Logs at debug level. */
  debug(msg: string, fields?: Fields): void;
  /** Logs at info level. */
  info(msg: string, fields?: Fields): void;
  /** Logs at warn level. */
  warn(msg: string, fields?: Fields): void;
  /** Logs at error level. */
  error(msg: string, fields?: Fields): void;
  /** A logger whose lines carry `bindings` too (e.g. `{ actor: "validator" }`). */
  child(bindings: Fields): Logger;
}

/**
 * A {@linkcode Logger} whose four levels call `emit` and whose `child` calls
 * `child`: the part every logger shares, whatever it writes to.
 */
export function loggerOf(
  emit: (level: Level, msg: string, fields?: Fields) => void,
  child: (bindings: Fields) => Logger,
): Logger {
  return {
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child,
  };
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. @default {"info"} */
  level?: Level;
  /** Where each JSON line goes. @default {writes to stdout} */
  write?: (line: string) => void;
  /** Fields on every line. @default {{}} */
  bindings?: Fields;
}

const encoder = new TextEncoder();
/** Keys of every line that fields may not overwrite. */
const RESERVED = new Set(["level", "time", "message"]);

/** Writes a line to stdout synchronously, so lines are never interleaved or lost at exit. */
export function writeStdout(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/**
 * Creates a JSON-lines logger. Field values whose key names a secret
 * (password, token, api key…) and passwords inside URLs are redacted.
 *
 * @example
 * ```ts
 * const log = createLogger({ level: "debug" }).child({ actor: "migrations" });
 * log.info("applied", { version: 1 });
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LEVELS.indexOf(options.level ?? "info");
  const write = options.write ?? writeStdout;
  const make = (bindings: Fields): Logger => {
    const emit = (level: Level, msg: string, fields?: Fields) => {
      if (LEVELS.indexOf(level) < min) return;
      const line: Fields = { level, time: new Date().toISOString(), ...bindings, message: msg };
      if (fields) {
        for (
          const [key, value] of Object.entries(redactSecrets(normalizeErrors(fields)) as Fields)
        ) {
          // A field never overwrites the line's own keys nor the logger's bindings (the engine's
          // name under `engine`, a migration's `engine: "postgres"`): it is kept as `field_<key>`,
          // or dropped when it repeats the bound value.
          if (RESERVED.has(key)) line[`field_${key}`] = value;
          else if (!Object.hasOwn(bindings, key)) line[key] = value;
          else if (line[key] !== value) line[`field_${key}`] = value;
        }
      }
      write(JSON.stringify(line, bigintAsText));
    };
    return loggerOf(emit, (more) => make({ ...bindings, ...more }));
  };
  return make(options.bindings ?? {});
}

/** A logger that writes nothing; for tests that do not read logs. */
export const nullLogger: Logger = createLogger({ write: () => {} });

/**
 * A logger for tests that keeps parsed lines in memory.
 *
 * @example
 * ```ts
 * const { log, lines } = memoryLogger();
 * log.warn("slow", { ms: 12 });
 * lines[0].message; // "slow"
 * ```
 */
export function memoryLogger(
  level: Level = "debug",
): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level, write: (line) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

function normalizeErrors(fields: Fields): Fields {
  const out: Fields = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] = value instanceof Error ? errorFields(value) : value;
  }
  return out;
}

/** A BigInt as its digits: JSON has no BigInt, and `JSON.stringify` throws on one. */
function bigintAsText(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * An error as plain JSON fields: name, message and the cause chain, no stack.
 * A cause met again down its own chain is written {@linkcode CIRCULAR}.
 */
export function errorFields(
  error: Error,
  seen: ReadonlySet<Error> = new Set(),
): Record<string, unknown> {
  const fields: Record<string, unknown> = { name: error.name, message: error.message };
  const chain = new Set(seen).add(error);
  if (error.cause instanceof Error) {
    fields.cause = chain.has(error.cause) ? CIRCULAR : errorFields(error.cause, chain);
  } else if (error.cause !== undefined) fields.cause = String(error.cause);
  return fields;
}
