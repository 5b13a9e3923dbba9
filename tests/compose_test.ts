/**
 * Static checks of compose.yaml against what an unattended
 * `docker compose up` deployment needs. There is no Docker engine here, so the
 * file itself is checked.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";

const ROOT = new URL("..", import.meta.url);

interface Service {
  restart?: string;
  depends_on?: Record<string, unknown> | string[];
}

async function compose(): Promise<{ services: Record<string, Service> }> {
  return parse(await Deno.readTextFile(new URL("compose.yaml", ROOT)));
}

Deno.test(
  "compose: the services the engine depends on come back after a daemon/host restart like the engine",
  async () => {
    const { services } = await compose();
    const engine = services.engine;
    assert(engine, "compose.yaml has an engine service");
    // The engine is meant to run unattended: Docker starts it again after a crash or a reboot.
    assert(engine.restart !== undefined && engine.restart !== "no", "the engine restarts");
    const deps = Array.isArray(engine.depends_on)
      ? engine.depends_on
      : Object.keys(engine.depends_on ?? {});
    assert.deepEqual(deps.sort(), ["clickhouse", "nats", "postgres"]);
    // After `systemctl restart docker` or a reboot, Docker restarts only the containers whose
    // policy says so (compose's default is "no"): the engine would come back alone, waiting
    // forever on PostgreSQL ("PostgreSQL unreachable, retrying"), with no NATS for signals and no
    // ClickHouse for market data. A crashed NATS/PostgreSQL/ClickHouse would also stay down.
    const without = deps.filter((name) => {
      const policy = services[name]?.restart;
      return policy === undefined || policy === "no";
    });
    assert.deepEqual(
      without,
      [],
      `services the engine needs have no restart policy (compose default "no"): ${
        without.join(", ")
      }; the engine has restart: ${engine.restart}`,
    );
  },
);

Deno.test("compose: Docker waits longer for the engine to stop than the engine's own shutdown timeout", async () => {
  const { services } = await compose();
  const grace = (services.engine as Service & { stop_grace_period?: string }).stop_grace_period;
  // Docker's default is 10 s, engine.shutdown_timeout_ms's too: an overrunning shutdown would end
  // by SIGKILL (exit 137, nothing logged) instead of the engine's own exit 1.
  assert.match(grace ?? "", /^\d+s$/, "the engine has a stop_grace_period in seconds");
  const defaults = parse(await Deno.readTextFile(new URL("config/default.yaml", ROOT))) as {
    engine: { shutdown_timeout_ms: number };
  };
  assert.ok(
    Number.parseInt(grace!, 10) * 1000 > defaults.engine.shutdown_timeout_ms,
    `stop_grace_period ${grace} exceeds engine.shutdown_timeout_ms ${defaults.engine.shutdown_timeout_ms}`,
  );
});
