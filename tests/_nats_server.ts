/**
 * Starts a private `nats-server` on a free loopback port for tests that need to
 * stop and restart NATS without disturbing the shared server.
 *
 * @module
 */

/** A running test server. */
export interface NatsServer {
  /** Its port. */
  port: number;
  /** `nats://127.0.0.1:<port>`. */
  url: string;
  /** Process id of the server. */
  pid: number;
  /** Stops the process and waits for it to exit. */
  stop(): Promise<void>;
  /** Same as `stop`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** A loopback TCP port that nothing listens on right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Starts nats-server (JetStream on, storage in a temp dir) and waits until it accepts connections. */
export async function startNatsServer(
  options: {
    port?: number;
    jetstream?: boolean;
    /** JetStream storage kept after stop, so that a server started again on it has the same streams. */
    storeDir?: string;
  } = {},
): Promise<NatsServer> {
  const port = options.port ?? freePort();
  const storeDir = options.storeDir ?? await Deno.makeTempDir({ prefix: "tw-nats-" });
  const args = ["-a", "127.0.0.1", "-p", String(port)];
  if (options.jetstream ?? true) args.push("-js", "-sd", storeDir);
  const child = new Deno.Command("nats-server", { args, stdout: "null", stderr: "null" }).spawn();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill();
        await child.status;
        throw new Error(`nats-server did not start on port ${port}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      child.kill("SIGTERM");
      await child.status;
      if (options.storeDir === undefined) {
        await Deno.remove(storeDir, { recursive: true }).catch(() => {});
      }
    })();
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    pid: child.pid,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
