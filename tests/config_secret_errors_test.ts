/**
 * A configuration error names the bad key, where it is and where it came
 * from, and never shows a secret given by mistake: the value of a mistyped
 * flag, an unquoted YAML password that YAML takes for syntax, a connection
 * URL whose scheme is missing or mangled. README (Configuration): "An invalid
 * configuration exits with status 2 and one message naming every bad key, its
 * path, the reason and where the value came from"; secrets are redacted
 * whenever configuration is printed.
 */

import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { loadError } from "./_config.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const SECRET = "Hunter2pwQ7";

/** Runs main.ts with `args` and `env` (no user config file) and returns its exit code and output. */
async function runMain(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; text: string; ms: number }> {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    env: { TRADEWIRE_CONFIG: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text, ms };
}

async function withYaml<T>(text: string, run: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ prefix: "tradewire_secret_errors_", suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, text);
    return await run(path);
  } finally {
    await Deno.remove(path).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Command line

Deno.test("a mistyped flag does not put the secret given with it in the config error", async () => {
  const cases: string[][] = [
    // A flag spelt as other tools spell it, its value as the next argument.
    ["--database-url", `postgres://tw:${SECRET}@db:5432/tw`],
    ["--nats-password", SECRET],
    ["--api-key", SECRET],
    ["--nats..password", SECRET],
    // One dash instead of two, or none.
    [`-nats.password=${SECRET}`],
    [`nats.password=${SECRET}`],
    // A value where none is taken, or left over.
    [`--print-config=${SECRET}`],
    ["--print-config", SECRET],
    ["--print-config", `${SECRET}==`],
  ];
  const leaks: string[] = [];
  for (const args of cases) {
    const error = await loadError({ args });
    if (error.message.includes(SECRET)) leaks.push(`${args.join(" ")}\n${error.message}`);
  }
  assert.deepEqual(leaks, [], `config errors echo the secret:\n${leaks.join("\n\n")}`);
});

Deno.test("an unexpected argument is named up to its = or by its position and length", async () => {
  const error = await loadError({
    args: ["--database-url", "postgres://tw:pw@db/tw", "nats.password=pw", "-v", "stray"],
  });
  assert.deepEqual(error.message.split("\n").slice(1), [
    "  --database-url: unknown flag; settings are given as --section.key=value",
    "  nats.password=…: unexpected argument; settings are given as --section.key=value",
    "  -v: unexpected argument; settings are given as --section.key=value",
    "  argument 5 (5 characters, not shown): unexpected argument; settings are given as " +
    "--section.key=value",
  ]);
});

Deno.test("main.ts exits 2 on --database-url URL without printing the URL's password", async () => {
  const { code, text } = await runMain(["--database-url", `postgres://tw:${SECRET}@db:5432/tw`]);
  assert.equal(code, 2, text);
  assert.match(text, /--database-url/);
  assert.ok(!text.includes(SECRET), `the password is printed on exit 2:\n${text}`);
});

// ---------------------------------------------------------------------------
// YAML

Deno.test("a YAML config error never echoes a password that starts with *, | or >", async () => {
  // Generated passwords hold symbols; written unquoted, these are taken for YAML syntax.
  const leaks: string[] = [];
  for (const password of ["*Xk9vQ2pw", "|Xk9vQ2pw", ">Xk9vQ2pw"]) {
    await withYaml(`nats:\n  user: tw\n  password: ${password}\n`, async (path) => {
      const error = await loadError({ args: ["--config", path] });
      if (error.message.includes("Xk9vQ2pw")) leaks.push(`${password}: ${error.message}`);
      assert.match(error.message, /:3:\d+: YAML syntax error in nats\.password: .*quote/);
    });
  }
  assert.deepEqual(leaks, [], `config errors echo the secret:\n${leaks.join("\n")}`);
});

Deno.test("main.ts exits 2 on a YAML password taken for an alias without printing it", async () => {
  await withYaml("nats:\n  user: tw\n  password: *Xk9vQ2pw\n", async (path) => {
    const { code, text } = await runMain(["--config", path]);
    assert.equal(code, 2, text);
    assert.ok(!text.includes("Xk9vQ2pw"), `the secret is printed on exit 2: ${text}`);
  });
});

Deno.test("an unresolved YAML alias names its key and line, in a value or a merge key", async () => {
  await withYaml("nats:\n  user: tw\n  password: *Xk9vQ2pw\n", async (path) => {
    const error = await loadError({ args: ["--config", path] });
    assert.match(
      error.message,
      new RegExp(`${RegExp.escape(path)}:3:\\d+: YAML syntax error in nats\\.password: an alias`),
    );
  });
  await withYaml("http:\n  <<: *missing\n", async (path) => {
    const error = await loadError({ args: ["--config", path] });
    assert.match(error.message, new RegExp(`${RegExp.escape(path)}:2:\\d+: .* in http\\.<<:`));
  });
});

Deno.test("a value with an unknown YAML tag (a password starting with !) is refused, not emptied", async () => {
  // `password: !Xk9vQ2pw` is an unresolved tag on an empty value: yaml only warns.
  await withYaml("nats:\n  user: tw\n  password: !Xk9vQ2pw\n", async (path) => {
    let loaded: string | undefined;
    let error: unknown;
    try {
      loaded = (await loadConfig({ args: ["--config", path], env: {} })).nats.password;
    } catch (e) {
      error = e;
    }
    assert.ok(
      error instanceof ConfigError,
      `loaded without an error, nats.password = ${JSON.stringify(loaded)}`,
    );
    assert.ok(!error.message.includes("Xk9vQ2pw"), error.message);
    assert.match(error.message, /:3:\d+: YAML syntax error in nats\.password: an unknown tag/);
  });
});

// ---------------------------------------------------------------------------
// Connection URLs

Deno.test("a connection URL without its scheme (or with a mangled one) is refused without echoing its password", async () => {
  const cases: Array<[string, string]> = [
    // NATS's usual host:port form with credentials, the scheme left out.
    ["NATS_URL", `tw:${SECRET}@127.0.0.1:4222`],
    ["NATS_URL", `//tw:${SECRET}@127.0.0.1:4222`],
    ["NATS_URL", `nats://a@h1:4222,tw:${SECRET}@h2:4222`],
    ["DATABASE_URL", `tw:${SECRET}@db:5432/tw`],
    // One slash missing, or the colon.
    ["DATABASE_URL", `postgres:/tw:${SECRET}@db:5432/tw`],
    ["DATABASE_URL", `postgres//tw:${SECRET}@db:5432/tw`],
    // libpq's keyword/value connection string instead of a URL.
    ["DATABASE_URL", `host=db user=tw password=${SECRET} dbname=tw`],
    ["CLICKHOUSE_URL", `default:${SECRET}@ch:8123`],
  ];
  const leaks: string[] = [];
  for (const [name, value] of cases) {
    const error = await loadError({ env: { [name]: value } });
    if (error.message.includes(SECRET)) leaks.push(`${name}=${value}\n${error.message}`);
    assert.match(error.message, /got a string of \d+ characters that is not a scheme:\/\/ URL/);
  }
  assert.deepEqual(leaks, [], `config errors echo the password:\n${leaks.join("\n\n")}`);
});

Deno.test("a refused PostgreSQL URL whose raw password holds :// shows it redacted", async () => {
  // A raw `/` in a password is refused with the URL redacted (README); `://` in it is no second URL.
  const error = await loadError({
    env: { DATABASE_URL: `postgres://tw:Zq8://${SECRET}@db:5432/tw` },
  });
  assert.match(error.message, /postgres\.url: .*, got "postgres:\/\/tw:\*\*\*@db:5432\/tw"/);
  assert.ok(!error.message.includes(SECRET), error.message);
});

// ---------------------------------------------------------------------------
// Numbers

Deno.test("a decimal key given an absurd exponent is refused at once, naming the key", async () => {
  const started = performance.now();
  const error = await loadError({ env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "1e100000000" } });
  const ms = performance.now() - started;
  assert.match(
    error.message,
    /risk\.max_order_qty: expected a decimal with an exponent from -1000 to 1000, got a number with exponent 100000000 \(from env TRADEWIRE_RISK__MAX_ORDER_QTY\)/,
  );
  assert.ok(ms < 2_000, `took ${Math.round(ms)} ms`);
  const flag = await loadError({ args: ["--risk.max_order_qty=1e-100000000"] });
  assert.match(flag.message, /risk\.max_order_qty: .*exponent -100000000 \(from flag/);
  // Within the bound the number is still written out, and refused for what it is.
  const big = await loadError({ env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "1e30" } });
  assert.match(big.message, /expected at most 12 integer digits/);
});

Deno.test("main.ts exits 2 quickly on a decimal key with an absurd exponent", async () => {
  const { code, text, ms } = await runMain([], { TRADEWIRE_RISK__MAX_ORDER_QTY: "1e100000000" });
  assert.equal(code, 2, text);
  assert.match(text, /risk\.max_order_qty: expected a decimal with an exponent/);
  // It took half a minute while the number was written out digit by digit.
  assert.ok(ms < 5_000, `exit 2 after ${Math.round(ms)} ms`);
});

// Review 37: the key path a YAML error names was built from what the parser took for keys, so an
// unquoted password holding ": " (or starting with "- ", or continued on the next line) was
// printed as part of it (`YAML syntax error in nats.password.<the password>`).
Deno.test("a YAML syntax error never shows an unquoted password through the key path it names", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw_yaml_key_" });
  try {
    for (const value of [`${SECRET}: x`, `- ${SECRET}`, `\n    ${SECRET}\n   bad: [`]) {
      const path = `${dir}/tw.yaml`;
      await Deno.writeTextFile(path, `nats:\n  password: ${value}\n`);
      let message = "(loaded)";
      try {
        await loadConfig({ args: ["--config", path], env: {} });
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        message = error.message;
      }
      assert.ok(
        !message.includes(SECRET),
        `password: ${JSON.stringify(value)} is shown in the error: ${message}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Review 37: a secret starting with `--` given after its key with a space (`--nats.password
// --Hunter2pwQ7`) was taken for an unknown flag and printed in full, the password becoming "true".
Deno.test("a flag's value starting with -- is never shown in the configuration error", async () => {
  for (const key of ["--nats.password", "--postgres.url", "--alpaca.api_secret"]) {
    let message: string | null = null;
    try {
      await loadConfig({ args: [key, `--${SECRET}`], env: {} });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      message = error.message;
    }
    // Whether or not the command line is refused, the secret must not be in what is printed.
    if (message !== null) {
      assert.ok(!message.includes(SECRET), `the error shows the value given to ${key}: ${message}`);
    }
  }
  // A secret key left without its value is refused, not set to "true".
  const error = await loadError({ args: ["--nats.password", `--${SECRET}`] });
  assert.match(error.message, /--nats\.password: needs a value/);
  assert.match(error.message, /argument 2 \(13 characters, not shown\): unknown flag after/);
});
