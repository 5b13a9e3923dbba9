/**
 * The PostgreSQL URL's `sslmode` (standard libpq URI parameter) against the
 * `postgres.sslmode` config key: the stricter wins, neither downgrades the
 * other. A loopback PostgreSQL port records whether the client sends an
 * SSLRequest before its startup message, answers `N`, and forwards to the
 * shared server.
 */
import assert from "node:assert/strict";
import { connectionFor, createPostgres, effectiveSslMode } from "../adapters/postgres.ts";
import { loadConfig } from "../config/mod.ts";

const PG = { hostname: "127.0.0.1", port: 5432 };

function pipe(a: Deno.Conn, b: Deno.Conn, conns: Set<Deno.Conn>) {
  conns.add(a);
  conns.add(b);
  const close = () => {
    for (const c of [a, b]) {
      try {
        c.close();
      } catch { /* closed */ }
      conns.delete(c);
    }
  };
  a.readable.pipeTo(b.writable, { preventClose: true }).catch(() => {}).finally(close);
  b.readable.pipeTo(a.writable, { preventClose: true }).catch(() => {}).finally(close);
}

/** A PostgreSQL port that records whether the client asked for TLS (SSLRequest), answers `N`, and forwards. */
function startSslSniffer() {
  const conns = new Set<Deno.Conn>();
  let sslRequests = 0;
  let plaintextStartups = 0;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const upstream = await Deno.connect(PG);
        const buf = new Uint8Array(8);
        let got = 0;
        while (got < 8) {
          const n = await conn.read(buf.subarray(got));
          if (n === null) return conn.close();
          got += n;
        }
        const code = new DataView(buf.buffer).getUint32(4);
        if (code === 80877103) {
          sslRequests++;
          await conn.write(new TextEncoder().encode("N"));
        } else {
          plaintextStartups++;
          await upstream.write(buf);
        }
        pipe(conn, upstream, conns);
      })().catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get sslRequests() {
      return sslRequests;
    },
    get plaintextStartups() {
      return plaintextStartups;
    },
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Connects through a sniffer with `url` (its host and port replaced) and `sslmode`; returns the sniffer's counts and the outcome. */
async function sniff(query: string, sslmode: "disable" | "prefer" | "require" | "verify-full") {
  const sniffer = startSslSniffer();
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${sniffer.port}/postgres${query}`,
    sslmode,
    pool_size: 1,
    connect_timeout_s: 3,
  });
  let outcome: string;
  try {
    await sql`select 1`;
    outcome = "connected";
  } catch (error) {
    outcome = `failed: ${(error as Error).message}`;
  } finally {
    await sql.end({ timeout: 1 });
    sniffer.close();
  }
  return { sslRequests: sniffer.sslRequests, plaintext: sniffer.plaintextStartups, outcome };
}

Deno.test("DATABASE_URL with ?sslmode=require is not downgraded to plaintext by postgres.sslmode", async () => {
  const sniffer = startSslSniffer();
  const config = await loadConfig({
    args: [],
    env: { DATABASE_URL: `postgres://postgres@127.0.0.1:${sniffer.port}/postgres?sslmode=require` },
  });
  const sql = createPostgres({ ...config.postgres, pool_size: 1, connect_timeout_s: 3 });
  let outcome: string;
  try {
    await sql`select 1`;
    outcome = "connected";
  } catch (error) {
    outcome = `failed: ${(error as Error).message}`;
  } finally {
    await sql.end({ timeout: 1 });
    sniffer.close();
  }
  assert.ok(
    sniffer.sslRequests > 0,
    `the URL asks for sslmode=require (config.postgres.sslmode=${config.postgres.sslmode}); ` +
      `client sent ${sniffer.plaintextStartups} plaintext startup(s) and no SSLRequest; outcome: ${outcome}`,
  );
  assert.equal(sniffer.plaintextStartups, 0, "require never falls back to plaintext");
  assert.match(outcome, /^failed/, "the server offers no TLS: require fails");
});

Deno.test("postgres.sslmode is not downgraded by the URL's weaker sslmode; plaintext only when both allow it", async () => {
  const strict = await sniff("?sslmode=disable", "require");
  assert.ok(strict.sslRequests > 0 && strict.plaintext === 0, JSON.stringify(strict));
  const prefer = await sniff("?sslmode=prefer", "disable");
  assert.ok(prefer.sslRequests > 0, JSON.stringify(prefer));
  assert.equal(prefer.outcome, "connected", "prefer falls back to plaintext when refused");
  const plain = await sniff("?sslmode=disable", "disable");
  assert.deepEqual(plain, { sslRequests: 0, plaintext: 1, outcome: "connected" });
});

Deno.test("effectiveSslMode is the stricter of the URL's sslmode and postgres.sslmode", () => {
  const cases: [string, "disable" | "prefer" | "require" | "verify-full", string][] = [
    ["postgres://h/db", "disable", "disable"],
    ["postgres://h/db", "verify-full", "verify-full"],
    ["postgres://h/db?sslmode=require", "disable", "require"],
    ["postgres://h/db?sslmode=verify-ca", "prefer", "verify-ca"],
    ["postgres://h/db?sslmode=verify-ca", "verify-full", "verify-full"],
    ["postgres://h/db?sslmode=allow", "disable", "allow"],
    ["postgres://h/db?sslmode=allow", "prefer", "prefer"],
    ["postgres://h/db?sslmode=disable", "require", "require"],
    ["postgres://h/db?sslmode=verify-full", "require", "verify-full"],
    ["postgres://h/db?sslrootcert=system", "prefer", "verify-full"],
  ];
  for (const [url, configured, expected] of cases) {
    assert.equal(effectiveSslMode(url, configured), expected, `${url} with ${configured}`);
  }
  assert.throws(
    () => effectiveSslMode("postgres://h/db?sslmode=sometimes", "disable"),
    (e: unknown) => e instanceof TypeError && /sslmode .*got "sometimes"/.test(e.message),
  );
  assert.throws(() => createPostgres({ url: "postgres://h/db?sslmode=on" }), TypeError);
});

const URL_WITH_CA =
  "postgres://postgres@127.0.0.1:5432/postgres?sslmode=prefer&sslrootcert=/etc/ssl/certs/ca-certificates.crt";

Deno.test("a libpq URL with client-side parameters (sslrootcert=<file>), accepted at load, connects: they are not sent to the server as settings", async () => {
  const config = await loadConfig({ args: [], env: { DATABASE_URL: URL_WITH_CA } });
  assert.equal(config.postgres.url, URL_WITH_CA, "accepted at load");
  const sql = createPostgres({ url: config.postgres.url, sslmode: config.postgres.sslmode });
  try {
    const [row] = await sql<{ x: number }[]>`select 1 as x`;
    assert.equal(row?.x, 1);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("a client certificate in the URL (sslcert, sslkey) is given to the TLS connection with prefer and allow too", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/client.crt`, "CERT");
    await Deno.writeTextFile(`${dir}/client.key`, "KEY");
    for (const mode of ["prefer", "allow"]) {
      // What the pool's sockets connect with (they speak TLS themselves).
      const { ssl } = connectionFor(
        `postgres://tw@127.0.0.1:5432/tw?sslmode=${mode}&sslcert=${dir}/client.crt&sslkey=${dir}/client.key`,
        "disable",
      );
      assert.equal(
        typeof ssl === "object" && ssl !== null ? ssl.cert : undefined,
        "CERT",
        `sslmode=${mode}: the TLS options are ${
          JSON.stringify(ssl)
        }, the client certificate is dropped`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
