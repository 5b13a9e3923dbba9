import assert from "node:assert/strict";
import { connectNats } from "../adapters/nats.ts";
import { waitForPostgres } from "../adapters/postgres.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import { isSecretName, redactSecrets, redactUrl } from "../lib/redact.ts";
import { freePort } from "./_nats_server.ts";
import { deadline, waitFor } from "./_helpers.ts";

Deno.test("redactUrl hides a URL password up to the last @ before the host", () => {
  assert.equal(redactUrl("postgres://app:hunter2@db:5432/tw"), "postgres://app:***@db:5432/tw");
  assert.equal(
    redactUrl("postgres://app:p@ss@127.0.0.1:5432/tw"),
    "postgres://app:***@127.0.0.1:5432/tw",
  );
  assert.equal(redactUrl("https://:p@@s@ch:8443"), "https://:***@ch:8443");
  // Characters a password may hold raw, which a URL parser takes as part of it.
  for (const password of ["abc#123", "a?b", "it's", "x#y?z@w"]) {
    assert.equal(
      redactUrl(`postgres://app:${password}@db:5432/tw`),
      "postgres://app:***@db:5432/tw",
    );
  }
  // An @ in a path or query, or in another JSON string, is no password.
  assert.equal(redactUrl("https://host/path?email=a@b.com"), "https://host/path?email=a@b.com");
  assert.equal(
    redactUrl('{"url":"postgres://u:pw@h/db","mail":"x@y"}'),
    '{"url":"postgres://u:***@h/db","mail":"x@y"}',
  );
  assert.equal(
    redactUrl("connect failed: postgres://app:a@b@db/tw (ECONNREFUSED) mail me@example.com"),
    "connect failed: postgres://app:***@db/tw (ECONNREFUSED) mail me@example.com",
  );
});

Deno.test("redactUrl hides a password holding /, white space, a quote or a backslash", () => {
  // A base64 password put in the URL without percent-encoding: such a URL does not even parse.
  assert.equal(
    redactUrl("postgres://tw:Zm9v+YmFy/YmF6==@db.example.com:5432/tw"),
    "postgres://tw:***@db.example.com:5432/tw",
  );
  assert.equal(redactUrl("nats://tw:1234/abc@h:4222"), "nats://tw:***@h:4222");
  // A setting or a logged URL field: the password runs to the last @ of its URL.
  for (const password of ["hun ter2", 'p"w0rd', "back\\slash", 'a/b c"d']) {
    assert.equal(
      redactUrl(`postgres://tw:${password}@127.0.0.1:5432/tw`),
      "postgres://tw:***@127.0.0.1:5432/tw",
    );
  }
  assert.equal(
    redactUrl("nats://a:b c@h1:4222, nats://t@h2,nats://u:x/y z@h3"),
    "nats://a:***@h1:4222, nats://***@h2,nats://u:***@h3",
  );
  assert.deepEqual(redactSecrets({ url: "postgres://tw:hun ter2@db/tw" }), {
    url: "postgres://tw:***@db/tw",
  });
});

Deno.test("redactUrl takes a scheme:// inside a password for part of it, not a second URL", () => {
  assert.equal(redactUrl("postgres://tw:Zq8://pw@db:5432/tw"), "postgres://tw:***@db:5432/tw");
  assert.equal(redactUrl("postgres://tw:a://b://pw@db/tw"), "postgres://tw:***@db/tw");
  assert.equal(
    redactUrl("connect postgres://tw:Zq8://pw@db/tw failed, mail me@example.com"),
    "connect postgres://tw:***@db/tw failed, mail me@example.com",
  );
  // A second URL after a separator or a host (with or without a port) is one.
  assert.equal(redactUrl("nats://h1:4222,nats://u:pw@h2"), "nats://h1:4222,nats://u:***@h2");
  assert.equal(
    redactUrl("https://example.com: see https://u:pw@h"),
    "https://example.com: see https://u:***@h",
  );
});

Deno.test("redactUrl hides the password of a setting whose user name holds white space", () => {
  assert.equal(redactUrl("postgres://tw\n:pw@db:5432/tw"), "postgres://tw\n:***@db:5432/tw");
  assert.equal(redactUrl("postgres://t w:pw@db:5432/tw"), "postgres://t w:***@db:5432/tw");
  assert.equal(redactUrl("postgres:// tw:pw@db:5432/tw"), "postgres:// tw:***@db:5432/tw");
});

// Review 37: the password of a setting that starts with white space, a quote, a backslash, or
// digits then a space was printed (the text before it read as `host:` or `host:12`); the URL
// parser accepts all of these (new URL(...).password is "%20pw", "%22abc", ...).
Deno.test("redactUrl hides a setting's password that starts with white space, a quote, a backslash, or digits then a space", () => {
  for (const password of [" pw", '"abc', "\\pw", "1 2", "12 ab", "\tx"]) {
    const url = `postgres://tw:${password}@db:5432/tw`;
    assert.equal(redactUrl(url), "postgres://tw:***@db:5432/tw", `leaked: ${JSON.stringify(url)}`);
    assert.deepEqual(redactSecrets({ url }), { url: "postgres://tw:***@db:5432/tw" });
  }
});

// Review 37: a x:// after an @ in the password started a second URL, whose text was printed.
Deno.test("redactUrl hides a password holding an @ before a scheme://", () => {
  assert.equal(redactUrl("postgres://tw:a@b://Zq8pw@db:5432/tw"), "postgres://tw:***@db:5432/tw");
});

// Review 37: prose after a URL holding ": " and an e-mail address was taken for a setting whose
// user name holds white space, and mangled (`https://example.com down:***@example.com`).
Deno.test("redactUrl keeps prose after a URL that holds ': ' and an e-mail address", () => {
  for (
    const text of [
      "https://example.com down: reported by bob@example.com",
      "https://status.alpaca.markets says: degraded, see ops@alpaca.markets",
      "wss://ws-feed.exchange.coinbase.com closed: 1006, email alerts@tradewire.io",
    ]
  ) {
    assert.equal(redactUrl(text), text);
    assert.deepEqual(redactSecrets({ detail: text }), { detail: text });
  }
});

Deno.test("redactUrl keeps the text after a URL, and an @ in a path or query", () => {
  assert.equal(
    redactUrl("connect postgres://app:a/b@db/tw failed, mail me@example.com"),
    "connect postgres://app:***@db/tw failed, mail me@example.com",
  );
  for (
    const text of [
      "https://example.com: connection refused, write to a@b.com",
      "https://example.com:8443 failed, contact me@example.com",
      "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@depth@100ms",
      "wss://stream.binance.com/stream?streams=btcusdt@trade",
      "https://host:8443/path?email=a@b.com",
    ]
  ) assert.equal(redactUrl(text), text);
});

Deno.test("redactUrl hides the token of a NATS-style token@host URL, not a plain user name", () => {
  assert.equal(redactUrl("nats://s3cr3tTOKEN@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
  assert.equal(
    redactUrl("nats://tok@n1:4222,nats://u:pw@n2:4222,tls://t@k@n3"),
    "nats://***@n1:4222,nats://u:***@n2:4222,tls://***@n3",
  );
  assert.equal(redactUrl("wss://tok@ws.example/x"), "wss://***@ws.example/x");
  assert.equal(redactUrl("postgres://postgres@db/tw"), "postgres://postgres@db/tw");
  assert.equal(redactUrl("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
});

Deno.test("redactUrl hides secret query parameters", () => {
  assert.equal(
    redactUrl("postgres://db/tw?sslpassword=pem&sslmode=require&token=t1"),
    "postgres://db/tw?sslpassword=***&sslmode=require&token=***",
  );
  assert.deepEqual(redactSecrets({ url: "nats://t0k@h:1", password: "x" }), {
    url: "nats://***@h:1",
    password: "***",
  });
});

Deno.test("secret names are matched whatever their case and whether - or _ joins their words", () => {
  const { log, lines } = memoryLogger();
  log.info("request", {
    headers: {
      "x-api-key": "ApiKeyR12x",
      "APCA-API-SECRET-KEY": "AlpSecretR12x",
      "APCA-API-KEY-ID": "AlpKeyIdR12x",
      Authorization: "Bearer ApiKeyR12x",
      "content-type": "application/json",
    },
    api_key_hashes: ["a".repeat(64)],
  });
  const text = JSON.stringify(lines);
  assert.doesNotMatch(text, /ApiKeyR12x|AlpSecretR12x|AlpKeyIdR12x/);
  assert.match(text, /"content-type":"application\/json"/);
  assert.match(text, /"api_key_hashes":\["a{64}"\]/);
  for (const name of ["X-Api-Key", "apca_api_secret_key", "key_id", "sslpassword"]) {
    assert.ok(isSecretName(name), name);
  }
  for (const name of ["api_key_hashes", "client_order_id", "monkey", "key"]) {
    assert.ok(!isSecretName(name), name);
  }
});

Deno.test("a NATS token in the URL is never logged while NATS is unreachable", async () => {
  const { log, lines } = memoryLogger();
  const stop = new AbortController();
  const connecting = connectNats(
    { ...DEFAULT_CONFIG.nats, url: `nats://s3cr3tTOKEN@127.0.0.1:${freePort()}` },
    { log, signal: stop.signal },
  ).catch(() => null);
  try {
    await waitFor(
      () => lines.some((line) => line.message === "NATS unreachable, retrying"),
      10_000,
      "a retry line",
    );
  } finally {
    stop.abort();
    await deadline(connecting, 10_000);
  }
  const text = JSON.stringify(lines);
  assert.doesNotMatch(text, /s3cr3tTOKEN/);
  assert.match(text, /nats:\/\/\*\*\*@127\.0\.0\.1:/);
});

Deno.test("a PostgreSQL password holding @ is never logged while PostgreSQL is unreachable", async () => {
  const { log, lines } = memoryLogger();
  const url = `postgres://app:p@ss-w0rd@127.0.0.1:${freePort()}/tw`;
  await assert.rejects(
    waitForPostgres(
      { ...DEFAULT_CONFIG.postgres, url, connect_timeout_s: 2 },
      { log, maxAttempts: 2, initialMs: 1, maxMs: 1 },
    ),
  );
  const retries = lines.filter((line) => line.message === "PostgreSQL unreachable, retrying");
  assert.equal(retries.length, 1, JSON.stringify(lines));
  const text = JSON.stringify(lines);
  assert.doesNotMatch(text, /ss-w0rd/);
  assert.match(text, /postgres:\/\/app:\*\*\*@127\.0\.0\.1:/);
});

Deno.test("a password holding x:// is redacted whole up to 1 KiB, and text repeating x:// is read in one pass", () => {
  const password = "p".repeat(900) + "x://" + "q".repeat(90);
  const redacted = redactUrl(`postgres://tw:${password}@db:5432/tw`);
  assert.equal(redacted, "postgres://tw:***@db:5432/tw");
  // 64 KiB of `a://u:` (a logged request path): each scheme looks ahead at most 1 KiB for an `@`.
  const text = "a://u:".repeat(10_922);
  assert.equal(redactUrl(text), text);
});
