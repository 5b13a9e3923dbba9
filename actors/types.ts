/**
 * The shapes shared by actors, supervisors and the things they supervise.
 *
 * A child's life, as in Erlang/OTP and mapped to promises: `ready` settles
 * when it has initialised (the supervisor starts the next sibling only then),
 * `done` resolves on a normal exit and rejects on an abnormal one, and an
 * exit after the supervisor aborted the child's signal is a shutdown.
 *
 * @module
 */

/** When a supervisor restarts a child that exited. */
export type RestartType =
  /** Always restarted. */
  | "permanent"
  /** Restarted only after an abnormal exit (its `done` rejected). */
  | "transient"
  /** Never restarted. */
  | "temporary";

/** Which children a supervisor restarts when one of them dies. */
export type Strategy =
  /** Only the child that died. */
  | "one_for_one"
  /** Every child: all are stopped in reverse order, then started in order. */
  | "one_for_all"
  /** The child that died and every child started after it. */
  | "rest_for_one";

/** Where a child is in its life, as its supervisor sees it. */
export type ChildStatus =
  | "starting"
  | "running"
  | "restarting"
  | "stopping"
  | "stopped"
  | "exited"
  | "failed";

/** Mailbox figures of an actor. */
export interface MailboxStats {
  /** Messages waiting. */
  depth: number;
  /** Most messages it holds. */
  capacity: number;
  /** Messages dropped by the drop_oldest policy since the actor started. */
  dropped: number;
}

/** One row of the supervision tree, for health and tests. */
export interface ActorInfo {
  /** Path in the tree, e.g. `root/market/validator`. */
  name: string;
  /** What kind of child it is. */
  kind: "actor" | "supervisor" | "worker";
  /** Its status. */
  status: ChildStatus;
  /** How many times its supervisor restarted it. */
  restarts: number;
  /** Its mailbox, for actors; null otherwise. */
  mailbox: MailboxStats | null;
  /** Message of the last abnormal exit, if any. */
  last_error: string | null;
}

/** What a running child reports about itself. */
export interface ChildStats {
  /** The child's kind. */
  kind: ActorInfo["kind"];
  /** Its mailbox, for actors. */
  mailbox?: MailboxStats;
  /** For supervisors: their descendants' rows (names relative to this child). */
  children?: ActorInfo[];
}

/** A started child. */
export interface Running {
  /** Resolves once the child has initialised; rejects when it fails to. */
  readonly ready: Promise<void>;
  /** Resolves on a normal exit, rejects on an abnormal one. */
  readonly done: Promise<void>;
  /** The child's own figures, read on demand. */
  stats(): ChildStats;
}

/** How to start one child and how its supervisor treats it. */
export interface ChildSpec {
  /** Unique among its siblings. */
  readonly name: string;
  /** @default {"permanent"} */
  readonly restart?: RestartType;
  /**
   * Milliseconds the child has to exit after its signal aborts before the
   * supervisor gives up on it ("kills" it) and moves on; a restart waits
   * for it to exit, up to the supervisor's `abandonedWaitMs`.
   * @default {5000}
   */
  readonly shutdownMs?: number;
  /** Starts the child. `signal` aborts when the supervisor wants it to stop. */
  start(signal: AbortSignal): Running;
}
