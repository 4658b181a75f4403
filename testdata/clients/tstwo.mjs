// Connects two official TypeScript SDK clients to one Moat gateway at
// once, as two sessions, and reports every message each one received.
// Session a subscribes to a resource, calls a tool that sends progress,
// one that logs and one that touches the resource; session b only watches,
// then makes a log call of its own, whose message it waits for: what the
// shared server sent for a before that is on b's stream by then, if Moat
// routed it there.
//
// Usage: node tstwo.mjs http URL TOKEN_A TOKEN_B GROUP URI
//        node tstwo.mjs connect MOAT SOCKET GROUP URI
//
// Output: one JSON line {"a": [MESSAGE...], "b": [MESSAGE...]} of the
// notifications each client received, or {"error": "..."}.

import process from "node:process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, ...rest] = process.argv.slice(2);
let open, group, uri;
if (mode === "http") {
  const [url, tokenA, tokenB] = rest;
  [group, uri] = rest.slice(3);
  open = (who) =>
    new StreamableHTTPClientTransport(new URL(url), {
      requestInit: { headers: { Authorization: `Bearer ${who === "a" ? tokenA : tokenB}` } },
    });
} else {
  const [moat, socket] = rest;
  [group, uri] = rest.slice(2);
  open = () => new StdioClientTransport({ command: moat, args: ["connect", socket], stderr: "inherit" });
}

// connect returns a client whose every incoming notification is kept in
// seen, as it came off the wire.
async function connect(who) {
  const client = new Client({ name: `ts-two-${who}`, version: "1" });
  const seen = [];
  const transport = open(who);
  await client.connect(transport);
  const handle = transport.onmessage;
  transport.onmessage = (msg, extra) => {
    if (msg.method?.startsWith("notifications/")) seen.push(msg);
    handle(msg, extra);
  };
  // A progress notification for another session's token would be an
  // error here; it is in seen already.
  client.onerror = () => {};
  return { client, transport, seen };
}

const call = (c, name, args, options) =>
  c.client.callTool({ name: "call_dynamic_tool", arguments: { group, name, args } }, undefined, options);

async function until(what, cond, poke) {
  for (let i = 0; i < 600; i++) {
    if (cond()) return;
    if (poke) await poke();
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const out = {};
const sessions = [];
try {
  const a = await connect("a");
  sessions.push(a);
  const b = await connect("b");
  sessions.push(b);
  for (const c of [a, b]) await c.client.setLoggingLevel("debug");

  await a.client.subscribeResource({ uri });
  await call(a, "progress", { steps: 3 }, { onprogress: () => {} });
  await call(a, "log", { level: "error", message: "for a" });
  const updated = () => a.seen.some((m) => m.method === "notifications/resources/updated" && m.params?.uri === uri);
  await until("a's resource update", updated, () => call(a, "touch", { uri }));
  await until("a's progress", () => a.seen.filter((m) => m.method === "notifications/progress").length === 3);

  await call(b, "log", { level: "error", message: "for b" });
  await until("b's own log message", () => b.seen.some((m) => m.method === "notifications/message" && m.params?.data === "for b"));
  out.a = a.seen;
  out.b = b.seen;
} catch (e) {
  out.error = String(e?.message ?? e);
}
for (const c of sessions) {
  try {
    if (c.transport.sessionId) await c.transport.terminateSession();
    await c.client.close();
  } catch {}
}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
