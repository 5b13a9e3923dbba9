/**
 * Loading the configuration in tests: never from the real environment or
 * arguments unless given, expecting a refusal, and from YAML files written to
 * a scratch folder.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Config, ConfigError, loadConfig, type LoadConfigOptions } from "../config/mod.ts";

/** Loads with no env and no args unless given: tests never read the real environment. */
export function loadTestConfig(options: LoadConfigOptions = {}): Promise<Config> {
  return loadConfig({ args: [], env: {}, ...options });
}

/** Loads as {@linkcode loadTestConfig}, expecting a refusal, and returns the `ConfigError`. */
export async function loadError(options: LoadConfigOptions = {}): Promise<ConfigError> {
  try {
    await loadTestConfig(options);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error;
  }
  assert.fail(`expected the configuration to be refused: ${JSON.stringify(options)}`);
}

/** Writes `files` (name → text) into a fresh temp folder, runs `fn` with their paths, then removes it. */
export async function withFiles<T>(
  files: Record<string, string>,
  fn: (paths: Record<string, string>) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tradewire_config_test_" });
  try {
    const paths: Record<string, string> = {};
    for (const [name, text] of Object.entries(files)) {
      paths[name] = join(dir, name);
      await Deno.writeTextFile(paths[name], text);
    }
    return await fn(paths);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** {@linkcode withFiles} for one file, `user.yaml`, holding `text`. */
export function withFile<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  return withFiles({ "user.yaml": text }, (paths) => fn(paths["user.yaml"]!));
}
