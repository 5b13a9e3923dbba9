/**
 * Loads Tradewire's configuration from four layers, lowest precedence first:
 *
 * 1. `config/default.yaml`, next to this module;
 * 2. optional user files named by `--config PATH`, layered in the order given
 *    (a later file beats an earlier one key by key), or else `TRADEWIRE_CONFIG`;
 * 3. environment variables: `NATS_URL`, `DATABASE_URL`, `CLICKHOUSE_URL`, then
 *    `TRADEWIRE_<SECTION>__<KEY>` (which beat the conventional ones);
 * 4. command-line flags `--section.key=value` or `--section.key value`.
 *
 * YAML string values may use `${VAR}` and `${VAR:-default}`; `$${` is a literal
 * `${`. Env and flag values are coerced per {@linkcode configSchema}; the merged
 * result is validated once and every problem is reported in one
 * {@linkcode ConfigError}.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
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

/** Prefix of environment variables that set keys: `TRADEWIRE_<SECTION>__<KEY>`. */
export const ENV_PREFIX = "TRADEWIRE_";

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
 * `"true"`; use `=` for values starting with `--`).
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
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (!arg.startsWith("--") || arg === "--") {
      problems.push({ key: arg, reason: `unexpected argument; ${FLAG_HINT}` });
      continue;
    }
    const body = arg.slice(2);
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const inline = eq === -1 ? undefined : body.slice(eq + 1);
    const next = (): string | undefined => {
      const candidate = args[i + 1];
      if (candidate === undefined || candidate.startsWith("--")) return undefined;
      i++;
      return candidate;
    };
    if (name === "print-config") {
      if (inline !== undefined) problems.push({ key: arg, reason: "takes no value" });
      flags.printConfig = true;
    } else if (name === "config") {
      const path = inline ?? next();
      if (path === undefined || path === "") {
        problems.push({ key: "--config", reason: "needs a file path" });
      } else flags.configPaths.push(path);
    } else if (!name.includes(".")) {
      problems.push({ key: `--${name}`, reason: `unknown flag; ${FLAG_HINT}` });
    } else if (name.split(".").some((part) => part === "")) {
      problems.push({ key: `--${name}`, reason: `malformed key; ${FLAG_HINT}` });
    } else {
      flags.overrides[name] = inline ?? next() ?? "true";
    }
  }
  return flags;
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
 * errors (with file and line), unset `${VAR}`s and, under the production
 * profile, insecure settings.
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
  const interpolationFailures = new Set<string>();
  let merged: Tree = {};
  for (const layer of documents) {
    const data = interpolateTree(layer, env, problems, interpolationFailures);
    merged = deepMerge(merged, data);
    for (const [path, source] of layer.positions) sources.set(path, source);
    for (const [path, source] of layer.interpolated) sources.set(path, source);
  }
  for (const override of envOverrides(env, problems)) applyOverride(merged, sources, override);
  for (const [key, value] of Object.entries(flags.overrides)) {
    applyOverride(merged, sources, { path: key.split("."), value, source: `flag --${key}` });
  }

  const result = configSchema.safeParse(merged);
  if (!result.success) {
    causes.push(result.error);
    problems.push(...issueProblems(result.error.issues, merged, sources, interpolationFailures));
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
}

async function readYamlFile(
  file: FileSpec,
  problems: ConfigProblem[],
  causes: unknown[],
): Promise<YamlLayer | undefined> {
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
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      const message = error.message.split("\n")[0];
      problems.push({
        key: `${file.label}:${line}:${col}`,
        reason: `YAML syntax error: ${message}`,
      });
      causes.push(error);
    }
    return undefined;
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (error) {
    // e.g. "Merge sources must be maps or map aliases" (`<<: *anchor` naming a list or a scalar)
    causes.push(error);
    const message = error instanceof Error ? error.message : String(error);
    problems.push({ key: file.label, reason: `YAML error: ${message}` });
    return undefined;
  }
  if (data !== null && data !== undefined && !isTree(data)) {
    problems.push({ key: file.label, reason: "expected a mapping of sections at the top level" });
    return undefined;
  }
  const positions = new Map<string, string>();
  recordPositions(doc.contents, [], (path, offset) => {
    positions.set(formatPath(path), `${file.label}:${lineCounter.linePos(offset).line}`);
  });
  return { label: file.label, data: data ?? {}, positions, interpolated: new Map() };
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
      layer.interpolated.set(
        key,
        `${position} via ${result.variables.map((v) => `\${${v}}`).join(", ")}`,
      );
      return coerce(result.value, schemaAt(path));
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
    if (value === undefined) continue;
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

function applyOverride(tree: Tree, sources: Sources, override: Override): void {
  const { path, value, source } = override;
  let node = tree;
  for (const [depth, key] of path.slice(0, -1).entries()) {
    const inner = node[key];
    if (isTree(inner)) node = inner;
    else {
      // A value turned into a section, or a section (a key of `risk.symbols`) made for this
      // override: validation reports it against this source.
      sources.set(path.slice(0, depth + 1), source);
      const created: Tree = {};
      node[key] = created;
      node = created;
    }
  }
  const last = path[path.length - 1];
  if (last === undefined) return;
  node[last] = coerce(value, schemaAt(path));
  sources.set(path, source);
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
 * Turns an env/flag string into what the schema expects: numbers, `true`/`false`,
 * comma-separated lists. Strings stay strings; a value that does not fit is left
 * as it is for validation to report.
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
      if (accepts(schema, "string")) return new Decimal(text).toFixed();
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
  if (typeof value === "string") {
    const shown = JSON.stringify(redactUrl(value));
    return shown.length > 80 ? `${shown.slice(0, 77)}…"` : shown;
  }
  return String(value);
}

function issueProblems(
  issues: readonly z.core.$ZodIssue[],
  input: Tree,
  sources: Sources,
  interpolationFailures: ReadonlySet<string>,
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
        problems.push(...issueProblems(nested, input, sources, interpolationFailures));
      }
    } else if (interpolationFailures.has(formatPath(path))) {
      continue; // already reported: the placeholder could not be expanded
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
