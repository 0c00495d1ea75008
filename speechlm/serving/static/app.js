// The speechlm page: audio from the microphone (MediaRecorder) or a file, converted in the browser to 16-kHz
// mono WAV (the server reads WAV/FLAC/MP3/OGG, not the WebM that MediaRecorder writes), sent as an input_audio
// part to /v1/chat/completions with stream: true, and the server-sent events read with fetch + a stream reader.
"use strict";
const $ = (id) => document.getElementById(id);
let audioBlob = null;   // what will be sent
let tasks = {};

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function status(text) { $("status").textContent = text; }

async function loadTasks() {
  try {
    const models = await (await fetch("/v1/models", { headers: headers() })).json();
    $("model").textContent = models.data ? models.data[0].id : "(API key needed)";
    const r = await (await fetch("/v1/tasks", { headers: headers() })).json();
    tasks = r.tasks || {};
    const sel = $("task");
    sel.innerHTML = "";
    for (const [name, t] of Object.entries(tasks)) {
      const o = document.createElement("option");
      o.value = name; o.textContent = `${name}: ${t.instruction}`;
      if (name === r.default) o.selected = true;
      sel.appendChild(o);
    }
    $("instruction").value = tasks[r.default] ? tasks[r.default].instruction : "";
  } catch (e) { status("Could not reach the server: " + e); }
}

$("task").addEventListener("change", () => { $("instruction").value = tasks[$("task").value].instruction; });
$("key").addEventListener("change", loadTasks);

function setAudio(blob) {
  audioBlob = blob;
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  $("ask").disabled = false;
  status("Ready.");
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) setAudio(e.target.files[0]); });

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      $("record").textContent = "● Record";
      setAudio(new Blob(chunks, { type: recorder.mimeType }));
    };
    recorder.start();
    $("record").textContent = "■ Stop";
    status("Recording…");
  } catch (e) { status("No microphone: " + e); }
});

// Any audio the browser can decode -> 16-kHz mono 16-bit WAV bytes.
async function toWav16k(blob) {
  const ctx = new AudioContext();
  const decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
  ctx.close();
  const n = Math.max(1, Math.ceil(decoded.duration * 16000));
  const off = new OfflineAudioContext(1, n, 16000);
  const src = off.createBufferSource();
  src.buffer = decoded; src.connect(off.destination); src.start();
  const pcm = (await off.startRendering()).getChannelData(0);
  const buf = new ArrayBuffer(44 + pcm.length * 2), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + pcm.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, 16000, true);
  v.setUint32(28, 32000, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data");
  v.setUint32(40, pcm.length * 2, true);
  for (let i = 0; i < pcm.length; i++) v.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, pcm[i])) * 32767, true);
  return new Uint8Array(buf);
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

$("ask").addEventListener("click", async () => {
  $("ask").disabled = true;
  $("answer").textContent = "";
  status("Sending…");
  let bytes, format = "wav";
  try { bytes = await toWav16k(audioBlob); }
  catch (e) { bytes = new Uint8Array(await audioBlob.arrayBuffer()); format = (audioBlob.type.split("/")[1] || "wav"); }
  const body = {
    model: $("model").textContent, stream: true, constrained: $("constrained").checked,
    messages: [{ role: "user", content: [
      { type: "input_audio", input_audio: { data: base64(bytes), format } },
      { type: "text", text: $("instruction").value },
    ] }],
  };
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error(`${resp.status}: ${(err.error && err.error.message) || resp.statusText}`);
    }
    status("Answering…");
    const reader = resp.body.getReader(), dec = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const data = event.replace(/^data: ?/, "");
        if (data === "[DONE]") continue;
        const doc = JSON.parse(data);
        if (doc.error) throw new Error(doc.error.message);
        const delta = doc.choices && doc.choices[0] && doc.choices[0].delta;
        if (delta && delta.content) $("answer").textContent += delta.content;
      }
    }
    status($("answer").textContent ? "Done." : "Done: no speech found (empty answer).");
  } catch (e) { status("Error " + e.message); }
  $("ask").disabled = false;
});

loadTasks();
