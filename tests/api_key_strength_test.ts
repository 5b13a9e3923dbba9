/**
 * API keys are random. An unsalted SHA-256 of a short or well-known key is as
 * good as the key in clear (a hash in compose's environment or a config file
 * is reversed in seconds), and the API does not limit wrong guesses. The
 * production profile took sha256("changeme") as an API key hash, and
 * `deno task hash-key` hashed any key, `abc` included, and could not make one.
 * Now production refuses the hashes of {@linkcode WEAK_PASSWORDS}, and
 * hash-key makes a key (32 random bytes) when given none and refuses one
 * shorter than 32 characters.
 */

import assert from "node:assert/strict";
import {
  ConfigError,
  hashApiKey,
  loadConfig,
  WEAK_API_KEY_HASHES,
  WEAK_PASSWORDS,
} from "../config/mod.ts";

const SCRIPT = new URL("../scripts/hash_key.ts", import.meta.url).pathname;

/** A production configuration that is otherwise acceptable. */
const PRODUCTION_ENV = {
  TRADEWIRE_ENGINE__PROFILE: "production",
  DATABASE_URL: "postgres://tw:Xk9pLmQ2vB7r@127.0.0.1:5432/tradewire",
  TRADEWIRE_CLICKHOUSE__PASSWORD: "Zq8wErT5yU1i",
};

async function refusal(hashes: string): Promise<string> {
  try {
    await loadConfig({
      args: [],
      env: { ...PRODUCTION_ENV, TRADEWIRE_HTTP__API_KEY_HASHES: hashes },
    });
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  return "";
}

/** Runs scripts/hash_key.ts as `deno task hash-key` does (no permissions). */
async function hashKey(args: string[], stdin?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", SCRIPT, ...args],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  if (stdin !== undefined) await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout).trim(),
    stderr: new TextDecoder().decode(out.stderr).trim(),
  };
}

Deno.test("the production profile refuses the hash of a well-known password as an API key", async () => {
  // The control: a strong key's hash is accepted, so the profile is otherwise satisfied.
  const strong = await hashApiKey(crypto.randomUUID() + crypto.randomUUID());
  assert.equal(await refusal(strong), "");

  for (const weak of [...WEAK_PASSWORDS, "Changeme", "PASSWORD"]) {
    const message = await refusal(await hashApiKey(weak));
    assert.match(
      message,
      /http\.api_key_hashes: a hash is the one of a well-known password/,
      `the production profile took sha256(${JSON.stringify(weak)}) as an API key hash`,
    );
  }
  // Among good ones, in upper case too, and counted.
  const two = [strong, (await hashApiKey("admin")).toUpperCase(), await hashApiKey("secret")];
  assert.match(await refusal(two.join(",")), /2 hashes are those of a well-known password/);
  // The development profile refuses none of it.
  const dev = await loadConfig({
    args: [],
    env: { TRADEWIRE_HTTP__API_KEY_HASHES: await hashApiKey("changeme") },
  });
  assert.equal(dev.http.api_key_hashes.length, 1);
});

Deno.test("WEAK_API_KEY_HASHES holds the hashes of every WEAK_PASSWORDS entry", async () => {
  for (const weak of WEAK_PASSWORDS) {
    assert.ok(WEAK_API_KEY_HASHES.has(await hashApiKey(weak)), weak);
    assert.ok(WEAK_API_KEY_HASHES.has(await hashApiKey(weak.toUpperCase())), weak);
  }
});

Deno.test("deno task hash-key refuses a short API key instead of hashing it", async () => {
  for (const weak of ["abc", "password", "x".repeat(31)]) {
    const out = await hashKey([weak]);
    assert.equal(out.code, 2, `hash-key hashed ${JSON.stringify(weak)}: ${out.stdout}`);
    assert.equal(out.stdout, "");
    assert.match(out.stderr, new RegExp(`${weak.length} characters.*at least 32`));
  }
  const piped = await hashKey([], "abc\n");
  assert.equal(piped.code, 2, piped.stdout);
});

Deno.test("deno task hash-key hashes a key of 32 characters or more, given or piped", async () => {
  const key = "Zb3".repeat(11);
  const hash = await hashApiKey(key);
  assert.equal((await hashKey([key])).stdout, hash);
  assert.equal((await hashKey([], `${key}\n`)).stdout, hash);
});

Deno.test("deno task hash-key with no key makes a random one and prints it with its hash", async () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2; i++) {
    const out = await hashKey([]);
    assert.equal(out.code, 0, out.stderr);
    const match = /^key: +([A-Za-z0-9_-]+)\nhash: +([0-9a-f]{64})$/.exec(out.stdout);
    assert.ok(match, out.stdout);
    const [, key, hash] = match;
    // 32 bytes in base64url without padding: 43 characters.
    assert.equal(key!.length, 43);
    assert.equal(hash, await hashApiKey(key!));
    assert.match(out.stderr, /http\.api_key_hashes/);
    seen.add(key!);
    // The hash of a made key is one production accepts.
    assert.equal(await refusal(hash!), "");
  }
  assert.equal(seen.size, 2, "two runs made the same key");
});
