/**
 * The supervised actor runtime: Erlang/OTP-style supervisors (strategies,
 * restart types, restart intensity, ordered start and reverse-order
 * shutdown) over actors that talk only through NATS subjects and queue their
 * messages in bounded mailboxes.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { actor, startRoot, supervisor } from "./mod.ts";
 *
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const validator = actor<{ id: string }>({
 *   name: "validator",
 *   subjects: ["orders.new"],
 *   handle: (message, ctx) => ctx.publish("orders.valid", message.data),
 * }, { nats });
 * const root = await startRoot({ name: "root", intensity: 3, periodMs: 10_000 }, [
 *   supervisor({ name: "market", strategy: "rest_for_one" }, [validator]),
 * ]);
 * root.inspect(); // rows "root", "root/market", "root/market/validator"
 * await root.stop();
 * await nats.close();
 * ```
 *
 * @module
 */

export * from "./types.ts";
export * from "./mailbox.ts";
export * from "./supervisor.ts";
export * from "./actor.ts";
