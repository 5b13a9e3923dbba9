/**
 * The README's configuration reference table, compared mechanically with the
 * schema: every key both ways, and every default the table writes in
 * backticks with the default the loader gives (a `${VAR:-default}` cell is
 * compared by its default). Prose cells ("7 days", "empty") and the
 * per-venue rows (`exchanges.<venue>.…`) are not compared.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { loadConfig } from "../config/mod.ts";

/** What `<venue>` stands for in the table's per-venue rows. */
const VENUES = ["binance", "coinbase", "kraken", "alpaca"];
/** Sub-trees whose keys are free (documented as one row). */
const FREE = new Set(["validator.overrides", "risk.exchanges", "risk.symbols"]);

/** Every setting of `value` by its dotted key; a mapping with free keys is one setting. */
function leaves(value: unknown, path: string[] = []): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (
    value !== null && typeof value === "object" && !Array.isArray(value) &&
    !FREE.has(path.join("."))
  ) {
    for (const [key, child] of Object.entries(value)) {
      for (const [k, v] of leaves(child, [...path, key])) out.set(k, v);
    }
  } else out.set(path.join("."), value);
  return out;
}

/**
 * The table's rows: the keys its first cell names (`http.host`, or several, the
 * later ones relative to the first's section) and its default cell.
 */
async function tableRows(): Promise<{ line: number; keys: string[]; cell: string }[]> {
  const lines = (await Deno.readTextFile(new URL("../README.md", import.meta.url))).split("\n");
  const start = lines.findIndex((line) => line.startsWith("| key "));
  assert.ok(start > 0, "README has the configuration table");
  const rows = [];
  for (let i = start + 2; lines[i]?.startsWith("|"); i++) {
    const cells = lines[i]!.split(/(?<!\\)\|/).slice(1, -1).map((cell) => cell.trim());
    const names = [...cells[0]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    const parent = names[0]!.split(".").slice(0, -1);
    const keys = names.map((name, n) =>
      n === 0 || name.includes(".") ? name : [...parent, name].join(".")
    );
    rows.push({ line: i + 1, keys, cell: cells[1]! });
  }
  return rows;
}

Deno.test("README configuration table: every schema key is documented and every documented key exists", async () => {
  const defaults = leaves(await loadConfig({ args: [], env: {} }));
  const documented = new Set<string>();
  const unknown: string[] = [];
  for (const { line, keys } of await tableRows()) {
    for (const key of keys) {
      const expanded = key.includes("<venue>")
        ? VENUES.map((v) => key.replace("<venue>", v)).filter((k) => defaults.has(k))
        : [key];
      if (expanded.length === 0) unknown.push(`README.md:${line} ${key}`);
      for (const k of expanded) {
        if (defaults.has(k)) documented.add(k);
        else unknown.push(`README.md:${line} ${k}`);
      }
    }
  }
  assert.deepEqual(unknown, [], "documented keys the schema does not have");
  assert.deepEqual([...defaults.keys()].filter((k) => !documented.has(k)), [], "undocumented keys");
});

Deno.test("README configuration table: every default written in backticks is the loader's default", async () => {
  const defaults = leaves(await loadConfig({ args: [], env: {} }));
  const wrong: string[] = [];
  for (const { line, keys, cell } of await tableRows()) {
    if (keys.some((key) => key.includes("<venue>"))) continue; // per-venue prose, checked by eye
    const tokens = [...cell.replace(/\([^)]*\)/g, "").matchAll(/`([^`]+)`/g)]
      .map((m) => m[1]!.replace(/^\$\{\w+:-(.*)\}$/, "$1"));
    if (tokens.length === 0) continue; // prose ("7 days", "1 GiB", "empty")
    keys.forEach((key, n) => {
      if (FREE.has(key)) return;
      // One value for several keys ("`0`"), or one each; "`false`, paper API": the first only.
      const shared = tokens.length === 1 && !cell.includes(",");
      const token = shared ? tokens[0]! : tokens[n];
      if (token === undefined) return;
      const written = parse(token) ?? "";
      const actual = defaults.get(key);
      if (
        String(written) !== String(actual) && JSON.stringify(written) !== JSON.stringify(actual)
      ) {
        wrong.push(`README.md:${line} ${key}: table ${token}, loader ${JSON.stringify(actual)}`);
      }
    });
  }
  assert.deepEqual(wrong, []);
});
