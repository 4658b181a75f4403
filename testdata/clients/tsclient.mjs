// Drives a real moat with the official TypeScript SDK client, the way Claude
// Desktop, Cursor, VS Code and the MCP Inspector do, and runs the same probes
// directly against the upstreams, so that test/clients can compare what a
// user sees through Moat with what they would see without it.
//
// Usage: node tsclient.mjs SPEC.json
//
// SPEC: {"mode": "session"|"cold",
//        "moat": {"command": ..., "args": [...]},
//        "direct": {"ts": {"command", "args"}, "everything": {"command", "args"}},
//        "gate": "/path"}   (cold mode: the upstreams moat runs wait for this file)
//
// Every request is made through the SDK's own methods, so moat receives the
// SDK's real request shapes (no params on the list methods, a numeric
// progressToken, ...). Nothing is hand-built JSON.
//
// Output: one JSON line per probe on stdout,
//   {"probe", "ok", "error", "alive", "session", "crash", "ms", "data"}
// and a last line {"done": true}. A probe that throws still reports; a moat
// that exits is detected (the transport's onclose and the process's exit) and,
// in session mode, restarted so that the later probes still say something.
// Diagnostics go to stderr.

import fs from "node:fs";
import process from "node:process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

// Generous: the machine may be a busy 2-core runner. A passing run never
// waits this long.
const WAIT_MS = 60_000;
// logLines returns the lines of a moat stderr that match re, each cut to
// 300 characters.
const logLines = (stderr, re) =>
  stderr
    .split("\n")
    .filter((l) => re.test(l))
    .map((l) => l.slice(0, 300));

// Bounds a moat stderr excerpt in a report.
const EXCERPT = 4096;
// Bounds the stderr kept per moat (MOAT_LOG=debug is chatty).
const KEEP = 256 * 1024;

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

// The whole run has a deadline, so that a hung moat still yields a report.
setTimeout(() => {
  log("driver deadline passed; exiting");
  emit({ done: true, error: "driver deadline passed" });
  process.exit(3);
}, spec.deadlineMs ?? 200_000).unref();

function log(...a) {
  process.stderr.write(`tsclient: ${a.join(" ")}\n`);
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function errText(e) {
  if (e === undefined || e === null) return String(e);
  const name = e.name ?? "Error";
  const msg = e.message ?? String(e);
  const code = e.code !== undefined ? ` (code ${e.code})` : "";
  return `${name}: ${msg}${code}`;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// waitFor polls cond until it holds or ms pass, or conn (when given) has
// closed: a dead moat will not make it hold. The interval is short and the
// deadline generous: a waited-for event, never a fixed sleep.
async function waitFor(cond, ms = WAIT_MS, conn = null) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end || conn?.closed) return false;
    await sleep(25);
  }
}

// ---- What the client side answers -------------------------------------

// The roots every client of this run shows; the roots probe changes them.
const roots = [{ uri: "file:///tmp/moat-client-root-1", name: "first root" }];

// Records what reached each client, by label ("moat", "ts", "everything").
class Observer {
  constructor(label) {
    this.label = label;
    this.sampling = [];
    this.elicitation = [];
    this.logs = [];
    this.updated = [];
    this.listChanged = { tools: 0, prompts: 0, resources: 0 };
    this.refreshed = { tools: null, prompts: null, resources: null };
    this.refreshErrors = [];
  }
}

function firstText(messages) {
  for (const m of messages ?? []) {
    const c = Array.isArray(m.content) ? m.content[0] : m.content;
    if (c?.type === "text") return c.text;
  }
  return "";
}

// makeClient builds a Client that declares sampling, elicitation and roots
// (with listChanged), as full-featured clients such as VS Code do, with
// handlers for the requests an upstream may send back through Moat.
function makeClient(obs, autoRefresh) {
  const onChanged = (kind) => (err, items) => {
    obs.listChanged[kind]++;
    if (err) obs.refreshErrors.push(`${kind}: ${errText(err)}`);
    if (items) obs.refreshed[kind] = items;
  };
  const client = new Client(
    { name: "moat-client-compat", version: "1.0.0" },
    {
      // applyDefaults: a form client shows the schema's defaults and sends
      // them back unless the user changes them (SEP-1034), as Moat's own
      // upstream side does for whatever the client leaves out.
      capabilities: { sampling: {}, elicitation: { form: { applyDefaults: true } }, roots: { listChanged: true } },
      listChanged: {
        tools: { autoRefresh, debounceMs: 0, onChanged: onChanged("tools") },
        prompts: { autoRefresh, debounceMs: 0, onChanged: onChanged("prompts") },
        resources: { autoRefresh, debounceMs: 0, onChanged: onChanged("resources") },
      },
    },
  );
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    const p = req.params;
    obs.sampling.push({ text: firstText(p.messages), maxTokens: p.maxTokens, systemPrompt: p.systemPrompt ?? null });
    return {
      model: "moat-test-model",
      role: "assistant",
      stopReason: "endTurn",
      content: { type: "text", text: "sampled: " + firstText(p.messages) },
    };
  });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    const p = req.params;
    obs.elicitation.push({
      message: p.message,
      mode: p.mode ?? null,
      properties: Object.keys(p.requestedSchema?.properties ?? {}).sort(),
      required: p.requestedSchema?.required ?? [],
    });
    return { action: "accept", content: { name: "Ada" } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    return { roots: roots.map((r) => ({ ...r })) };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    obs.logs.push(n.params);
  });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    obs.updated.push(n.params.uri);
  });
  return client;
}

// ---- Connections --------------------------------------------------------

// Conn is one client on one stdio server: moat, or an upstream directly.
class Conn {
  constructor(label, server, { autoRefresh = false, keepStderr = false } = {}) {
    this.label = label;
    this.server = server;
    this.autoRefresh = autoRefresh;
    this.keepStderr = keepStderr;
  }

  async start() {
    this.obs = new Observer(this.label);
    this.stderr = "";
    this.stderrDropped = 0; // chars cut from the front of this.stderr
    this.closed = false;
    this.exit = null;
    this.transport = new StdioClientTransport({
      command: this.server.command,
      args: this.server.args ?? [],
      env: { ...process.env },
      stderr: "pipe",
    });
    this.transport.stderr.on("data", (d) => {
      if (this.keepStderr) {
        this.stderr += d.toString();
        if (this.stderr.length > KEEP) {
          this.stderrDropped += this.stderr.length - KEEP / 2;
          this.stderr = this.stderr.slice(-KEEP / 2);
        }
      } else {
        process.stderr.write(`[${this.label}] ${d}`);
      }
    });
    // Counted once written to the pipe: cold mode opens the gate only when
    // its requests have surely left.
    this.sent = 0;
    const origSend = this.transport.send.bind(this.transport);
    this.transport.send = (msg, opts) =>
      origSend(msg, opts).then(() => {
        if (msg.method && msg.id !== undefined) this.sent++;
      });
    // The exit status says how moat went (a Go panic exits 2); the SDK's
    // transport does not expose it, so listen on its child process.
    const origStart = this.transport.start.bind(this.transport);
    this.transport.start = async () => {
      await origStart();
      this.pid = this.transport.pid;
      this.transport._process?.once("exit", (code, signal) => {
        this.exit = { code, signal };
      });
    };
    this.client = makeClient(this.obs, this.autoRefresh);
    this.client.onclose = () => {
      this.closed = true;
    };
    this.errors = [];
    this.client.onerror = (e) => {
      this.errors.push(errText(e));
      log(`${this.label}: client error: ${errText(e)}`);
    };
    const t0 = Date.now();
    await this.client.connect(this.transport, { timeout: WAIT_MS });
    this.connectMs = Date.now() - t0;
  }

  // alive: the process is still there and still answers. A crash shows as a
  // closed transport; a hang as a ping that does not come back.
  async alive() {
    if (this.closed) return false;
    try {
      process.kill(this.pid, 0);
    } catch {
      return false;
    }
    try {
      await this.client.ping({ timeout: 20_000 });
      return true;
    } catch (e) {
      this.pingError = errText(e);
      return false;
    }
  }

  // crash describes how moat ended, with a bounded stderr excerpt: from the
  // panic if there is one (its first lines name the bug), else the tail.
  crash() {
    const s = this.stderr;
    let excerpt;
    const i = s.search(/^(panic|fatal error): /m);
    if (i >= 0) excerpt = s.slice(i, i + EXCERPT);
    else excerpt = s.length > EXCERPT ? "…" + s.slice(-EXCERPT) : s;
    return { exit: this.exit, closed: this.closed, pingError: this.pingError ?? null, stderr: excerpt };
  }

  async close() {
    try {
      await this.client.close();
    } catch (e) {
      log(`${this.label}: close: ${errText(e)}`);
    }
  }
}

// ---- Probe helpers ------------------------------------------------------

// listAll reads every page the way a client that shows a full list does: the
// first request is the SDK's default shape (no params), later ones carry the
// cursor.
async function listAll(client, method, key) {
  const items = [];
  let res = await client[method]();
  items.push(...res[key]);
  for (let pages = 1; res.nextCursor && pages < 100; pages++) {
    res = await client[method]({ cursor: res.nextCursor });
    items.push(...res[key]);
  }
  return items;
}

async function outcome(fn) {
  try {
    return { result: await fn() };
  } catch (e) {
    return { error: errText(e) };
  }
}

function callDynamic(client, group, name, args, options) {
  return client.callTool({ name: "call_dynamic_tool", arguments: { group, name, args } }, undefined, options);
}

function text(result) {
  return (result?.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
}

// The upstreams' own listings, the reference for what moat should show.
const LISTS = [
  ["resources/list", "listResources", "resources"],
  ["resources/templates/list", "listResourceTemplates", "resourceTemplates"],
  ["prompts/list", "listPrompts", "prompts"],
];

function keyOf(item) {
  return item.uri ?? item.uriTemplate ?? item.name;
}

function sameKeys(a, b) {
  const ka = a.map(keyOf).sort();
  const kb = b.map(keyOf).sort();
  return JSON.stringify(ka) === JSON.stringify(kb);
}

// ---- Session mode -----------------------------------------------------------

async function sessionMode() {
  const direct = {};
  for (const [g, server] of Object.entries(spec.direct)) direct[g] = new Conn(g, server);
  const moatConn = () => new Conn("moat", spec.moat, { keepStderr: true });

  let session = 0;
  let moat = moatConn();
  let connectError = null;
  const startAll = await Promise.allSettled([
    moat.start().catch((e) => {
      connectError = e;
    }),
    ...Object.values(direct).map((c) => c.start()),
  ]);
  session = 1;
  for (const [i, r] of startAll.entries()) {
    if (r.status === "rejected") log(`start ${i}: ${errText(r.reason)}`);
  }
  const directError = Object.values(direct).find((c) => c.closed || !c.client.getServerVersion());

  // The upstreams' own view, once: the reference for the transparency probes.
  const ref = {};
  async function reference() {
    for (const [name, method, key] of LISTS) {
      ref[name] = {};
      for (const [g, c] of Object.entries(direct)) ref[name][g] = await listAll(c.client, method, key);
    }
  }

  // warmUp waits until moat has connected both groups and mirrors their
  // lists. It asks with explicit empty params, not the SDK's default shape,
  // so that a moat that cannot take the default shape fails in the probe
  // that sends it, not here.
  async function warmUp(m) {
    for (const g of Object.keys(direct)) {
      await m.client.callTool({ name: "get_dynamic_tools", arguments: { group: g } });
    }
    let last = {};
    const ok = await waitFor(async () => {
      for (const [name, method, key] of LISTS) {
        const got = (await m.client[method]({}))[key];
        last[name] = got.map(keyOf).sort();
        const want = Object.values(ref[name]).flat();
        if (!sameKeys(got, want)) return false;
      }
      return true;
    }, WAIT_MS, m);
    if (!ok) throw new Error(`moat's lists did not match the upstreams' within ${WAIT_MS} ms; last: ${JSON.stringify(last).slice(0, 1500)}`);
  }

  // ensure restarts moat after a crash, replaying what a client does on
  // reconnect, so that one crash does not hide what later probes would find.
  async function ensure() {
    if (!moat.closed) return;
    log(`moat session ${session} ended (${JSON.stringify(moat.exit)}); starting a new one`);
    moat = moatConn();
    session++;
    await moat.start();
    await moat.client.setLoggingLevel("debug").catch(() => {});
    await warmUp(moat).catch((e) => log(`warm-up after restart: ${errText(e)}`));
  }

  async function probe(name, fn) {
    const t0 = Date.now();
    const rep = { probe: name, ok: false, session };
    try {
      await ensure();
      rep.session = session;
      rep.data = await fn(moat);
      rep.ok = true;
    } catch (e) {
      rep.error = errText(e);
    }
    rep.alive = await moat.alive().catch(() => false);
    if (!rep.alive) rep.crash = moat.crash();
    rep.ms = Date.now() - t0;
    emit(rep);
  }

  if (directError) {
    emit({ probe: "setup", ok: false, error: `a direct upstream did not start: ${directError.label}`, alive: true });
  }

  // The handshake, ping, logging level.
  {
    const rep = { probe: "initialize", session, ms: moat.connectMs };
    if (connectError) {
      rep.ok = false;
      rep.error = errText(connectError);
    } else {
      rep.ok = true;
      rep.data = {
        serverInfo: moat.client.getServerVersion(),
        capabilities: moat.client.getServerCapabilities(),
        hasInstructions: Boolean(moat.client.getInstructions()),
      };
    }
    rep.alive = await moat.alive().catch(() => false);
    if (!rep.alive) rep.crash = moat.crash();
    emit(rep);
  }
  await probe("ping", async (m) => {
    await m.client.ping();
    return {};
  });
  await probe("logging/setLevel", async (m) => {
    await m.client.setLoggingLevel("debug");
    return {};
  });
  await probe("tools/list", async (m) => {
    const res = await m.client.listTools();
    return {
      tools: res.tools.map((t) => ({
        name: t.name,
        properties: Object.keys(t.inputSchema?.properties ?? {}).sort(),
        required: t.inputSchema?.required ?? [],
      })),
    };
  });

  await reference();
  await probe("warm-up", async (m) => {
    const t0 = Date.now();
    await warmUp(m);
    return { ms: Date.now() - t0 };
  });

  // The two tools.
  await probe("tools/call/get_dynamic_tools", async (m) => {
    const out = { moat: {}, direct: {} };
    for (const [g, c] of Object.entries(direct)) {
      const res = await m.client.callTool({ name: "get_dynamic_tools", arguments: { group: g } });
      if (res.isError) throw new Error(`get_dynamic_tools(${g}) is an error: ${text(res).slice(0, 500)}`);
      out.moat[g] = JSON.parse(text(res)).map((t) => t.name).sort();
      out.direct[g] = (await c.client.listTools()).tools.map((t) => t.name).sort();
    }
    return out;
  });
  await probe("tools/call/call_dynamic_tool", async (m) => {
    const cases = [
      ["ts", "echo", { message: "hello from the TS SDK" }],
      ["ts", "add", { a: 2, b: 3 }],
      ["everything", "echo", { message: "hello from the TS SDK" }],
      ["everything", "get-sum", { a: 2, b: 3 }],
    ];
    const out = [];
    for (const [g, name, args] of cases) {
      out.push({
        group: g,
        name,
        moat: await outcome(() => callDynamic(m.client, g, name, args)),
        direct: await outcome(() => direct[g].client.callTool({ name, arguments: args })),
      });
    }
    return { cases: out };
  });

  // Progress: the SDK sends a numeric progressToken with onprogress.
  await probe("progress/ts", async (m) => {
    const seen = [];
    // Some work after the last step, as a real tool does: a result right on
    // the heels of its progress reaches the SDK in the same read, and the
    // SDK drops that progress (see checkProgress in tsclient_test.go).
    const res = await callDynamic(m.client, "ts", "progress", { steps: 3, pause_ms: 50 }, { onprogress: (p) => seen.push(p) });
    return { notifications: seen, result: res };
  });
  await probe("progress/everything", async (m) => {
    const seen = [];
    const res = await callDynamic(
      m.client,
      "everything",
      "trigger-long-running-operation",
      { duration: 1, steps: 3 },
      { onprogress: (p) => seen.push(p) },
    );
    return { notifications: seen, result: res };
  });

  // Cancellation: abort once the upstream is surely running the tool (it
  // has reported progress), as a user pressing Stop would.
  await probe("cancel", async (m) => {
    const ac = new AbortController();
    const t0 = Date.now();
    const stderrFrom = m.stderrDropped + m.stderr.length;
    const errorsFrom = m.errors.length;
    let error = null;
    try {
      const res = await callDynamic(m.client, "ts", "slow", { ms: 120_000 }, {
        signal: ac.signal,
        onprogress: () => ac.abort(),
        timeout: 90_000,
      });
      error = { unexpectedResult: res };
    } catch (e) {
      error = { name: e.name, message: e.message, code: e.code ?? null };
    }
    const abortMs = Date.now() - t0;
    // The testserver logs "slow: cancelled" when its context ends; moat logs
    // its upstreams' stderr at debug level (MOAT_LOG=debug).
    const since = () => m.stderr.slice(Math.max(0, stderrFrom - m.stderrDropped));
    const upstreamCancelled = await waitFor(() => since().includes("slow: cancelled"), 30_000, m);
    const after = await outcome(() => callDynamic(m.client, "ts", "echo", { message: "after cancel" }));
    // A response to the cancelled request shows as the SDK's "unknown
    // message ID" error. It may come later than this, so its absence proves
    // little; its presence is a bug.
    const lateResponses = m.errors.slice(errorsFrom).filter((e) => e.includes("unknown message ID"));
    return { aborted: ac.signal.aborted, error, abortMs, upstreamCancelled, after, lateResponses };
  });

  // Logging: after logging/setLevel, an upstream's log message reaches the client.
  await probe("logging/message", async (m) => {
    const from = m.obs.logs.length;
    const res = await callDynamic(m.client, "ts", "log", { level: "warning", message: "log line through moat" });
    const got = await waitFor(() => m.obs.logs.slice(from).some((l) => l.data === "log line through moat"), WAIT_MS, m);
    return { result: res, arrived: got, logs: m.obs.logs.slice(from).slice(0, 10) };
  });

  // Resources, templates, prompts: the SDK's default shapes, compared
  // with the upstreams' own answers.
  for (const [name, method, key] of LISTS) {
    await probe(name, async (m) => ({ moat: await listAll(m.client, method, key), direct: ref[name] }));
  }

  const docURI = (ref["resources/list"].everything ?? []).map((r) => r.uri).find((u) => u.startsWith("demo://resource/static/document/"));
  const reads = [
    ["ts", "ts://static/hello"],
    ["ts", "ts://static/binary"],
    ["ts", "ts://items/42"],
    ["everything", docURI],
    ["everything", "demo://resource/dynamic/text/1"],
  ];
  await probe("resources/read", async (m) => {
    const out = [];
    for (const [g, uri] of reads) {
      out.push({
        group: g,
        uri,
        moat: await outcome(() => m.client.readResource({ uri })),
        direct: await outcome(() => direct[g].client.readResource({ uri })),
      });
    }
    return { cases: out };
  });

  const gets = [
    ["ts", "greet", { name: "Ada" }],
    ["ts", "plain", undefined],
    ["everything", "simple-prompt", undefined],
    ["everything", "args-prompt", { city: "Paris", state: "Texas" }],
    ["everything", "completable-prompt", { department: "Engineering", name: "Alice" }],
    ["everything", "resource-prompt", { resourceType: "Text", resourceId: "2" }],
  ];
  await probe("prompts/get", async (m) => {
    const out = [];
    for (const [g, name, args] of gets) {
      const params = args ? { name, arguments: args } : { name };
      out.push({
        group: g,
        name,
        moat: await outcome(() => m.client.getPrompt(params)),
        direct: await outcome(() => direct[g].client.getPrompt(params)),
      });
    }
    return { cases: out };
  });

  const completions = [
    ["ts", { ref: { type: "ref/prompt", name: "greet" }, argument: { name: "name", value: "a" } }],
    ["ts", { ref: { type: "ref/resource", uri: "ts://items/{id}" }, argument: { name: "id", value: "4" } }],
    ["everything", { ref: { type: "ref/prompt", name: "completable-prompt" }, argument: { name: "department", value: "E" } }],
    [
      "everything",
      {
        ref: { type: "ref/prompt", name: "completable-prompt" },
        argument: { name: "name", value: "" },
        context: { arguments: { department: "Sales" } },
      },
    ],
    [
      "everything",
      { ref: { type: "ref/resource", uri: "demo://resource/dynamic/text/{resourceId}" }, argument: { name: "resourceId", value: "3" } },
    ],
  ];
  await probe("completion/complete", async (m) => {
    const out = [];
    for (const [g, params] of completions) {
      out.push({
        group: g,
        ref: params.ref,
        argument: params.argument,
        moat: await outcome(() => m.client.complete(params)),
        direct: await outcome(() => direct[g].client.complete(params)),
      });
    }
    return { cases: out };
  });

  await probe("resources/subscribe", async (m) => {
    const uri = "ts://static/hello";
    const from = m.obs.updated.length;
    await m.client.subscribeResource({ uri });
    await callDynamic(m.client, "ts", "touch", { uri });
    const updated = await waitFor(() => m.obs.updated.slice(from).includes(uri), WAIT_MS, m);
    await m.client.unsubscribeResource({ uri });
    const demo = await outcome(async () => {
      await m.client.subscribeResource({ uri: docURI });
      await m.client.unsubscribeResource({ uri: docURI });
      return {};
    });
    return { updated, updates: m.obs.updated.slice(from).slice(0, 10), everything: demo };
  });

  // Requests from the upstreams to the client, answered by the client's
  // handlers through moat, compared with the same round trip done directly.
  await probe("sampling", async (m) => {
    const run = async (c, call) => {
      const from = c.obs.sampling.length;
      const res = await outcome(call);
      return { ...res, requests: c.obs.sampling.slice(from) };
    };
    return {
      ts: {
        moat: await run(m, () => callDynamic(m.client, "ts", "ask_client", { kind: "sampling" })),
        direct: await run(direct.ts, () => direct.ts.client.callTool({ name: "ask_client", arguments: { kind: "sampling" } })),
      },
      everything: {
        moat: await run(m, () => callDynamic(m.client, "everything", "trigger-sampling-request", { prompt: "say hi", maxTokens: 20 })),
        direct: await run(direct.everything, () =>
          direct.everything.client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "say hi", maxTokens: 20 } }),
        ),
      },
    };
  });
  await probe("elicitation", async (m) => {
    const run = async (c, call) => {
      const from = c.obs.elicitation.length;
      const res = await outcome(call);
      return { ...res, requests: c.obs.elicitation.slice(from) };
    };
    return {
      ts: {
        moat: await run(m, () => callDynamic(m.client, "ts", "ask_client", { kind: "elicitation" })),
        direct: await run(direct.ts, () => direct.ts.client.callTool({ name: "ask_client", arguments: { kind: "elicitation" } })),
      },
      everything: {
        moat: await run(m, () => callDynamic(m.client, "everything", "trigger-elicitation-request", {})),
        direct: await run(direct.everything, () =>
          direct.everything.client.callTool({ name: "trigger-elicitation-request", arguments: {} }),
        ),
      },
    };
  });
  await probe("roots", async (m) => {
    const tsRoots = async () => text(await callDynamic(m.client, "ts", "ask_client", { kind: "roots" }));
    const evRoots = async () => text(await callDynamic(m.client, "everything", "get-roots-list", {}));
    const before = { ts: await tsRoots(), everything: await evRoots() };
    // The user adds a workspace folder; the client says its roots changed.
    const added = "file:///tmp/moat-client-root-2";
    if (!roots.some((r) => r.uri === added)) roots.push({ uri: added, name: "second root" });
    await m.client.sendRootsListChanged();
    const after = {};
    const seen = {
      ts: await waitFor(async () => (after.ts = await tsRoots()).includes(added), 20_000, m),
      everything: await waitFor(async () => (after.everything = await evRoots()).includes(added), 20_000, m),
    };
    return { before, after, seen, added };
  });

  // list_changed: an upstream's change reaches the client, and the lists a
  // client re-reads then are right.
  await probe("list_changed", async (m) => {
    const lc = m.obs.listChanged;
    // refreshedUntil re-reads a list after each new notification of kind, as
    // the SDK's autoRefresh does, until a read shows what check wants. A
    // read that races ahead of moat's own update is no failure as long as a
    // later notification follows.
    const refreshedUntil = async (kind, from, read, check) => {
      let seen = from;
      let reads = 0;
      let last = null;
      const ok = await waitFor(
        async () => {
          if (lc[kind] === seen) return false;
          seen = lc[kind];
          reads++;
          last = await read();
          return check(last);
        },
        WAIT_MS,
        m,
      );
      return { notified: lc[kind] > from, notifications: lc[kind] - from, reads, ok, last };
    };

    const tools0 = lc.tools;
    await callDynamic(m.client, "ts", "add_tool", { name: "fresh_tool" });
    const tools = await refreshedUntil(
      "tools",
      tools0,
      async () => ({
        list: (await m.client.listTools()).tools.map((t) => t.name).sort(),
        gdt: text(await m.client.callTool({ name: "get_dynamic_tools", arguments: { group: "ts" } })),
      }),
      (r) => r.gdt.includes("fresh_tool"),
    );

    const res0 = lc.resources;
    const uri = "demo://resource/session/moat-note.txt.gz";
    const gz = await callDynamic(m.client, "everything", "gzip-file-as-resource", {
      name: "moat-note.txt.gz",
      data: "data:text/plain;base64,aGVsbG8gZnJvbSBtb2F0",
      outputType: "resourceLink",
    });
    const resources = await refreshedUntil(
      "resources",
      res0,
      async () => (await listAll(m.client, "listResources", "resources")).map(keyOf),
      (l) => l.includes(uri),
    );
    return {
      toolsChanged: tools.notified,
      toolsAfter: tools.last?.list ?? [],
      freshToolListed: tools.ok,
      toolNotifications: tools.notifications,
      gzipIsError: Boolean(gz.isError),
      gzipText: text(gz).slice(0, 300),
      resourcesChanged: resources.notified,
      newResourceListed: resources.ok,
      resourceNotifications: resources.notifications,
      resourcesLastRead: (resources.last ?? []).slice(0, 30),
      refreshErrors: m.obs.refreshErrors.slice(0, 10),
      // What moat said about lists and the everything group while the
      // resource was awaited: a failure names the step that lost it.
      moatLog: resources.ok ? [] : logLines(m.stderr, /list|everything|restart|unavailable|ready/).slice(-40),
    };
  });

  // A client that quits closes moat's stdin; moat should end on its own.
  {
    const rep = { probe: "shutdown", ok: true };
    await ensure().catch((e) => {
      rep.ok = false;
      rep.error = errText(e);
    });
    rep.session = session;
    const t0 = Date.now();
    const m = moat;
    const wasAlive = !m.closed;
    await m.close();
    await waitFor(() => m.exit !== null, 15_000);
    rep.ms = Date.now() - t0;
    rep.alive = wasAlive;
    rep.data = { exit: m.exit, ms: rep.ms };
    const panic = m.stderr.search(/^(panic|fatal error): /m);
    if (panic >= 0) {
      rep.alive = false;
      rep.crash = m.crash();
    }
    emit(rep);
  }
  for (const c of Object.values(direct)) await c.close();
}

// ---- Cold mode --------------------------------------------------------------

// coldMode asks moat everything at once right after the handshake, while its
// upstreams are held at a gate (they start only once the gate file exists),
// then opens the gate. The answers must match the upstreams' own: a client
// asks once at start and shows what it got.
async function coldMode() {
  const direct = {};
  for (const [g, server] of Object.entries(spec.direct)) direct[g] = new Conn(g, server);
  await Promise.all(Object.values(direct).map((c) => c.start()));
  const ref = {};
  for (const [name, method, key] of LISTS) {
    ref[name] = {};
    for (const [g, c] of Object.entries(direct)) ref[name][g] = await listAll(c.client, method, key);
  }
  const docURI = ref["resources/list"].everything.map((r) => r.uri).find((u) => u.startsWith("demo://resource/static/document/"));

  // A real client refreshes on list_changed; this one does too, with the
  // SDK's own autoRefresh (default request shapes).
  const moat = new Conn("moat", spec.moat, { autoRefresh: true, keepStderr: true });
  const t0 = Date.now();
  try {
    await moat.start();
  } catch (e) {
    emit({ probe: "cold/initialize", ok: false, error: errText(e), alive: false, crash: moat.crash() });
    return;
  }

  const probes = [
    ["cold/resources/list", (c) => listAll(c, "listResources", "resources"), () => ref["resources/list"]],
    ["cold/resources/templates/list", (c) => listAll(c, "listResourceTemplates", "resourceTemplates"), () => ref["resources/templates/list"]],
    ["cold/prompts/list", (c) => listAll(c, "listPrompts", "prompts"), () => ref["prompts/list"]],
    ["cold/resources/read/ts", (c) => c.readResource({ uri: "ts://static/hello" }), () => direct.ts.client.readResource({ uri: "ts://static/hello" })],
    ["cold/resources/read/everything", (c) => c.readResource({ uri: docURI }), () => direct.everything.client.readResource({ uri: docURI })],
    [
      "cold/prompts/get/ts",
      (c) => c.getPrompt({ name: "greet", arguments: { name: "Ada" } }),
      () => direct.ts.client.getPrompt({ name: "greet", arguments: { name: "Ada" } }),
    ],
    ["cold/prompts/get/everything", (c) => c.getPrompt({ name: "simple-prompt" }), () => direct.everything.client.getPrompt({ name: "simple-prompt" })],
    [
      "cold/completion/complete",
      (c) => c.complete({ ref: { type: "ref/prompt", name: "completable-prompt" }, argument: { name: "department", value: "E" } }),
      () =>
        direct.everything.client.complete({
          ref: { type: "ref/prompt", name: "completable-prompt" },
          argument: { name: "department", value: "E" },
        }),
    ],
    [
      "cold/tools/call",
      (c) => callDynamic(c, "ts", "echo", { message: "cold" }),
      () => direct.ts.client.callTool({ name: "echo", arguments: { message: "cold" } }),
    ],
  ];
  // All requests leave before the gate opens, the way a client's start-up
  // burst does; nothing is awaited until then.
  const sent0 = moat.sent;
  const pending = probes.map(([, fn]) => outcome(() => fn(moat.client)));
  await waitFor(() => moat.sent - sent0 >= probes.length, WAIT_MS, moat);
  fs.writeFileSync(spec.gate, "open\n");
  const sentMs = Date.now() - t0;
  const got = await Promise.all(pending);
  const alive = await moat.alive().catch(() => false);
  const crash = alive ? undefined : moat.crash();
  for (const [i, [name, , want]] of probes.entries()) {
    const directAnswer = await outcome(want);
    emit({ probe: name, ok: true, alive, crash, data: { moat: got[i], direct: directAnswer, sentMs } });
  }

  // Later, a client that refreshed on list_changed shows the upstreams' lists.
  {
    const rep = { probe: "cold/list_changed/auto_refresh", ok: true };
    const want = Object.values(ref["resources/list"]).flat();
    const coldAnswer = got[0].result ?? [];
    const converged =
      sameKeys(coldAnswer, want) || (await waitFor(() => moat.obs.refreshed.resources && sameKeys(moat.obs.refreshed.resources, want), WAIT_MS, moat));
    rep.alive = await moat.alive().catch(() => false);
    if (!rep.alive) rep.crash = moat.crash();
    rep.data = {
      converged,
      listChanged: moat.obs.listChanged,
      refreshed: (moat.obs.refreshed.resources ?? []).map(keyOf).sort(),
      want: want.map(keyOf).sort(),
      refreshErrors: moat.obs.refreshErrors.slice(0, 10),
    };
    emit(rep);
  }
  await moat.close();
  for (const c of Object.values(direct)) await c.close();
}

try {
  if (spec.mode === "cold") await coldMode();
  else await sessionMode();
  emit({ done: true });
} catch (e) {
  emit({ done: true, error: errText(e) + "\n" + (e?.stack ?? "") });
  process.exitCode = 1;
}
// The direct upstreams and any stray timers must not keep the driver alive.
process.exit();
