/**
 * The pool's sockets speak TLS themselves (adapters/_pg_socket.ts). A TLS
 * PostgreSQL stand-in (answers the SSLRequest with S, then TLS with a
 * certificate from a private CA made with `openssl`, then the real server
 * behind it) checks sslmode=verify-full against libpq's rule: the
 * certificate must name the host connected to — for an IP address, an IP
 * SAN. (The name checked was "localhost" for any IP address.)
 *
 * @module
 */
import assert from "node:assert/strict";
import { createPostgres } from "../adapters/postgres.ts";

async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A CA and two server certificates: one for DNS:localhost only, one also for IP:127.0.0.1. */
async function certificates(dir: string) {
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
    "-days",
    "2",
    "-subj",
    "/CN=tradewire test CA",
  ]);
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${dir}/srv.key`,
    "-out",
    `${dir}/srv.csr`,
    "-subj",
    "/CN=localhost",
  ]);
  for (
    const [name, san] of [["dns", "DNS:localhost"], ["ip", "DNS:localhost,IP:127.0.0.1"], [
      "iponly",
      "IP:127.0.0.1",
    ], ["other", "DNS:other.example"]]
  ) {
    await Deno.writeTextFile(
      `${dir}/${name}.cnf`,
      `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`,
    );
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      `${dir}/srv.csr`,
      "-CA",
      `${dir}/ca.pem`,
      "-CAkey",
      `${dir}/ca.key`,
      "-CAcreateserial",
      "-out",
      `${dir}/${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${dir}/${name}.cnf`,
    ]);
  }
}

/** A PostgreSQL that does TLS with `certFile`: front port answers S, then relays to TLS, then to 5432. */
function tlsPostgres(certFile: string, keyFile: string) {
  const tlsListener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(certFile),
    key: Deno.readTextFileSync(keyFile),
  });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: { close(): void }[] = [];
  const pipe = (a: Deno.Conn, b: Deno.Conn) =>
    a.readable.pipeTo(b.writable).catch(() => {}).finally(() => {
      try {
        b.close();
      } catch { /* */ }
    });
  (async () => {
    for await (const conn of tlsListener) {
      conns.push(conn);
      const pg = await Deno.connect({ hostname: "127.0.0.1", port: 5432 });
      conns.push(pg);
      void pipe(conn, pg);
      void pipe(pg, conn);
    }
  })().catch(() => {});
  (async () => {
    for await (const conn of front) {
      conns.push(conn);
      const head = new Uint8Array(8);
      let got = 0;
      while (got < 8) {
        const n = await conn.read(head.subarray(got));
        if (n === null) break;
        got += n;
      }
      await conn.write(new Uint8Array([0x53])); // S
      const inner = await Deno.connect({
        hostname: "127.0.0.1",
        port: (tlsListener.addr as Deno.NetAddr).port,
      });
      conns.push(inner);
      void pipe(conn, inner);
      void pipe(inner, conn);
    }
  })().catch(() => {});
  return {
    port: (front.addr as Deno.NetAddr).port,
    close() {
      front.close();
      tlsListener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

async function attempt(url: string): Promise<"connected" | string> {
  const sql = createPostgres({ url, pool_size: 1, connect_timeout_s: 5 });
  try {
    await sql`select 1 as one`;
    return "connected";
  } catch (error) {
    return String((error as Error).message);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}

Deno.test("sslmode=verify-full to an IP address refuses a certificate that does not name that address", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw_tls_identity_" });
  try {
    await certificates(dir);
    const only = tlsPostgres(`${dir}/dns.pem`, `${dir}/srv.key`);
    const withIp = tlsPostgres(`${dir}/ip.pem`, `${dir}/srv.key`);
    const ipOnly = tlsPostgres(`${dir}/iponly.pem`, `${dir}/srv.key`);
    const other = tlsPostgres(`${dir}/other.pem`, `${dir}/srv.key`);
    try {
      const q = `sslmode=verify-full&sslrootcert=${dir}/ca.pem`;
      // Controls: the name in the certificate, and the address in it.
      const byName = await attempt(`postgres://postgres@localhost:${only.port}/postgres?${q}`);
      const byIp = await attempt(`postgres://postgres@127.0.0.1:${withIp.port}/postgres?${q}`);
      // The certificate names localhost only; the client connected to 127.0.0.1 (libpq refuses).
      const mismatch = await attempt(`postgres://postgres@127.0.0.1:${only.port}/postgres?${q}`);
      // A certificate naming only the address connected to (CN localhost, SAN IP:127.0.0.1).
      const ipSanOnly = await attempt(`postgres://postgres@127.0.0.1:${ipOnly.port}/postgres?${q}`);
      // A certificate of another server altogether (SAN DNS:other.example, CN localhost).
      const otherServer = await attempt(
        `postgres://postgres@127.0.0.1:${other.port}/postgres?${q}`,
      );
      const otherByName = await attempt(
        `postgres://postgres@localhost:${other.port}/postgres?${q}`,
      );
      assert.deepEqual(
        {
          byName,
          byIp,
          ipSanOnly,
          otherByNameRefused: otherByName !== "connected",
          mismatchRefused: mismatch !== "connected",
          otherServerRefused: otherServer !== "connected",
        },
        {
          byName: "connected",
          byIp: "connected",
          ipSanOnly: "connected",
          otherByNameRefused: true,
          mismatchRefused: true,
          otherServerRefused: true,
        },
        `mismatch: ${mismatch}; other server by IP: ${otherServer}; by name: ${otherByName}`,
      );
    } finally {
      only.close();
      withIp.close();
      ipOnly.close();
      other.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
