// Connects the official TypeScript SDK client to a Moat gateway through
// `moat connect`, the way a desktop client configured with
// {"command": "moat", "args": ["connect"]} does, and reports what that
// client sees.
//
// Usage: node tsconnect.mjs MOAT SOCKET GROUP TOOL ARGS_JSON
//
// Output: one JSON line {"groups": [...], "result": {...}} or
// {"error": "..."}: the group enum of call_dynamic_tool, and the result of
// call_dynamic_tool(GROUP, TOOL, ARGS).

import process from "node:process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [moat, socket, group, tool, args] = process.argv.slice(2);
const out = {};
try {
  const client = new Client({ name: "ts-connect", version: "1" });
  await client.connect(new StdioClientTransport({ command: moat, args: ["connect", socket], stderr: "inherit" }));
  const { tools } = await client.listTools();
  const call = tools.find((t) => t.name === "call_dynamic_tool");
  out.groups = call?.inputSchema?.properties?.group?.enum ?? null;
  out.result = await client.callTool({ name: "call_dynamic_tool", arguments: { group, name: tool, args: JSON.parse(args) } });
  await client.close();
} catch (e) {
  out.error = String(e?.message ?? e);
}
process.stdout.write(JSON.stringify(out) + "\n");
