// deno-lint-ignore-file no-console
/**
 * Prints the SHA-256 hash of an API key for `http.api_key_hashes`:
 * `deno task hash-key KEY`, or the key on standard input (keeps it out of shell history).
 *
 * @module
 */

import { hashApiKey } from "../config/mod.ts";

let key = Deno.args[0];
if (key === undefined) {
  const chunks: string[] = [];
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    chunks.push(chunk);
  }
  key = chunks.join("").trim();
}
if (!key) {
  console.error("usage: deno task hash-key KEY   (or pipe the key on standard input)");
  Deno.exit(2);
}
console.log(await hashApiKey(key));
