// seqserve playground: plain JavaScript against seqserve's own APIs, nothing loaded from elsewhere.
// REST for the model list and the session API (create, read, fork, end); one WebSocket per model
// (/v2/models/{m}/stream) for the steps, V2 JSON requests matched to their answers by `id`.
"use strict";

const ROOT = new URL("../", location.href); // the page is served at <server>/ui/
// The example store's character model reads one-hot characters of this alphabet (scripts/build_examples.py).
const ALPHABETS = { chars: " abcdehilmnorstw." };
const CONTINUATION = 24; // characters each fork generates

const status = (text) => { document.getElementById("status").textContent = text || ""; };

const api = {
  key: sessionStorage.getItem("seqserve-key") || "",
  headers(json) {
    const headers = json ? { "content-type": "application/json" } : {};
    if (this.key) headers.authorization = `Bearer ${this.key}`;
    return headers;
  },
  async call(method, path, body) {
    const response = await fetch(new URL(path, ROOT), {
      method, headers: this.headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const data = text ? JSON.parse(text) : {};
    if (!response.ok) throw new Error(`${method} /${path}: ${response.status} ${data.error || text}`);
    return data;
  },
};

// One WebSocket to a model's stream; answers come back with the request's id.
class Stream {
  constructor(model) {
    this.model = model;
    this.pending = new Map();
    this.count = 0;
    this.opened = this.open();
  }

  open() {
    const url = new URL(`v2/models/${encodeURIComponent(this.model)}/stream`, ROOT);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol, base64url-encoded
    // (a key may hold characters a subprotocol cannot); the server selects seqserve.v2.
    const key = btoa(api.key).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    this.socket = api.key ? new WebSocket(url, ["seqserve.v2", `base64url.bearer.seqserve.${key}`]) : new WebSocket(url);
    this.socket.onmessage = (event) => this.answer(JSON.parse(event.data));
    this.socket.onclose = (event) => {
      for (const { reject } of this.pending.values()) reject(new Error(`stream closed (${event.code} ${event.reason})`));
      this.pending.clear();
      this.opened = null;
    };
    return new Promise((resolve, reject) => {
      this.socket.onopen = resolve;
      this.socket.onerror = () => reject(new Error(`could not open the WebSocket for ${this.model}`));
    });
  }

  answer(message) {
    const waiting = this.pending.get(message.id);
    if (!waiting) return;
    this.pending.delete(message.id);
    if (message.error !== undefined) waiting.reject(new Error(`${message.status || ""} ${message.error}`));
    else waiting.resolve(message);
  }

  async infer(request) {
    if (!this.opened) this.opened = this.open();
    await this.opened;
    const id = `ui-${++this.count}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ ...request, id }));
    });
  }
}

// A session held by the server; its steps are numbered, so the server applies each once.
class Session {
  constructor(model, id, steps = 0) { Object.assign(this, { model, id, steps }); }

  static async create(model) {
    const made = await api.call("POST", `v2/models/${encodeURIComponent(model)}/sessions`);
    return new Session(model, made.id);
  }

  get path() { return `v2/models/${encodeURIComponent(this.model)}/sessions/${encodeURIComponent(this.id)}`; }

  async step(stream, input, shape, data) {
    const answer = await stream.infer({
      inputs: [{ name: input, datatype: "FP32", shape, data }],
      parameters: { sequence_id: this.id, sequence_step: this.steps + 1 },
    });
    this.steps += 1;
    return Object.fromEntries(answer.outputs.map((o) => [o.name, o.data]));
  }

  async fork(count) {
    const made = await api.call("POST", `${this.path}/fork`, { count });
    return made.sessions.map((s) => new Session(this.model, s.session_id, s.sequence_step));
  }

  async describe() {
    const read = await api.call("GET", this.path);
    const bytes = read.outputs.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
    const shapes = read.outputs.map((t) => `${t.name} [${t.shape}]`).join(", ");
    return `session ${this.id.slice(0, 8)}… · step ${read.parameters.sequence_step} · state ${bytes} B (${shapes})`;
  }

  async end() { try { await api.call("DELETE", this.path); } catch (e) { /* expired or ended already */ } }
}

// ---- models ------------------------------------------------------------------------------------
async function listModels() {
  const index = await api.call("POST", "v2/repository/index", {});
  const ready = index.filter((m) => m.state === "READY").map((m) => m.name);
  const rows = await Promise.all([...new Set(ready)].sort().map(async (name) => {
    const [meta, config] = await Promise.all([
      api.call("GET", `v2/models/${encodeURIComponent(name)}`),
      api.call("GET", `v2/models/${encodeURIComponent(name)}/config`),
    ]);
    return { name, meta, stateful: Boolean(config.sequence_batching) };
  }));
  const tensors = (list) => list.map((t) => `<code>${t.name}</code> ${t.datatype} [${t.shape.join(", ")}]`).join("<br>");
  document.querySelector("#models tbody").innerHTML = rows.map((r) =>
    `<tr data-model="${r.name}"><td><b>${r.name}</b></td><td>${tensors(r.meta.inputs)}</td>` +
    `<td>${tensors(r.meta.outputs)}</td><td>${r.stateful ? "yes" : "no"}</td></tr>`).join("");
  return new Set(rows.map((r) => r.name));
}

// ---- chars: type, watch the next-character probabilities, fork ----------------------------------
function oneHot(alphabet, text) {
  const data = [];
  for (const char of text) for (let i = 0; i < alphabet.length; i++) data.push(alphabet[i] === char ? 1 : 0);
  return data;
}

function startChars(model) {
  const alphabet = ALPHABETS[model];
  const input = document.getElementById("chars-text");
  const bars = document.getElementById("chars-probabilities");
  const forkButton = document.getElementById("chars-fork");
  const stream = new Stream(model);
  let session = null, sent = "", probabilities = null;
  let queue = Promise.resolve();

  // The next-character probabilities after `text` (V2 JSON data is flat: next_char [1, 17] is 17 numbers).
  const step = async (s, text) => (await s.step(stream, "chars", [1, text.length, alphabet.length], oneHot(alphabet, text))).next_char;

  function show(p) {
    probabilities = p;
    const top = p.indexOf(Math.max(...p));
    bars.innerHTML = [...alphabet].map((char, i) =>
      `<div class="bar${i === top ? " top" : ""}" data-char="${char}" data-p="${p[i]}">` +
      `<span class="char">${char === " " ? "␣" : char}</span><span class="track"><span class="fill" style="width:${(100 * p[i]).toFixed(1)}%"></span></span>` +
      `<span>${p[i].toFixed(3)}</span></div>`).join("");
    bars.dataset.text = sent;
    forkButton.disabled = false;
  }

  async function update() {
    const wanted = [...input.value.toLowerCase()].filter((c) => alphabet.includes(c)).join("");
    if (wanted === sent) return;
    if (session && wanted.startsWith(sent)) { // typed on: only the new characters travel
      const p = await step(session, wanted.slice(sent.length));
      sent = wanted;
      show(p);
    } else { // edited or deleted: a new session reads the whole text once
      if (session) session.end();
      session = await Session.create(model);
      sent = "";
      bars.innerHTML = "";
      forkButton.disabled = true;
      if (wanted) { const p = await step(session, wanted); sent = wanted; show(p); }
    }
    document.getElementById("chars-session").textContent = await session.describe();
  }

  input.addEventListener("input", () => {
    queue = queue.then(update).then(() => status(""), (e) => status(e.message));
  });

  forkButton.addEventListener("click", () => {
    queue = queue.then(async () => {
      const branches = document.getElementById("chars-branches");
      const order = probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
      const forks = await session.fork(3);
      branches.innerHTML = "";
      await Promise.all(forks.map(async (fork, n) => {
        const box = document.createElement("div");
        box.className = "branch";
        box.dataset.branch = String(n);
        branches.appendChild(box);
        let next = alphabet[order[n][1]], text = ""; // branch n starts with the n-th likeliest character
        for (let i = 0; i < CONTINUATION; i++) {
          text += next;
          const p = await step(fork, next);
          next = alphabet[p.indexOf(Math.max(...p))]; // then goes on greedily
          box.innerHTML = `<div class="text">${sent}<b>${text}</b></div><div class="session-line">fork ${fork.id.slice(0, 8)}… · step ${fork.steps}</div>`;
        }
        box.dataset.continuation = text;
        await fork.end();
      }));
      branches.dataset.done = String(forks.length);
    }).then(() => status(""), (e) => status(e.message));
  });
}

// ---- sensor: draw a stream, plot it with the model's next-reading predictions --------------------
function startSensor(model) {
  const canvas = document.getElementById("sensor-plot");
  const context = canvas.getContext("2d");
  const stream = new Stream(model);
  const span = 2.0; // readings from -span to +span fill the plot's height
  let session = null, readings = [], predictions = [], busy = false, last = 0;

  const y = (v) => canvas.height / 2 - (v / span) * (canvas.height / 2 - 8);

  function plot() {
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = "#e4e7ec";
    context.beginPath(); context.moveTo(0, y(0)); context.lineTo(canvas.width, y(0)); context.stroke();
    const shown = 120, dx = canvas.width / shown, from = Math.max(0, readings.length - shown + 1);
    const line = (values, offset, colour) => {
      context.strokeStyle = colour; context.lineWidth = 2; context.beginPath();
      values.slice(from).forEach((v, i) => { const x = (i + offset) * dx; i ? context.lineTo(x, y(v)) : context.moveTo(x, y(v)); });
      context.stroke();
    };
    line(readings, 0, "#2563eb");
    line(predictions, 1, "#ea580c"); // a prediction is of the reading one step later
    canvas.dataset.steps = String(readings.length);
  }

  async function send(value) {
    if (busy) return;
    busy = true;
    try {
      if (!session) session = await Session.create(model);
      const out = await session.step(stream, "reading", [1, 1, 1], [value]);
      readings.push(value);
      predictions.push(out.next_reading[0]);
      plot();
      if (session.steps % 10 === 1) document.getElementById("sensor-session").textContent = await session.describe();
      status("");
    } catch (e) { status(e.message); } finally { busy = false; }
  }

  canvas.addEventListener("pointermove", (event) => {
    if (performance.now() - last < 40) return;
    last = performance.now();
    const rect = canvas.getBoundingClientRect();
    const v = ((rect.height / 2 - (event.clientY - rect.top)) / (rect.height / 2)) * span;
    send(Math.max(-span, Math.min(span, v)));
  });
  document.getElementById("sensor-wave").addEventListener("click", async () => {
    const t0 = readings.length;
    for (let t = t0; t < t0 + 60; t++) { await send(Math.sin(0.1 * t) + 0.5 * Math.sin(0.031 * t)); }
  });
  document.getElementById("sensor-reset").addEventListener("click", async () => {
    if (session) await session.end();
    session = null; readings = []; predictions = []; plot();
    document.getElementById("sensor-session").textContent = "no session yet";
  });
  plot();
}

// ---- start ---------------------------------------------------------------------------------------
async function start() {
  const key = document.getElementById("api-key");
  key.value = api.key;
  key.addEventListener("change", () => { api.key = key.value.trim(); sessionStorage.setItem("seqserve-key", api.key); location.reload(); });
  try {
    const models = await listModels();
    if (models.has("chars")) { document.getElementById("chars-panel").hidden = false; startChars("chars"); }
    if (models.has("sensor")) { document.getElementById("sensor-panel").hidden = false; startSensor("sensor"); }
    document.body.dataset.ready = "true";
  } catch (e) {
    status(e.message.includes("401") ? "This server has API keys on: give yours above." : e.message);
  }
}

start();
