/**
 * Loads Tradewire's configuration from four layers, lowest precedence first:
 *
 * 1. `config/default.yaml`, next to this module;
 * 2. optional user files named by `--config PATH`, layered in the order given
 *    (a later file beats an earlier one key by key), or else `TRADEWIRE_CONFIG`;
 * 3. environment variables: `NATS_URL`, `DATABASE_URL`, `CLICKHOUSE_URL`, then
 *    `TRADEWIRE_<SECTION>__<KEY>` (which beat the conventional ones); an empty
 *    one sets nothing, and Kubernetes' and Docker's service links
 *    (`TRADEWIRE_SERVICE_HOST`, `TRADEWIRE_PORT_8000_TCP`…) are no settings;
 * 4. command-line flags `--section.key=value` or `--section.key value`.
 *
 * YAML string values may use `${VAR}` and `${VAR:-default}`; `$${` is a literal
 * `${`. Env and flag values are coerced per {@linkcode configSchema}; the merged
 * result is validated once and every problem is reported in one
 * {@linkcode ConfigError}. A problem never shows a secret: a secret key's
 * value, a URL's password (a URL setting without a `scheme://` is described by
 * its length), the value of an argument the command line does not take, or
 * the text a YAML error is about (it names the key and line instead).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
} from "yaml";
import type { z } from "zod";
import { isSecretName, REDACTED, redactSecrets, redactUrl } from "../lib/redact.ts";
import { Decimal } from "../trading/money.ts";
import { type Config, configSchema } from "./schema.ts";

/** Absolute path of `config/default.yaml`, the lowest layer. */
export const DEFAULT_CONFIG_FILE: string = fileURLToPath(
  new URL("./default.yaml", import.meta.url),
);

/** Environment variable naming the user config file when `--config` is not given. */
export const CONFIG_ENV_VAR = "TRADEWIRE_CONFIG";

/**
 * Prefix of environment variables that set keys: `TRADEWIRE_<SECTION>__<KEY>`.
 * An empty one sets nothing (as an empty `NATS_URL` does): compose's
 * `${VAR:-}` gives one for a variable its user left unset, which must not
 * overwrite the files. A key is set to an empty value in a file or by a flag
 * (`--http.api_key_hashes=`).
 */
export const ENV_PREFIX = "TRADEWIRE_";

/**
 * Names that Kubernetes gives the pods of a namespace for a Service named
 * `tradewire` or `tradewire-<name>` (`TRADEWIRE_SERVICE_HOST`,
 * `TRADEWIRE_SERVICE_PORT`, `TRADEWIRE_SERVICE_PORT_<PORT NAME>`,
 * `TRADEWIRE_NATS_PORT_4222_TCP_ADDR`…), as Docker's links did: no settings.
 * A Service's name ends with a letter or digit, so a setting's name
 * (`TRADEWIRE_HTTP__PORT`, `__` before its key) is never one.
 */
const SERVICE_LINK =
  /^TRADEWIRE_(?:[A-Z0-9_]*[A-Z0-9]_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)$/;

/**
 * A service link's `<NAME>_PORT` (`TRADEWIRE_PORT=tcp://10.96.12.34:8000`),
 * told from a mistyped setting by its value, a `<protocol>://` URL: a
 * `TRADEWIRE_HTTP_PORT=8001` is still refused.
 */
const SERVICE_LINK_PORT = /^TRADEWIRE_(?:[A-Z0-9_]*[A-Z0-9]_)?PORT$/;
const SERVICE_LINK_PORT_VALUE = /^(?:tcp|udp|sctp):\/\//;

/** Whether the variable `name` is a Kubernetes or Docker service link, not a setting. */
function isServiceLink(name: string, value: string): boolean {
  return SERVICE_LINK.test(name) ||
    (SERVICE_LINK_PORT.test(name) && SERVICE_LINK_PORT_VALUE.test(value));
}

/** Conventional environment variables and the key each sets (below `TRADEWIRE_*`). */
export const CONVENTIONAL_ENV: Readonly<Record<string, string>> = {
  NATS_URL: "nats.url",
  DATABASE_URL: "postgres.url",
  CLICKHOUSE_URL: "clickhouse.url",
};

/** One thing wrong with the configuration. */
export interface ConfigProblem {
  /** The dotted key (`http.port`), or the file, variable or argument at fault. */
  key: string;
  /** What is wrong, e.g. `expected an integer from 1 to 65535, got "abc"`. */
  reason: string;
  /** Where the value came from, e.g. `env TRADEWIRE_HTTP__PORT`, when known. */
  source?: string;
}

/**
 * Thrown when the configuration cannot be loaded. The message lists every
 * problem, one a line; {@linkcode ConfigError.problems} has them as data.
 *
 * @example
 * ```ts
 * try {
 *   await loadConfig({ args: ["--http.port=abc"], env: {} });
 * } catch (error) {
 *   if (error instanceof ConfigError) error.problems[0]?.key; // "http.port"
 * }
 * ```
 */
export class ConfigError extends Error {
  /** Every problem found, in the order reported. */
  readonly problems: readonly ConfigProblem[];

  /** Builds the message from `problems`; pass the underlying error as `cause`. */
  constructor(problems: readonly ConfigProblem[], options?: ErrorOptions) {
    super(formatProblems(problems), options);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

function formatProblems(problems: readonly ConfigProblem[]): string {
  const lines = problems.map((problem) =>
    `  ${problem.key}: ${problem.reason}${problem.source ? ` (from ${problem.source})` : ""}`
  );
  return ["Invalid configuration:", ...lines].join("\n");
}

function configError(problems: readonly ConfigProblem[], causes: readonly unknown[]): ConfigError {
  if (causes.length === 0) return new ConfigError(problems);
  const cause = causes.length === 1 ? causes[0] : new AggregateError(causes, "Several causes");
  return new ConfigError(problems, { cause });
}

// ---------------------------------------------------------------------------
// Command line

/** What {@linkcode cliFlags} found in the command line. */
export interface CliFlags {
  /**
   * The user config files from `--config PATH` or `--config=PATH`, in the order
   * given: each is layered over the ones before it.
   */
  configPaths: string[];
  /** Whether `--print-config` was given (main prints the redacted config and exits). */
  printConfig: boolean;
  /** Key overrides by dotted path, e.g. `{ "http.port": "9000" }`; the last of repeats wins. */
  overrides: Record<string, string>;
}

/**
 * Parses the command line: `--config PATH` (repeatable), `--print-config` and
 * `--section.key=value` / `--section.key value` (a flag with no value is
 * `"true"`, except a secret key's, which is refused; use `=` for values
 * starting with `--`). An unknown flag right after a flag that takes a value
 * is named by its position and length: it may be that value.
 *
 * @throws {ConfigError} listing every argument it does not understand.
 * @example
 * ```ts
 * cliFlags(["--config", "prod.yaml", "--http.port=9000", "--print-config"]);
 * // { configPaths: ["prod.yaml"], printConfig: true, overrides: { "http.port": "9000" } }
 * ```
 */
export function cliFlags(args: readonly string[]): CliFlags {
  const problems: ConfigProblem[] = [];
  const flags = parseFlags(args, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return flags;
}

const FLAG_HINT = "settings are given as --section.key=value";

function parseFlags(args: readonly string[], problems: ConfigProblem[]): CliFlags {
  const flags: CliFlags = { configPaths: [], printConfig: false, overrides: {} };
  // The flag before this argument, when it takes a value but got none because this argument
  // starts with `--`: this argument may be its value (a password starting with `--`).
  let wanting: { flag: string; key: boolean } | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const after = wanting;
    wanting = undefined;
    if (!arg.startsWith("--") || arg === "--") {
      problems.push({
        key: unexpectedArgument(arg, i),
        reason: `unexpected argument; ${FLAG_HINT}`,
      });
      continue;
    }
    const body = arg.slice(2);
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const inline = eq === -1 ? undefined : body.slice(eq + 1);
    const next = (): string | undefined => {
      const candidate = args[i + 1];
      if (candidate === undefined) return undefined;
      if (candidate.startsWith("--")) {
        wanting = { flag: `--${name}`, key: name.includes(".") || name === "config" };
        return undefined;
      }
      i++;
      return candidate;
    };
    const known = name === "print-config" || name === "config" ||
      (name.includes(".") && schemaAt(name.split(".")) !== undefined);
    if (after !== undefined && !known && (after.key || !name.includes("."))) {
      // Not a flag this command line takes, right after a key (or an unknown flag) wanting a value:
      // it may be that value, a secret, so it is named by position and length only (and takes no
      // value along). After an unknown flag, a malformed key (`--http..port=1`) is named as one.
      problems.push({
        key: `argument ${i + 1} (${arg.length} characters, not shown)`,
        reason: `unknown flag after ${after.flag}, which takes a value; ` +
          `a value starting with -- is given as ${after.flag}=value`,
      });
    } else if (name === "print-config") {
      if (inline !== undefined) problems.push({ key: "--print-config", reason: "takes no value" });
      flags.printConfig = true;
    } else if (name === "config") {
      const path = inline ?? next();
      if (path === undefined || path === "") {
        problems.push({ key: "--config", reason: "needs a file path" });
      } else flags.configPaths.push(path);
    } else if (!name.includes(".")) {
      // Its value (`--database-url URL`, `--api-key KEY`) goes with it, unshown: it may be a secret.
      if (inline === undefined) next();
      problems.push({ key: `--${name}`, reason: `unknown flag; ${FLAG_HINT}` });
    } else if (name.split(".").some((part) => part === "")) {
      if (inline === undefined) next();
      problems.push({ key: `--${name}`, reason: `malformed key; ${FLAG_HINT}` });
    } else {
      const value = inline ?? next();
      if (value === undefined && isSecretName(name.split(".").at(-1) ?? "")) {
        // A secret is never "true": the flag lost its value (`--nats.password --Xk9…`).
        problems.push({
          key: `--${name}`,
          reason: `needs a value; a value starting with -- is given as --${name}=value`,
        });
      } else flags.overrides[name] = value ?? "true";
    }
  }
  return flags;
}

/** A flag with one dash (`-v`, `-nats.password=…`) or a key (`nats.password=…`), up to its `=`. */
const FLAG_LIKE = /^(?:-[A-Za-z][\w.-]*(?==|$)|[A-Za-z][\w-]*(?:\.[\w-]+)+(?==))/;

/**
 * How an argument the command line does not take is named in the error,
 * without the value it may carry (a password after a `=`, or a secret left
 * over after a flag): a flag with one dash or a `key=` up to its `=`
 * (`-v`, `nats.password=…`), any other by its position and length.
 */
function unexpectedArgument(arg: string, index: number): string {
  if (arg === "--") return arg;
  const name = FLAG_LIKE.exec(arg)?.[0];
  if (name !== undefined) return arg.length > name.length ? `${name}=…` : name;
  return `argument ${index + 1} (${arg.length} characters, not shown)`;
}

// ---------------------------------------------------------------------------
// Loading

/** Options for {@linkcode loadConfig}. */
export interface LoadConfigOptions {
  /** Command-line arguments. @default {Deno.args} */
  args?: readonly string[] | undefined;
  /** Environment variables. @default {Deno.env.toObject()} */
  env?: Record<string, string | undefined> | undefined;
  /** The lowest layer. @default {DEFAULT_CONFIG_FILE} */
  defaultFile?: string | undefined;
}

/**
 * Loads, merges, coerces and validates the configuration.
 *
 * @throws {ConfigError} listing every bad key with its dotted path, the reason
 * and where the value came from; also for a missing named file, YAML syntax
 * errors and warnings such as an unknown tag (with file, line and key),
 * unresolved aliases, unset `${VAR}`s, a decimal key's number with an absurd
 * exponent and, under the production profile, insecure settings.
 * @example
 * ```ts
 * const config = await loadConfig({
 *   args: ["--http.port=9000"],
 *   env: { DATABASE_URL: "postgres://app:s3cret@db:5432/tw" },
 * });
 * config.http.port; // 9000
 * ```
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<Config> {
  const args = options.args ?? Deno.args;
  const env = options.env ?? Deno.env.toObject();
  const defaultFile = options.defaultFile ?? DEFAULT_CONFIG_FILE;
  const problems: ConfigProblem[] = [];
  const causes: unknown[] = [];

  // Stage 1: the command line and the files.
  const flags = parseFlags(args, problems);
  const files: FileSpec[] = [{
    path: defaultFile,
    label: defaultFile === DEFAULT_CONFIG_FILE ? "config/default.yaml" : defaultFile,
  }];
  const envFile = env[CONFIG_ENV_VAR];
  if (flags.configPaths.length > 0) {
    // Several are layered like the user file over the defaults: `deno task replay --config
    // mine.yaml` runs the replay sample with mine.yaml's keys on top.
    for (const path of flags.configPaths) files.push({ path, label: path, namedBy: "--config" });
  } else if (envFile !== undefined && envFile !== "") {
    files.push({ path: envFile, label: envFile, namedBy: CONFIG_ENV_VAR });
  }
  const documents: YamlLayer[] = [];
  for (const file of files) {
    const layer = await readYamlFile(file, problems, causes);
    if (layer !== undefined) documents.push(layer);
  }

  // Stage 2: merge the layers that could be read, then validate; a bad flag or an unreadable file
  // is reported together with every bad key of the rest.
  const sources = new Sources();
  // Keys whose value could not be expanded or converted, already reported: validation skips them.
  const reported = new Set<string>();
  let merged: Tree = {};
  for (const layer of documents) {
    for (const key of layer.inexact) reported.add(key);
    const data = interpolateTree(layer, env, problems, reported);
    merged = deepMerge(merged, data);
    for (const [path, source] of layer.positions) sources.set(path, source);
    for (const [path, source] of layer.interpolated) sources.set(path, source);
  }
  const overrides = [
    ...envOverrides(env, problems),
    ...Object.entries(flags.overrides).map(([key, value]) => ({
      path: key.split("."),
      value,
      source: `flag --${key}`,
    })),
  ];
  for (const override of overrides) {
    for (const problem of applyOverride(merged, sources, override, reported)) {
      reported.add(problem.key);
      problems.push(problem);
    }
  }

  const result = configSchema.safeParse(merged);
  if (!result.success) {
    causes.push(result.error);
    problems.push(...issueProblems(result.error.issues, merged, sources, reported));
  }
  if (problems.length > 0 || !result.success) throw configError(problems, causes);
  return result.data;
}

type Tree = Record<string, unknown>;
type Path = ReadonlyArray<string | number>;

interface FileSpec {
  path: string;
  label: string;
  namedBy?: string;
}

interface YamlLayer {
  label: string;
  data: Tree;
  /** Dotted path → `file:line` of every key and list item. */
  positions: Map<string, string>;
  /** Dotted path → source of values produced by interpolation (filled in later). */
  interpolated: Map<string, string>;
  /** Dotted paths of decimal keys written as numbers a float does not hold, already reported. */
  inexact: ReadonlySet<string>;
}

async function readYamlFile(
  file: FileSpec,
  problems: ConfigProblem[],
  causes: unknown[],
): Promise<YamlLayer | undefined> {
  const before = problems.length;
  let text: string;
  try {
    text = await Deno.readTextFile(file.path);
  } catch (error) {
    causes.push(error);
    const namedBy = file.namedBy ? ` (named by ${file.namedBy})` : "";
    const reason = error instanceof Deno.errors.NotFound
      ? `config file not found${namedBy}`
      : `cannot read config file${namedBy}: ${error instanceof Error ? error.message : error}`;
    problems.push({ key: file.label, reason });
    return undefined;
  }
  const lineCounter = new LineCounter();
  // `merge`: YAML 1.1's `<<: *anchor` merge keys, which YAML 1.2 (yaml@2's default) leaves out.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, merge: true });
  // yaml's messages quote the text at fault, which may be a secret (`password: *Xk9…` is an alias,
  // `|Xk9…` a block scalar header, `!Xk9…` a tag): a problem names the key and line instead.
  const spans = keySpans(doc.contents);
  const yamlProblem = (offset: number, reason: string): ConfigProblem => {
    const { line, col } = lineCounter.linePos(offset);
    const key = keyAt(spans, offset);
    return {
      key: `${file.label}:${line}:${col}`,
      reason: `YAML syntax error${key === undefined ? "" : ` in ${key}`}: ${reason}`,
    };
  };
  // Warnings too: an unknown tag (`password: !Xk9…`) would load as an empty value.
  for (const error of [...doc.errors, ...doc.warnings]) {
    problems.push(yamlProblem(error.pos[0], yamlReason(error)));
    causes.push(error);
  }
  for (const alias of unresolvedAliases(doc)) {
    problems.push(yamlProblem(
      alias.range?.[0] ?? 0,
      "an alias (*name) with no anchor (&name) before it; a value starting with * must be quoted",
    ));
  }
  for (const alias of recursiveAliases(doc)) {
    problems.push(yamlProblem(
      alias.range?.[0] ?? 0,
      "an alias (*name) inside the value its anchor (&name) names: a value cannot hold itself",
    ));
  }
  if (problems.length > before) return undefined;
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (error) {
    // e.g. "Merge sources must be maps or map aliases" (`<<: *anchor` naming a list or a scalar);
    // what follows a `: ` is the text at fault, not shown.
    causes.push(error);
    const message = (error instanceof Error ? error.message : String(error)).split(": ")[0];
    problems.push({ key: file.label, reason: `YAML error: ${message}` });
    return undefined;
  }
  if (data !== null && data !== undefined && !isTree(data)) {
    problems.push({ key: file.label, reason: "expected a mapping of sections at the top level" });
    return undefined;
  }
  const inexact = new Set<string>();
  inexactDecimals(doc, doc.contents, [], (path, number) => {
    const key = formatPath(path);
    inexact.add(key);
    problems.push({
      key,
      reason: `the number ${number.source} reads as the float ${number.value}: write a decimal ` +
        `as a string when it has more than ${MAX_FLOAT_DIGITS} significant digits or lies ` +
        `beyond a float's range ("${number.source}")`,
      source: `${file.label}:${lineCounter.linePos(number.offset).line}`,
    });
  });
  const positions = new Map<string, string>();
  recordPositions(doc.contents, [], (path, offset) => {
    positions.set(formatPath(path), `${file.label}:${lineCounter.linePos(offset).line}`);
  });
  return { label: file.label, data: data ?? {}, positions, interpolated: new Map(), inexact };
}

/**
 * Significant digits any decimal keeps through a float (IEEE 754's DBL_DIG),
 * as the schema counts them for a decimal key written as a number.
 */
const MAX_FLOAT_DIGITS = 15;

/**
 * Calls `found` for each YAML number at a decimal key (one taking text or a
 * number: `risk.max_order_qty`, `portfolio.starting_cash`…) whose float is
 * not the decimal its text spells: `1.0000000000000001` reads as 1,
 * `1e-400` as 0, a value the schema would then take as written. Follows
 * aliases and merge keys (`<<: *anchor`) to the keys they fill.
 */
function inexactDecimals(
  doc: Document,
  node: unknown,
  path: Path,
  found: (path: Path, number: { source: string; value: number; offset: number }) => void,
  depth = 0,
): void {
  if (depth > 64) return; // an alias cycle: yaml reports it
  const resolved = isAlias(node) ? node.resolve(doc) : node;
  if (isScalar(resolved)) {
    const { value, source } = resolved;
    if (
      typeof value === "number" && typeof source === "string" && NUMBER.test(source) &&
      isDecimalKey(path) && (!new Decimal(source).eq(new Decimal(value)) || underflows(source))
    ) {
      found(path, { source, value, offset: resolved.range?.[0] ?? 0 });
    }
  } else if (isMap(resolved)) {
    for (const pair of resolved.items) {
      const name = isScalar(pair.key) ? pair.key.value : pair.key;
      if (typeof name === "symbol") {
        // A merge key brings its mappings' keys here.
        const sources = isSeq(pair.value) ? pair.value.items : [pair.value];
        for (const item of sources) inexactDecimals(doc, item, path, found, depth + 1);
      } else inexactDecimals(doc, pair.value, [...path, String(name)], found, depth + 1);
    }
  } else if (isSeq(resolved)) {
    resolved.items.forEach((item, index) =>
      inexactDecimals(doc, item, [...path, index], found, depth + 1)
    );
  }
}

/** Whether the key at `path` is a decimal: it takes text and numbers (kept as their text). */
function isDecimalKey(path: Path): boolean {
  const schema = schemaAt(path);
  return schema !== undefined && accepts(schema, "string") && accepts(schema, "number");
}

/** Where a key's pair lies in the text: from its key to the end of its value. */
interface KeySpan {
  path: Path;
  start: number;
  end: number;
}

/**
 * The span of every mapping key of `node` that the schema knows, outer before
 * inner. A broken document's "keys" may be a secret (`password: Xk9…: x`
 * parses as a mapping under `password`), so a key the schema does not know
 * (but a merge key `<<`), and anything under a setting that is not a section
 * or a list, is left out: an error there is named by the known key holding it.
 */
function keySpans(node: unknown, path: Path = [], spans: KeySpan[] = []): KeySpan[] {
  if (!isSection(path)) return spans;
  if (isMap(node)) {
    for (const pair of node.items) {
      const name = isScalar(pair.key) ? pair.key.value : pair.key;
      const key = typeof name === "symbol" ? "<<" : String(name); // `<<`: a merge key
      if (typeof name !== "symbol" && schemaAt([...path, key]) === undefined) continue;
      const start = isNode(pair.key) ? pair.key.range?.[0] : undefined;
      const end = isNode(pair.value) ? pair.value.range?.[1] : undefined;
      if (start !== undefined) {
        spans.push({ path: [...path, key], start, end: Math.max(end ?? start, start + 1) });
      }
      keySpans(pair.value, [...path, key], spans);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => keySpans(item, [...path, index], spans));
  }
  return spans;
}

/** Whether the schema has keys or items under `path`: an object, a record or a list. */
function isSection(path: Path): boolean {
  const schema = schemaAt(path);
  return schema !== undefined && ["object", "record", "array"].includes(defOf(schema).type);
}

/** The dotted path of the innermost key whose pair holds `offset`, if any. */
function keyAt(spans: readonly KeySpan[], offset: number): string | undefined {
  let found: KeySpan | undefined;
  for (const span of spans) {
    if (
      span.start <= offset && offset < span.end && span.path.length >= (found?.path.length ?? 0)
    ) {
      found = span;
    }
  }
  return found === undefined ? undefined : formatPath(found.path);
}

/** Codes whose yaml messages are fixed text, never a quote of the document. */
const PLAIN_YAML_MESSAGES: ReadonlySet<string> = new Set([
  "BAD_INDENT",
  "BLOCK_AS_IMPLICIT_KEY",
  "DUPLICATE_KEY",
  "MISSING_CHAR",
  "MULTILINE_IMPLICIT_KEY",
  "TAB_AS_INDENT",
]);

/** What is wrong, by code, for yaml messages that quote the text at fault. */
const YAML_REASONS: Readonly<Record<string, string>> = {
  ALIAS_PROPS: "an alias (*name) cannot have an anchor or a tag",
  BAD_ALIAS: "a malformed anchor (&name) or alias (*name)",
  BAD_COLLECTION_TYPE: "a tag (!) that does not fit its value; a value starting with ! " +
    "must be quoted",
  BAD_DIRECTIVE: "a bad or unsupported directive (%)",
  BAD_DQ_ESCAPE: "an invalid escape sequence in a double-quoted value; use single quotes, " +
    "or \\\\ for a backslash",
  BAD_PROP_ORDER: "an anchor (&) or a tag (!) in the wrong place",
  BAD_SCALAR_START: "a value cannot start with this character unquoted; quote the value",
  TAG_RESOLVE_FAILED: "an unknown tag (!); a value starting with ! must be quoted",
  UNEXPECTED_TOKEN: "unexpected characters; a value starting with *, &, !, |, >, %, @ or ` " +
    "must be quoted",
};

/** A yaml error's reason without the text it quotes (which may be a secret). */
function yamlReason(error: { code: string; message: string }): string {
  if (PLAIN_YAML_MESSAGES.has(error.code)) return error.message.split("\n")[0] ?? "";
  return YAML_REASONS[error.code] ?? `malformed YAML (${error.code})`;
}

/** The aliases (`*name`) of `doc` that name no anchor before them. */
function unresolvedAliases(doc: Document): Alias[] {
  const found: Alias[] = [];
  visit(doc, {
    Alias: (_key, alias) => {
      if (alias.resolve(doc) === undefined) found.push(alias);
    },
  });
  return found;
}

/**
 * The aliases (`*name`) of `doc` that lie inside the value their anchor names
 * (`risk: &a` then `symbols: *a`): a structure holding itself, which no
 * setting can be (and which would send the loader round it forever).
 */
function recursiveAliases(doc: Document): Alias[] {
  const found: Alias[] = [];
  visit(doc, {
    Alias: (_key, alias) => {
      const target = alias.resolve(doc)?.range;
      const at = alias.range?.[0];
      if (target && at !== undefined && target[0] <= at && at < target[2]) found.push(alias);
    },
  });
  return found;
}

function recordPositions(
  node: unknown,
  path: Path,
  record: (path: Path, offset: number) => void,
): void {
  if (isMap(node)) {
    for (const pair of node.items) {
      // A merge key (`<<`) is no key of its own: the keys it brings are placed at this mapping.
      if (isScalar(pair.key) && typeof pair.key.value === "symbol") continue;
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const childPath = [...path, key];
      const offset = isNode(pair.key) ? pair.key.range?.[0] : undefined;
      if (offset !== undefined) record(childPath, offset);
      recordPositions(pair.value, childPath, record);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => {
      const offset = isNode(item) ? item.range?.[0] : undefined;
      if (offset !== undefined) record([...path, index], offset);
      recordPositions(item, [...path, index], record);
    });
  }
}

// ---------------------------------------------------------------------------
// Interpolation: ${VAR}, ${VAR:-default}, $${ for a literal ${

const PLACEHOLDER = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{/g;

interface Interpolated {
  value: string;
  /** The variables substituted (or defaulted); none means only escapes were undone. */
  variables: string[];
  errors: string[];
}

/** Expands placeholders in one string. */
function interpolate(text: string, env: Record<string, string | undefined>): Interpolated {
  const variables: string[] = [];
  const errors: string[] = [];
  const value = text.replace(PLACEHOLDER, (match, name?: string, fallback?: string) => {
    if (match === "$${") return "${";
    if (name === undefined) {
      errors.push("malformed placeholder: use ${VAR}, ${VAR:-default} or $${ for a literal ${");
      return match;
    }
    variables.push(name);
    const set = env[name];
    if (fallback !== undefined) return set === undefined || set === "" ? fallback : set;
    if (set === undefined) {
      errors.push(`environment variable ${name} is not set and \${${name}} has no default`);
      return match;
    }
    return set;
  });
  return { value, variables, errors };
}

function interpolateTree(
  layer: YamlLayer,
  env: Record<string, string | undefined>,
  problems: ConfigProblem[],
  failures: Set<string>,
): Tree {
  const walk = (value: unknown, path: Path): unknown => {
    if (typeof value === "string") {
      if (!value.includes("${")) return value;
      const result = interpolate(value, env);
      const key = formatPath(path);
      const position = layer.positions.get(key) ?? layer.label;
      if (result.errors.length > 0) {
        failures.add(key);
        for (const reason of result.errors) problems.push({ key, reason, source: position });
        return value;
      }
      if (result.variables.length === 0) return result.value;
      const via = `${position} via ${result.variables.map((v) => `\${${v}}`).join(", ")}`;
      layer.interpolated.set(key, via);
      const coerced = coerceOrRefuse(result.value, schemaAt(path));
      if (!coerced.refused) return coerced.value;
      failures.add(key);
      problems.push({ key, reason: coerced.reason, source: via });
      return value;
    }
    if (Array.isArray(value)) return value.map((item, index) => walk(item, [...path, index]));
    if (isTree(value)) {
      const out: Tree = {};
      for (const [key, inner] of Object.entries(value)) out[key] = walk(inner, [...path, key]);
      return out;
    }
    return value;
  };
  return walk(layer.data, []) as Tree;
}

// ---------------------------------------------------------------------------
// Environment and flag overrides

interface Override {
  path: string[];
  value: string;
  source: string;
}

function envOverrides(
  env: Record<string, string | undefined>,
  problems: ConfigProblem[],
): Override[] {
  const overrides: Override[] = [];
  for (const [name, key] of Object.entries(CONVENTIONAL_ENV)) {
    const value = env[name];
    if (value !== undefined && value !== "") {
      overrides.push({ path: key.split("."), value, source: `env ${name}` });
    }
  }
  const names = Object.keys(env).filter((name) =>
    name.startsWith(ENV_PREFIX) && name !== CONFIG_ENV_VAR
  ).sort();
  for (const name of names) {
    const value = env[name];
    // Empty: unset (compose's `${VAR:-}` for a variable left unset), as for the conventional ones.
    if (typeof value !== "string" || value === "" || isServiceLink(name, value)) continue;
    const parts = name.slice(ENV_PREFIX.length).split("__");
    if (parts.some((part) => part === "")) {
      problems.push({ key: name, reason: "malformed name; use TRADEWIRE_<SECTION>__<KEY>" });
      continue;
    }
    const path: string[] = [];
    for (const part of parts) path.push(envKey(path, part));
    overrides.push({ path, value, source: `env ${name}` });
  }
  return overrides;
}

/**
 * The key an environment variable's `part` names under `parent`. Keys are
 * lower case, except under a mapping with free keys (`risk.exchanges`,
 * `risk.symbols`, `validator.overrides`), whose keys a variable's name, upper
 * case by convention, cannot spell: such a key is taken in the first of these
 * cases that its mapping accepts — exchange names lower case and symbols upper
 * case (`BINANCE/BTC-USDT` → `binance/BTC-USDT`), as written, upper case,
 * lower case — and as written when none fits (the error then shows it so).
 */
function envKey(parent: Path, part: string): string {
  const record = schemaAt(parent);
  const def = record === undefined ? undefined : defOf(record);
  const keys = def?.type === "record" ? def.keyType : undefined;
  if (keys === undefined) return part.toLowerCase();
  const slash = part.indexOf("/");
  const candidates = [
    slash === -1 ? part.toLowerCase() : part.slice(0, slash).toLowerCase() +
      part.slice(slash).toUpperCase(),
    part,
    part.toUpperCase(),
    part.toLowerCase(),
  ];
  return candidates.find((candidate) => keys.safeParse(candidate).success) ?? part;
}

/**
 * Sets an override's key. Returns the problems it finds: its value refused
 * (it is then kept raw), or a section above its key that a lower layer gave
 * a value that is not a mapping (`TRADEWIRE_RISK=x`, a file's `risk.symbols:
 * AAPL`), which the override replaces with a section of its own, so that
 * validation no longer sees it. Keys in `reported` are already reported.
 */
function applyOverride(
  tree: Tree,
  sources: Sources,
  override: Override,
  reported: ReadonlySet<string>,
): ConfigProblem[] {
  const { path, value, source } = override;
  const problems: ConfigProblem[] = [];
  let node = tree;
  for (const [depth, key] of path.slice(0, -1).entries()) {
    const inner = Object.hasOwn(node, key) ? node[key] : undefined; // not Object.prototype's
    if (isTree(inner)) node = inner;
    else {
      const above = path.slice(0, depth + 1);
      if (inner !== undefined && inner !== null && isMapping(above)) {
        const was = sources.get(above);
        const problem: ConfigProblem = {
          key: formatPath(above),
          reason: `expected a mapping of keys, got ${describe(inner, above)}; ${source} ` +
            "sets a key under it",
        };
        if (was !== undefined) problem.source = was;
        if (!reported.has(problem.key)) problems.push(problem);
      }
      // A value turned into a section, or a section (a key of `risk.symbols`) made for this
      // override: validation reports it against this source.
      sources.set(above, source);
      const created: Tree = {};
      node[key] = created;
      node = created;
    }
  }
  const last = path[path.length - 1];
  if (last === undefined) return problems;
  const coerced = coerceOrRefuse(value, schemaAt(path));
  node[last] = coerced.refused ? value : coerced.value;
  sources.set(path, source);
  if (coerced.refused) problems.push({ key: formatPath(path), reason: coerced.reason, source });
  return problems;
}

/** Whether the schema has a mapping of keys at `path`: a section or a record. */
function isMapping(path: Path): boolean {
  const schema = schemaAt(path);
  return schema !== undefined && ["object", "record"].includes(defOf(schema).type);
}

// ---------------------------------------------------------------------------
// Coercion by the schema's leaf types

interface Def {
  type: string;
  innerType?: z.ZodType;
  keyType?: z.ZodType;
  valueType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
}

const WRAPPERS = new Set([
  "default",
  "prefault",
  "optional",
  "nullable",
  "readonly",
  "catch",
  "nonoptional",
]);

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** The schema under defaults, optionals and transforms. */
function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (;;) {
    const def = defOf(current);
    if (WRAPPERS.has(def.type) && def.innerType) current = def.innerType;
    else if (def.type === "pipe" && def.in) current = def.in;
    else return current;
  }
}

/** The schema of the key at `path`, or `undefined` for an unknown key. */
function schemaAt(path: Path): z.ZodType | undefined {
  let current: z.ZodType = configSchema;
  for (const key of path) {
    const def = defOf(unwrap(current));
    if (
      def.type === "object" && def.shape && typeof key === "string" && Object.hasOwn(def.shape, key)
    ) {
      current = def.shape[key] as z.ZodType;
    } else if (def.type === "array" && def.element && typeof key === "number") {
      current = def.element;
    } else if (def.type === "record" && def.valueType && typeof key === "string") {
      current = def.valueType; // a mapping with free keys (`risk.symbols`): any key has its type
    } else return undefined;
  }
  return unwrap(current);
}

/** The schema of the values of the record (a mapping with free keys) at `path`, if it is one. */
function recordValues(path: Path): z.ZodType | undefined {
  const schema = schemaAt(path);
  const def = schema ? defOf(schema) : undefined;
  return def?.type === "record" ? def.valueType : undefined;
}

/** The keys a section has, for "did you mean" hints. */
function keysAt(path: Path): string[] {
  const schema = schemaAt(path);
  const shape = schema ? defOf(schema).shape : undefined;
  return shape ? Object.keys(shape) : [];
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Whether `schema` (under wrappers and pipes, through unions) takes values of `type`. */
function accepts(schema: z.ZodType, type: string): boolean {
  const def = defOf(unwrap(schema));
  if (def.type === type) return true;
  const options = def.type === "union" ? (def as { options?: z.ZodType[] }).options ?? [] : [];
  return options.some((option) => accepts(option, type));
}

/**
 * Largest exponent of a number written for a decimal key (`1e1000`), in either
 * direction: its exact text is written out digit by digit, so `1e100000000`
 * would take half a minute and 100 MB. Far beyond any decimal the keys hold
 * (`NUMERIC(20,8)`).
 */
const MAX_DECIMAL_EXPONENT = 1000;

/** {@linkcode coerce}'s result, or why the value was refused. */
type Coerced = { refused: false; value: unknown } | { refused: true; reason: string };

/** {@linkcode coerce}, with a value it refuses (a RangeError) turned into a reason. */
function coerceOrRefuse(value: string, schema: z.ZodType | undefined): Coerced {
  try {
    return { refused: false, value: coerce(value, schema) };
  } catch (error) {
    if (error instanceof RangeError) return { refused: true, reason: error.message };
    throw error;
  }
}

/**
 * Turns an env/flag string into what the schema expects: numbers, `true`/`false`,
 * comma-separated lists. Strings stay strings; a value that does not fit is left
 * as it is for validation to report.
 *
 * @throws {RangeError} for a decimal key's number whose exponent is beyond
 * {@linkcode MAX_DECIMAL_EXPONENT}.
 */
function coerce(value: string, schema: z.ZodType | undefined): unknown {
  if (schema === undefined) return value;
  const def = defOf(schema);
  switch (def.type) {
    case "number":
      return NUMBER.test(value.trim()) ? Number(value.trim()) : value;
    case "boolean": {
      const lower = value.trim().toLowerCase();
      return lower === "true" ? true : lower === "false" ? false : value;
    }
    case "union": {
      // e.g. a limit that is a decimal or null: "null" means null; a number-shaped value is the
      // number — or, where the key also takes text (a decimal, kept as its text), its exact
      // decimal text: "10000000.12345678" stays whole, "1e6" is "1000000", never a float.
      const text = value.trim();
      if (text === "null" && accepts(schema, "null")) return null;
      if (!NUMBER.test(text)) return value;
      if (accepts(schema, "string")) return decimalText(text);
      return accepts(schema, "number") ? Number(text) : value;
    }
    case "array": {
      const element = def.element ? unwrap(def.element) : undefined;
      return value.split(",").map((item) => item.trim()).filter((item) => item !== "")
        .map((item) => coerce(item, element));
    }
    default:
      return value;
  }
}

/** The exact decimal text of a number (`1e6` → `"1000000"`), refusing an absurd exponent first. */
function decimalText(text: string): string {
  const decimal = new Decimal(text); // keeps the exponent: cheap whatever its size
  const beyond = !decimal.isFinite() || underflows(text);
  if (beyond || Math.abs(decimal.e) > MAX_DECIMAL_EXPONENT) {
    throw new RangeError(
      `expected a decimal with an exponent from -${MAX_DECIMAL_EXPONENT} to ` +
        `${MAX_DECIMAL_EXPONENT}, got a number with exponent ${beyond ? "beyond that" : decimal.e}`,
    );
  }
  return decimal.toFixed();
}

/**
 * Whether the number `text` is not zero but reads as zero: its exponent
 * (`1e-99999999999999999999`) is below what a decimal holds, which has no
 * exponent to report.
 */
function underflows(text: string): boolean {
  return new Decimal(text).isZero() && /[1-9]/.test(text.replace(/[eE].*$/, ""));
}

// ---------------------------------------------------------------------------
// Merging and provenance

function isTree(value: unknown): value is Tree {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Deep-merges mappings; lists and scalars replace. An empty (null) section keeps the lower one. */
function deepMerge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const lower = out[key];
    if (isTree(lower) && isTree(value)) out[key] = deepMerge(lower, value);
    else if (isTree(lower) && value === null) continue;
    else out[key] = value;
  }
  return out;
}

function formatPath(path: Path): string {
  let out = "";
  for (const part of path) {
    out += typeof part === "number" ? `[${part}]` : out === "" ? part : `.${part}`;
  }
  return out;
}

/** Where each key's value came from; a key set later forgets its children's sources. */
class Sources {
  #map = new Map<string, string>();

  set(path: Path | string, source: string): void {
    const key = typeof path === "string" ? path : formatPath(path);
    for (const existing of this.#map.keys()) {
      if (existing.startsWith(`${key}.`) || existing.startsWith(`${key}[`)) {
        this.#map.delete(existing);
      }
    }
    this.#map.set(key, source);
  }

  /** The source of `path` or of its nearest ancestor with one. */
  get(path: Path): string | undefined {
    for (let length = path.length; length > 0; length--) {
      const source = this.#map.get(formatPath(path.slice(0, length)));
      if (source !== undefined) return source;
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// Validation issues → problems

function valueAt(tree: unknown, path: Path): unknown {
  let node = tree;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<string | number, unknown>)[key];
  }
  return node;
}

/** Keys whose values are not secret but whose bad values may be: a raw API key among hashes. */
const SECRET_BY_MISTAKE: ReadonlySet<string> = new Set(["api_key_hashes"]);

/** Describes a bad value for a message without revealing secrets. */
function describe(value: unknown, path: Path): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null (an empty value)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  const last = [...path].reverse().find((part) => typeof part === "string");
  if (last !== undefined && isSecretName(last) && value !== "") {
    return `a ${typeof value} (${REDACTED})`;
  }
  // Where a secret is often put by mistake (the API key instead of its hash): the length only.
  if (last !== undefined && SECRET_BY_MISTAKE.has(last) && typeof value === "string") {
    return `a string of ${value.length} characters`;
  }
  if (last !== undefined && URL_KEY.test(last) && typeof value === "string") {
    return describeUrls(value);
  }
  // A section read as text is most often its keys with a colon left out (`nats:` then
  // `password hunter2` on the next line): the length only.
  if (typeof value === "string" && isMapping(path)) {
    return `a string of ${value.length} characters (not shown: a section's text may hold a ` +
      "secret; is a key's colon missing?)";
  }
  if (typeof value === "string") {
    const shown = JSON.stringify(redactUrl(value));
    return shown.length > 80 ? `${shown.slice(0, 77)}…"` : shown;
  }
  return String(value);
}

/** Keys holding URLs (`nats.url`, `exchanges.binance.ws_url`…), which may carry a password. */
const URL_KEY = /(^|_)url$/;

/** The start of a URL: a scheme and `://`. */
const SCHEME_START = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * Describes a bad URL setting (or comma-separated list of them) with its
 * secrets redacted. Only text whose every part starts with `scheme://` is
 * shown: the redactor finds the password of a URL by its scheme, so without
 * one (`tw:pw@host`, `postgres:/tw:pw@db`, libpq's `host=db password=pw`), or
 * when its password still shows, the value is described by its length.
 */
function describeUrls(value: string): string {
  const parts = value.split(",").map((part) => part.trim()).filter((part) => part !== "");
  const shown = parts.length > 0 &&
    parts.every((part) => SCHEME_START.test(part) && !showsPassword(part));
  if (!shown) {
    return `a string of ${value.length} characters that is not a scheme:// URL ` +
      "(not shown: it may hold a password)";
  }
  const text = JSON.stringify(redactUrl(value));
  return text.length > 80 ? `${text.slice(0, 77)}…"` : text;
}

/**
 * Whether redacting the URL `part` (which starts with `scheme://`) would
 * leave what may be a password in it: the text from the `:` after the user
 * name to the last `@`, or without a `:` all of it (a token), still there.
 */
function showsPassword(part: string): boolean {
  const rest = part.slice(part.indexOf("://") + 3);
  const at = rest.lastIndexOf("@");
  if (at === -1) return false;
  const colon = rest.indexOf(":");
  const secret = colon !== -1 && colon < at ? rest.slice(colon + 1, at) : rest.slice(0, at);
  return secret !== "" && redactUrl(part).includes(secret);
}

function issueProblems(
  issues: readonly z.core.$ZodIssue[],
  input: Tree,
  sources: Sources,
  reported: ReadonlySet<string>,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const push = (path: Path, reason: string) => {
    const source = sources.get(path);
    problems.push(
      source === undefined ? { key: formatPath(path), reason } : {
        key: formatPath(path),
        reason,
        source,
      },
    );
  };
  for (const issue of issues) {
    const path = issue.path.filter((part): part is string | number => typeof part !== "symbol");
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const hint = suggest(key, keysAt(path));
        const what = path.length === 0 ? "unknown section" : "unknown key";
        push([...path, key], hint ? `${what}, did you mean ${hint}?` : what);
      }
    } else if (issue.code === "invalid_key") {
      const reasons = issue.issues.map((inner) => inner.message).join("; ");
      push(path, `bad key: ${reasons || issue.message}`);
      // The schema does not look under a bad key: check the value too, so its problems show now.
      const values = recordValues(path.slice(0, -1));
      const checked = values?.safeParse(valueAt(input, path));
      if (checked !== undefined && !checked.success) {
        const nested = checked.error.issues.map((inner) => ({
          ...inner,
          path: [...path, ...inner.path],
        }));
        problems.push(...issueProblems(nested, input, sources, reported));
      }
    } else if (reported.has(formatPath(path))) {
      continue; // already reported: the placeholder could not be expanded, or the value converted
    } else if (issue.code === "custom" && issue.params?.complete === true) {
      push(path, issue.message);
    } else {
      const value = valueAt(input, path);
      let reason = `${issue.message}, got ${describe(value, path)}`;
      const source = sources.get(path) ?? "";
      if (
        issue.code === "invalid_type" && issue.expected === "string" &&
        !source.startsWith("env ") &&
        !source.startsWith("flag ") && (typeof value === "number" || typeof value === "boolean")
      ) {
        reason += "; quote it in YAML to keep it a string";
      }
      push(path, reason);
    }
  }
  return problems;
}

/** The closest known key within a few edits (one per three characters), if any. */
function suggest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Edits (insert, delete, substitute, swap two neighbours) turning `a` into `b`. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    const above = rows[i - 1] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((above[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (above[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, (rows[i - 2]?.[j - 2] ?? 0) + 1);
      }
      row[j] = best;
    }
    rows.push(row);
  }
  return rows[a.length]?.[b.length] ?? 0;
}

// ---------------------------------------------------------------------------
// Redaction

/**
 * A copy of `config` safe to print or log: passwords, tokens and API keys are
 * replaced by {@linkcode REDACTED}, as are passwords inside URLs (userinfo and
 * `?password=` parameters) and NATS tokens in `token@host` URLs. API key
 * hashes are shown.
 *
 * @example
 * ```ts
 * const shown = redactConfig(config) as Config;
 * shown.postgres.url; // "postgres://app:***@db:5432/tw"
 * ```
 */
export function redactConfig(config: Config): unknown {
  return redactSecrets(config);
}
