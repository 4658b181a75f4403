// Connects the official TypeScript SDK client to a Moat gateway's
// Streamable HTTP endpoint with a bearer token, the way a remote client
// configured with {"url": URL, "headers": {"Authorization": "Bearer ..."}}
// does, and reports what that client sees.
//
// Usage: node tshttp.mjs URL TOKEN GROUP TOOL ARGS_JSON
//
// TOKEN "-" sends no Authorization header. For https URLs, Node trusts
// the certificates of NODE_EXTRA_CA_CERTS.
//
// Output: one JSON line {"groups": [...], "result": {...}, "session": ID}
// or {"error": "...", "status": CODE}: the group enum of
// call_dynamic_tool, the result of call_dynamic_tool(GROUP, TOOL, ARGS),
// and the session's ID.

import process from "node:process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, group, tool, args] = process.argv.slice(2);
const out = {};
let transport, client;
try {
  const headers = token === "-" ? {} : { Authorization: `Bearer ${token}` };
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  client = new Client({ name: "ts-http", version: "1" });
  await client.connect(transport);
  out.session = transport.sessionId;
  const { tools } = await client.listTools();
  const call = tools.find((t) => t.name === "call_dynamic_tool");
  out.groups = call?.inputSchema?.properties?.group?.enum ?? null;
  out.result = await client.callTool({ name: "call_dynamic_tool", arguments: { group, name: tool, args: JSON.parse(args) } });
} catch (e) {
  out.error = String(e?.message ?? e);
  if (e?.code !== undefined) out.status = e.code;
}
// End the session (DELETE) whatever happened: its event stream would keep
// Node running.
try {
  if (transport?.sessionId) await transport.terminateSession();
  await client?.close();
} catch {}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
