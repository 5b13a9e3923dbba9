/**
 * `deno task hash-key KEY` hashes a key as the API will see it in its
 * `Authorization` or `X-API-Key` header, or refuses it. A header carries
 * bytes that the server reads one character each (Latin-1): a key with a
 * character outside printable ASCII (`clé…`, sent by curl as UTF-8) arrives
 * as other characters (`clÃ©…`), so its hash, taken of the UTF-8 text, could
 * never match; it is refused. The server trims the key it is given, as the
 * task trims a key read on standard input: a key given as an argument is
 * trimmed too, so its hash matches what the server compares (it did not).
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { requireApiKey } from "../api/auth.ts";
import { errorHandler } from "../api/errors.ts";
import { nullLogger } from "../lib/log.ts";

const SCRIPT = new URL("../scripts/hash_key.ts", import.meta.url).pathname;

/** Runs scripts/hash_key.ts as `deno task hash-key` does (no permissions). */
async function hashKey(args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", SCRIPT, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout).trim(),
    stderr: decoder.decode(output.stderr),
  };
}

/** Serves one route behind the API key check on loopback; resolves with the status for `key`. */
async function statusWithKey(hash: string, rawKey: Uint8Array): Promise<number> {
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.use("*", requireApiKey({ hashes: [hash] }));
  app.get("/", (c) => c.text("ok"));
  const controller = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: controller.signal, onListen: () => {} },
    app.fetch,
  );
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    try {
      const encoder = new TextEncoder();
      const head = encoder.encode("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: ");
      const tail = encoder.encode("\r\nConnection: close\r\n\r\n");
      const request = new Uint8Array(head.length + rawKey.length + tail.length);
      request.set(head);
      request.set(rawKey, head.length);
      request.set(tail, head.length + rawKey.length);
      await conn.write(request);
      const chunks: Uint8Array[] = [];
      const buffer = new Uint8Array(4096);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
      }
      const text = new TextDecoder().decode(chunks[0] ?? new Uint8Array());
      return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    } finally {
      conn.close();
    }
  } finally {
    controller.abort();
    await server.finished;
  }
}

Deno.test("hash-key refuses a key with a character an HTTP header cannot carry as written", async () => {
  const key = "clé-".repeat(10);
  const result = await hashKey([key]);
  assert.equal(result.code, 2, result.stdout);
  assert.equal(result.stdout, "");
  assert.match(result.stderr, /printable ASCII/);
  // What a client (curl) sends for that key is not accepted under the hash of its text.
  const { hashApiKey } = await import("../config/mod.ts");
  const status = await statusWithKey(await hashApiKey(key), new TextEncoder().encode(key));
  assert.equal(status, 403);
});

Deno.test("hash-key hashes a key given with surrounding white space as the server will compare it", async () => {
  const key = "Xk9pLmQ2vB7rZq8wErT5yU1iOp3aSd6f";
  const result = await hashKey([`  ${key}\t`]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^[0-9a-f]{64}$/);
  const status = await statusWithKey(result.stdout, new TextEncoder().encode(`  ${key}\t`));
  assert.equal(status, 200);
});
