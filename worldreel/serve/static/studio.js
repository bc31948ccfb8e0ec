// worldreel studio: a page over the same /v1/videos API the openai client uses.
// Plain JavaScript, no build step, nothing fetched from outside this server (works offline).
// Videos are fetched with the API key and shown from blob: URLs, because a <video src>
// cannot send an Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem("worldreel-key") || "",
  cards: new Map(),     // video id -> card element
  blobs: new Map(),     // video id -> blob: URL of its MP4
  videos: new Map(),    // video id -> latest video object
  current: null,        // id of the job shown in the progress panel
  polling: false,
};

function authHeaders() {
  return state.key ? { Authorization: "Bearer " + state.key } : {};
}

async function api(method, path, body) {
  const res = await fetch("/v1" + path, { method, headers: authHeaders(), body });
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

function showMessage(text) { $("message").textContent = text || ""; }

// ---- setup -------------------------------------------------------------------------------
async function init() {
  $("api-key").value = state.key;
  $("api-key").addEventListener("change", () => {
    state.key = $("api-key").value.trim();
    localStorage.setItem("worldreel-key", state.key);
    loadModels().then(loadGallery).catch((e) => showMessage(e.message));
  });
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", modeChanged));
  $("create-form").addEventListener("submit", submit);
  $("refresh").addEventListener("click", () => loadGallery().catch((e) => showMessage(e.message)));
  await loadHealth();
  try {
    await loadModels();
    await loadGallery();
  } catch (e) {
    showMessage(e.message);
  }
  setInterval(loadHealth, 10000);
}

async function loadHealth() {
  try {
    const health = await (await fetch("/healthz")).json();
    $("key-box").hidden = health.auth !== "keys";
    const workers = health.workers;
    $("service-status").textContent = workers > 0
      ? `${workers} worker${workers > 1 ? "s" : ""} ready`
      : health.workers_loading > 0
        ? "the workers are loading the model…"
        : "no worker is running: videos will wait in the queue (start `worldreel worker`)";
  } catch (_) {
    $("service-status").textContent = "the service is not answering";
  }
}

async function loadModels() {
  const models = (await (await api("GET", "/models")).json()).data;
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  const model = models[0];
  if (!model) return;
  $("size").placeholder = model.default_size;
  $("sizes").replaceChildren(...model.sizes.slice(0, 64).map((s) => new Option(s)));
  $("seconds").replaceChildren(...model.seconds.filter((s) => s !== "0").map((s) => new Option(s, s)));
  $("seconds").value = model.default_seconds;
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function modeChanged() {
  $("image-row").hidden = mode() !== "image";
  $("extend-row").hidden = mode() !== "extend";
  $("seconds-label").textContent = mode() === "extend" ? "Extend by (s)" : "Length (s)";
  $("size").disabled = mode() === "extend";  // an extension keeps its video's size
}

// ---- creating ----------------------------------------------------------------------------
async function submit(event) {
  event.preventDefault();
  showMessage("");
  const form = new FormData();
  form.append("prompt", $("prompt").value);
  form.append("seconds", $("seconds").value);
  if ($("seed").value !== "") form.append("seed", $("seed").value);
  let path = "/videos";
  if (mode() === "extend") {
    if (!$("extend-source").value) { showMessage("choose a completed video to extend"); return; }
    form.append("video[id]", $("extend-source").value);
    path = "/videos/extensions";
  } else {
    form.append("model", $("model").value);
    if ($("size").value) form.append("size", $("size").value);
    if (mode() === "image") {
      const file = $("image").files[0];
      if (!file) { showMessage("choose an image for the first frame"); return; }
      form.append("input_reference", file);
    }
  }
  $("submit").disabled = true;
  try {
    const video = await (await api("POST", path, form)).json();
    state.current = video.id;
    track(video);
    upsertCard(video, true);
  } catch (e) {
    showMessage(e.message);
  } finally {
    $("submit").disabled = false;
  }
}

// ---- progress ----------------------------------------------------------------------------
function track(video) {
  state.videos.set(video.id, video);
  if (video.id === state.current) {
    $("job").hidden = false;
    $("job-id").textContent = video.id;
    $("job-status").textContent = video.status.replace("_", " ");
    $("progress").value = video.progress;
    $("progress-text").textContent = video.progress + "%";
    if (video.status === "failed" && video.error) showMessage(video.error.message);
  }
  if (!state.polling && [...state.videos.values()].some(unfinished)) poll();
}

function unfinished(v) { return v.status === "queued" || v.status === "in_progress"; }

async function poll() {
  state.polling = true;
  try {
    while ([...state.videos.values()].some(unfinished)) {
      await new Promise((r) => setTimeout(r, 500));
      for (const video of [...state.videos.values()].filter(unfinished)) {
        try {
          const fresh = await (await api("GET", "/videos/" + video.id)).json();
          track(fresh);
          upsertCard(fresh);
        } catch (e) {
          state.videos.delete(video.id);  // deleted meanwhile
        }
      }
    }
  } finally {
    state.polling = false;
  }
}

// ---- gallery -----------------------------------------------------------------------------
async function loadGallery() {
  const page = await (await api("GET", "/videos?limit=50&order=desc")).json();
  const seen = new Set(page.data.map((v) => v.id));
  for (const [id, card] of state.cards) {
    if (!seen.has(id)) { card.remove(); state.cards.delete(id); }
  }
  for (const video of page.data.slice().reverse()) { upsertCard(video, true); track(video); }
  updateExtendChoices();
}

function upsertCard(video, first = false) {
  let card = state.cards.get(video.id);
  if (!card) {
    card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.id = video.id;
    card.querySelector(".delete").addEventListener("click", () => remove(video.id));
    card.querySelector(".extend").addEventListener("click", () => {
      document.querySelector("input[name=mode][value=extend]").checked = true;
      modeChanged();
      $("extend-source").value = video.id;
      $("prompt").focus();
    });
    state.cards.set(video.id, card);
    $("gallery").prepend(card);
  }
  card.dataset.status = video.status;
  card.querySelector(".prompt").textContent = video.prompt || "";
  card.querySelector(".model-prompt").textContent = video.model_prompt ? "model saw: " + video.model_prompt : "";
  card.querySelector(".meta").textContent =
    `${video.model} · ${video.size} · ${video.seconds} s · seed ${video.seed} · ${video.status.replace("_", " ")}`;
  const bar = card.querySelector("progress");
  bar.hidden = !unfinished(video);
  bar.value = video.progress;
  card.querySelector(".error").textContent = video.error ? video.error.message : "";
  if (video.status === "completed" && !state.blobs.has(video.id)) attachVideo(video.id, card);
  if (!first) updateExtendChoices();
}

async function attachVideo(id, card) {
  state.blobs.set(id, "");  // loading
  try {
    const blob = await (await api("GET", `/videos/${id}/content?variant=video`)).blob();
    const url = URL.createObjectURL(blob);
    state.blobs.set(id, url);
    const player = card.querySelector("video");
    player.src = url;
    const link = card.querySelector(".download");
    link.href = url;
    link.download = id + ".mp4";
    link.hidden = false;
    card.querySelector(".extend").hidden = false;
    updateExtendChoices();
  } catch (e) {
    state.blobs.delete(id);
    card.querySelector(".error").textContent = "could not load the video: " + e.message;
  }
}

function updateExtendChoices() {
  const select = $("extend-source");
  const keep = select.value;
  const done = [...state.videos.values()].filter((v) => v.status === "completed");
  select.replaceChildren(...done.map((v) => new Option(`${v.prompt} (${v.seconds} s)`, v.id)));
  if (done.some((v) => v.id === keep)) select.value = keep;
}

async function remove(id) {
  try {
    await api("DELETE", "/videos/" + id);
  } catch (e) {
    showMessage(e.message);
    return;
  }
  const url = state.blobs.get(id);
  if (url) URL.revokeObjectURL(url);
  state.blobs.delete(id);
  state.videos.delete(id);
  state.cards.get(id)?.remove();
  state.cards.delete(id);
  updateExtendChoices();
}

init();
