// deno-lint-ignore-file no-console
/**
 * A Binance-speaking venue for the pipeline benchmark, run in its own process
 * so it does not share the engine's thread: serves `/stream?streams=…` and,
 * once a client connects, sends `--trades` trade frames over `--symbols`
 * symbols at `--rate` frames/s (0 = as fast as it can), then stays open.
 * Only the first connection gets the frames: a feed that reconnects (its
 * staleness watchdog, once the burst is over) must not receive them twice.
 * Prints `listening <port>` when ready.
 */

const args = new Map(
  Deno.args.map((arg) => arg.replace(/^--/, "").split("=") as [string, string]),
);
const total = Number(args.get("trades") ?? "100000");
const rate = Number(args.get("rate") ?? "0");
const symbols = (args.get("symbols") ?? "BTCUSDT,ETHUSDT").split(",");
const CHUNK = 500;
let served = 0;

function frame(i: number): string {
  const symbol = symbols[i % symbols.length]!;
  const price = (100 + (i % 50) / 100).toFixed(2);
  const now = Date.now();
  return `{"stream":"${symbol.toLowerCase()}@trade","data":{"e":"trade","E":${now},"s":"${symbol}",` +
    `"t":${i + 1},"p":"${price}","q":"0.01000000","T":${now},"m":${i % 2 === 0},"M":true}}`;
}

const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`listening ${port}`),
}, (request) => {
  if (request.headers.get("upgrade") !== "websocket") {
    return new Response("not found", { status: 404 });
  }
  const { socket, response } = Deno.upgradeWebSocket(request);
  if (served++ > 0) return response;
  socket.onopen = async () => {
    const started = performance.now();
    for (let sent = 0; sent < total && socket.readyState === WebSocket.OPEN;) {
      const end = Math.min(total, sent + CHUNK);
      for (; sent < end; sent++) socket.send(frame(sent));
      if (rate > 0) {
        const due = started + (sent / rate) * 1000;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
      } else {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
  };
  return response;
});
await server.finished;
