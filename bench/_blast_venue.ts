// deno-lint-ignore-file no-console
/**
 * A Binance-speaking venue for the pipeline benchmark, run in its own process
 * so it does not share the engine's thread: serves `/stream?streams=…` and,
 * once a client connects, sends `--trades` trade frames over `--symbols`
 * symbols at `--rate` frames/s (0 = as fast as it can), then stays open.
 * Only the first connection gets the frames: a feed that reconnects (its
 * staleness watchdog, once the burst is over) must not receive them twice.
 * Prints `listening <port>` when ready.
 *
 * It is a load generator, so it keeps its own CPU out of the figures it
 * helps measure: it speaks the server side of RFC 6455 itself over a plain
 * TCP listener and writes each chunk of {@linkcode CHUNK} frames with one
 * write, as a venue's server does under load, instead of one WebSocket send
 * (one op and one syscall) per frame. For a burst (`--rate=0`) every frame
 * is built before it prints `listening`, so that sending costs little more
 * than the writes; their timestamps are then up to a few seconds old, well
 * within the validator's `max_lag_ms`. Frames from the client (pongs,
 * close) are read and ignored.
 */

const args = new Map(
  Deno.args.map((arg) => arg.replace(/^--/, "").split("=") as [string, string]),
);
const total = Number(args.get("trades") ?? "100000");
const rate = Number(args.get("rate") ?? "0");
const symbols = (args.get("symbols") ?? "BTCUSDT,ETHUSDT").split(",");
const CHUNK = 500;
/** RFC 6455 §1.3: appended to the client's key before hashing. */
const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let served = 0;

/** The start of each symbol's frames, up to the event time. */
const PREFIXES = symbols.map((symbol) =>
  `{"stream":"${symbol.toLowerCase()}@trade","data":{"e":"trade","E":`
);
/** The 50 prices the frames cycle through. */
const PRICES = Array.from({ length: 50 }, (_, k) => (100 + k / 100).toFixed(2));
/** Room for one frame in a chunk's buffer: its 4-byte header and its text. */
const FRAME_ROOM = 512;

function frame(i: number, now: number): string {
  const s = i % symbols.length;
  return `${PREFIXES[s]}${now},"s":"${symbols[s]}","t":${i + 1},"p":"${PRICES[i % 50]}",` +
    `"q":"0.01000000","T":${now},"m":${i % 2 === 0},"M":true}}`;
}

/**
 * Frames `from` to `to` (exclusive) as unmasked, unfragmented text frames, in
 * one buffer, each encoded straight into place (frames of this venue are far
 * below {@linkcode FRAME_ROOM} bytes and 64 KiB).
 */
function chunk(from: number, to: number): Uint8Array {
  const now = Date.now();
  const out = new Uint8Array((to - from) * FRAME_ROOM);
  let at = 0;
  for (let i = from; i < to; i++) {
    const text = frame(i, now);
    const { read, written } = encoder.encodeInto(text, out.subarray(at + 4, at + FRAME_ROOM));
    if (read !== text.length) throw new Error(`Frame ${i} is longer than ${FRAME_ROOM - 4} bytes`);
    out[at] = 0x81; // FIN + text
    if (written < 126) {
      out.copyWithin(at + 2, at + 4, at + 4 + written);
      out[at + 1] = written;
      at += 2 + written;
    } else {
      out[at + 1] = 126;
      out[at + 2] = written >> 8;
      out[at + 3] = written & 0xff;
      at += 4 + written;
    }
  }
  return out.subarray(0, at);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function accept(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + WEBSOCKET_GUID));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** Reads (and ignores) whatever the client sends, until it closes. */
async function drain(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  while (await conn.read(buffer) !== null) { /* pongs and close frames: ignored */ }
}

/** A burst's frames, built in advance; null when paced (built as they are sent). */
const prebuilt = rate > 0 ? null : Array.from(
  { length: Math.ceil(total / CHUNK) },
  (_, i) => chunk(i * CHUNK, Math.min(total, (i + 1) * CHUNK)),
);

async function blast(conn: Deno.Conn): Promise<void> {
  const started = performance.now();
  for (let sent = 0; sent < total;) {
    const end = Math.min(total, sent + CHUNK);
    await writeAll(conn, prebuilt?.[sent / CHUNK] ?? chunk(sent, end));
    sent = end;
    if (rate > 0) {
      const due = started + (sent / rate) * 1000;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
    }
  }
}

async function serve(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(16_384);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return;
    head += decoder.decode(buffer.subarray(0, n));
  }
  const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(head)?.[1];
  if (key === undefined || !/^upgrade:\s*websocket\s*$/im.test(head)) {
    await writeAll(conn, encoder.encode("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"));
    return;
  }
  await writeAll(
    conn,
    encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await accept(key)}\r\n\r\n`,
    ),
  );
  const reading = drain(conn);
  if (served++ === 0) await blast(conn);
  await reading;
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`listening ${(listener.addr as Deno.NetAddr).port}`);
for await (const conn of listener) {
  serve(conn).catch(() => {}).finally(() => {
    try {
      conn.close();
    } catch { /* closed already */ }
  });
}
