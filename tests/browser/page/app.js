// A frontend's use of the SimplyTalk API, with nothing but the browser's fetch and WebRTC:
// sign up and in with the Auth emulator's REST API, create the profile in Firestore as the
// frontend does (firestore.rules lets the owner create it), then call every user endpoint
// cross-origin with the ID token. Every call's outcome lands in window.results[name]:
// {method, url, status, headers, body} or, when fetch itself rejects (CORS), {error}.
"use strict";

window.results = {};

// Only CORS-safelisted response headers and those the API exposes are readable here.
const READ_HEADERS = ["content-type", "location", "retry-after", "allow"];

function log(line) {
  const el = document.getElementById("log");
  if (el) el.textContent += line + "\n";
}

async function call(name, method, url, { token, body, json } = {}) {
  const init = { method, headers: {} };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const entry = { method, url };
  try {
    const resp = await fetch(url, init);
    entry.status = resp.status;
    entry.headers = {};
    for (const h of READ_HEADERS) {
      const value = resp.headers.get(h);
      if (value !== null) entry.headers[h] = value;
    }
    const text = await resp.text();
    try {
      entry.body = text ? JSON.parse(text) : null;
    } catch (e) {
      entry.text = text;
    }
  } catch (e) {
    entry.error = `${e.name}: ${e.message}`;
  }
  window.results[name] = entry;
  log(`${name}: ${method} ${url} -> ${entry.status ?? entry.error}`);
  return entry;
}

function need(entry, status) {
  if (entry.status !== status) {
    throw new Error(`${entry.method} ${entry.url}: expected ${status}, got ` +
                    `${entry.status ?? entry.error} ${JSON.stringify(entry.body ?? entry.text ?? "")}`);
  }
  return entry.body;
}

// A real WebRTC offer with an audio stream and the data channel OpenAI's Realtime API uses.
async function makeOffer() {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("audio", { direction: "sendrecv" });
  pc.createDataChannel("oai-events");
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  return { pc, sdp: offer.sdp };
}

async function runAll(cfg) {
  window.results = {};
  const auth = `http://${cfg.authHost}/identitytoolkit.googleapis.com/v1`;
  const fn = cfg.functions;

  // -- sign up, sign in, profile ---------------------------------------------------------
  const signUp = need(await call("auth.signUp", "POST", `${auth}/accounts:signUp?key=fake-api-key`,
    { json: { email: cfg.email, password: cfg.password, returnSecureToken: true } }), 200);
  const signIn = need(await call("auth.signIn", "POST", `${auth}/accounts:signInWithPassword?key=fake-api-key`,
    { json: { email: cfg.email, password: cfg.password, returnSecureToken: true } }), 200);
  const token = signIn.idToken;
  const uid = signUp.localId;
  window.results.uid = uid;
  const docs = `http://${cfg.firestoreHost}/v1/projects/${cfg.project}/databases/(default)/documents`;
  await call("firestore.createProfile", "POST", `${docs}/users?documentId=${encodeURIComponent(uid)}`, {
    token, json: { fields: { email: { stringValue: cfg.email }, displayName: { stringValue: "Browser Test" } } },
  });
  await call("firestore.readProfile", "GET", `${docs}/users/${encodeURIComponent(uid)}`, { token });

  // -- token-usage -------------------------------------------------------------------------
  await call("tokenUsage.get", "GET", fn["token-usage"], { token });
  await call("tokenUsage.noToken", "GET", fn["token-usage"]);
  // a simple request (no preflight) to a method the route lacks: the 405 and its Allow are readable
  await call("tokenUsage.wrongMethod", "POST", fn["token-usage"], { body: "" });
  await call("tokenUsage.badPeriod", "GET", `${fn["token-usage"]}?period=not-a-month`, { token });

  // -- openai-assistants -------------------------------------------------------------------
  const assistant = {
    name: "Front desk", systemPrompt: "You are the front desk of Acme Dental.",
    firstMessage: "Welcome to Acme Dental, how can I help?",
    voiceDetails: { voice: "marin" }, transcriberDetails: { model: "gpt-4o-transcribe" },
  };
  const base = fn["openai-assistants"];
  const created = await call("openaiAssistants.create", "POST", base, { token, json: assistant });
  const id = created.body && created.body.id;
  await call("openaiAssistants.createInvalid", "POST", base, { token, json: { name: "" } });
  await call("openaiAssistants.list", "GET", base, { token });
  await call("openaiAssistants.get", "GET", `${base}/${id}`, { token });
  await call("openaiAssistants.getMissing", "GET", `${base}/no-such-assistant`, { token });
  await call("openaiAssistants.patch", "PATCH", `${base}/${id}`,
    { token, json: { name: "Front desk (browser)", scrapedUrls: [cfg.scrapeUrl] } });
  await call("openaiAssistants.scrape", "POST", `${base}/${id}/scrape`, { token });
  await call("openaiAssistants.wrongMethod", "PUT", `${base}/${id}`, { token, json: assistant });

  // -- assistants (both providers) -----------------------------------------------------------
  await call("assistants.list", "GET", fn["assistants"], { token });
  await call("assistants.badPageSize", "GET", `${fn["assistants"]}?pageSize=-1`, { token });

  // -- realtime-calls: real offers from this browser's WebRTC stack -----------------------------
  const calls = fn["realtime-calls"];
  const { pc, sdp } = await makeOffer();
  window.results.offer = { sdp };
  const started = await call("realtimeCalls.start", "POST", calls, { token, json: { assistantId: id, sdp } });
  const callId = started.body && started.body.callId;
  if (started.status === 201) {
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: started.body.sdp });
      window.results.answer = { accepted: true, signalingState: pc.signalingState };
    } catch (e) {
      window.results.answer = { accepted: false, error: `${e.name}: ${e.message}` };
    }
  }
  pc.close();
  // a second call at once is allowed, a third is not (429 with a readable Retry-After)
  const second = await makeOffer();
  const other = await call("realtimeCalls.startSecond", "POST", calls,
    { token, json: { assistantId: id, sdp: second.sdp } });
  second.pc.close();
  const third = await makeOffer();
  await call("realtimeCalls.startThird", "POST", calls, { token, json: { assistantId: id, sdp: third.sdp } });
  third.pc.close();
  await call("realtimeCalls.startInvalid", "POST", calls, { token, json: { assistantId: id, sdp: "hello" } });
  await call("realtimeCalls.list", "GET", calls, { token });
  await call("realtimeCalls.get", "GET", `${calls}/${callId}`, { token });
  await call("realtimeCalls.transcript", "GET", `${calls}/${callId}/transcript`, { token });
  await call("realtimeCalls.hangUp", "DELETE", `${calls}/${callId}`, { token });
  if (other.body && other.body.callId) {
    await call("realtimeCalls.hangUpSecond", "DELETE", `${calls}/${other.body.callId}`, { token });
  }
  await call("realtimeCalls.getMissing", "GET", `${calls}/no-such-call`, { token });

  // -- billing -----------------------------------------------------------------------------------
  const billing = fn["billing"];
  await call("billing.invoices", "GET", `${billing}/invoices`, { token });
  await call("billing.invoiceMissing", "GET", `${billing}/invoices/no-such-invoice`, { token });
  await call("billing.rateCards", "GET", `${billing}/rate-cards`, { token });
  await call("billing.addRateCard", "POST", `${billing}/rate-cards`, { token, json: {} });
  await call("billing.margin", "GET", `${billing}/margin?period=2026-10`, { token });
  await call("billing.setupIntent", "POST", `${billing}/setup-intent`, { token });
  await call("billing.subscription", "GET", `${billing}/subscription`, { token });
  await call("billing.subscribe", "POST", `${billing}/subscription`, { token });
  await call("billing.cancel", "DELETE", `${billing}/subscription`, { token });

  // -- and the assistant goes --------------------------------------------------------------------
  await call("openaiAssistants.delete", "DELETE", `${base}/${id}`, { token });
  await call("openaiAssistants.getDeleted", "GET", `${base}/${id}`, { token });
  return window.results;
}

// What a page on an origin the API does not allow gets: every fetch rejects, whether the
// browser preflights it (Authorization) or not (a simple GET); the body is never readable.
async function probe(cfg) {
  window.results = {};
  await call("blocked.withToken", "GET", cfg.functions["token-usage"], { token: cfg.token });
  await call("blocked.simpleGet", "GET", cfg.functions["billing"] + "/rate-cards");
  await call("blocked.post", "POST", cfg.functions["openai-assistants"], { token: cfg.token, json: { name: "x" } });
  return window.results;
}
