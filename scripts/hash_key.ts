// deno-lint-ignore-file no-console
/**
 * Makes an API key and prints it with its SHA-256 hash for `http.api_key_hashes`:
 * `deno task hash-key`. Given a key (`deno task hash-key KEY`, or the key on
 * standard input, which keeps it out of shell history) prints the hash of that
 * key, refusing one shorter than {@linkcode MIN_API_KEY_LENGTH} characters: an
 * unsalted hash of a short or guessable key is reversed in seconds.
 *
 * @module
 */

import { hashApiKey } from "../config/mod.ts";

/** Fewest characters of a key this script hashes. */
export const MIN_API_KEY_LENGTH = 32;
/** Random bytes in a key this script makes: 256 bits. */
export const GENERATED_KEY_BYTES = 32;

/**
 * A key as an HTTP header carries it: printable ASCII, spaces inside allowed.
 * The server reads a header's bytes one character each (Latin-1), so any
 * other character (`é`, sent as UTF-8) arrives as others and its hash never
 * matches.
 */
const HEADER_KEY = /^[\x20-\x7e]*$/;

/**
 * Why `key` (trimmed, as the server trims the key it is given) cannot be an
 * API key, or null when it can: shorter than {@linkcode MIN_API_KEY_LENGTH},
 * or holding a character a header does not carry as written.
 *
 * @example
 * ```ts
 * apiKeyProblem("abc"); // "The key has 3 characters; …"
 * apiKeyProblem(generateApiKey()); // null
 * ```
 */
export function apiKeyProblem(key: string): string | null {
  if (key.length < MIN_API_KEY_LENGTH) {
    return `The key has ${key.length} characters; an API key must be random and at least ` +
      `${MIN_API_KEY_LENGTH} characters long (an unsalted hash of a short key is reversed ` +
      "in seconds). Run `deno task hash-key` with no key to make one.";
  }
  if (!HEADER_KEY.test(key)) {
    return "The key holds a character other than printable ASCII: a client sends it in an " +
      "HTTP header, which the API reads byte by byte, so it would never match its hash. " +
      "Run `deno task hash-key` with no key to make one.";
  }
  return null;
}

/** A new random API key: {@linkcode GENERATED_KEY_BYTES} random bytes, base64url, no padding. */
export function generateApiKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(GENERATED_KEY_BYTES));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

async function readStdin(): Promise<string> {
  const chunks: string[] = [];
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    chunks.push(chunk);
  }
  return chunks.join("").trim();
}

if (import.meta.main) {
  if (Deno.args.length > 1) {
    console.error(
      "usage: deno task hash-key [KEY]   (no KEY: make one; or pipe it on standard input)",
    );
    Deno.exit(2);
  }
  // Trimmed as the server trims the key a request presents, so the hash is the one it compares.
  let key = (Deno.args[0] ?? (Deno.stdin.isTerminal() ? "" : await readStdin())).trim();
  if (key === "" && Deno.args[0] === undefined) {
    key = generateApiKey();
    console.log(`key:  ${key}`);
    console.log(`hash: ${await hashApiKey(key)}`);
    console.error(
      "Give the key to the API's clients (Authorization: Bearer <key>) and keep it secret; " +
        "put the hash in http.api_key_hashes (env TRADEWIRE_HTTP__API_KEY_HASHES).",
    );
    Deno.exit(0);
  }
  const problem = apiKeyProblem(key);
  if (problem !== null) {
    console.error(problem);
    Deno.exit(2);
  }
  console.log(await hashApiKey(key));
}
