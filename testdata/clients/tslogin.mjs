// Connects the official TypeScript SDK client, declaring that it shows
// login links (URL-mode elicitation), to a Moat gateway through `moat
// connect`, calls a tool of a group that waits for the user's OAuth login,
// and does what a client that shows links does: it reports the link,
// waits for notifications/elicitation/complete, and calls again.
//
// Usage: node tslogin.mjs MOAT SOCKET GROUP TOOL
//
// Output: JSON lines. {"url": ..., "id": ..., "message": ...} when the
// call asks for a login; then {"completed": ID} and {"result": {...}}; or
// {"error": "..."} (the first call's result goes in {"result"} when no
// login is asked for).

import process from "node:process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ElicitationCompleteNotificationSchema, ErrorCode } from "@modelcontextprotocol/sdk/types.js";

const [moat, socket, group, tool] = process.argv.slice(2);
const say = (v) => process.stdout.write(JSON.stringify(v) + "\n");
let client;
try {
  client = new Client({ name: "ts-login", version: "1" }, { capabilities: { elicitation: { url: {} } } });
  let completed;
  const completion = new Promise((resolve) => (completed = resolve));
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => completed(n.params.elicitationId));
  await client.connect(new StdioClientTransport({ command: moat, args: ["connect", socket], stderr: "inherit" }));
  const call = () => client.callTool({ name: "call_dynamic_tool", arguments: { group, name: tool, args: {} } });
  let result;
  try {
    result = await call();
  } catch (e) {
    if (e?.code !== ErrorCode.UrlElicitationRequired) throw e;
    const [el] = e.elicitations;
    say({ url: el.url, id: el.elicitationId, message: el.message });
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no elicitation/complete within 60s")), 60000));
    say({ completed: await Promise.race([completion, timeout]) });
    result = await call();
  }
  say({ result });
} catch (e) {
  say({ error: String(e?.message ?? e) });
}
try {
  await client?.close();
} catch {}
process.exit(0);
