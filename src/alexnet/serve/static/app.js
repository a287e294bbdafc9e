// The page of `alexnet serve`: plain JS, no build step. Every text from the server or the file
// (class names, file names, errors) is set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;   // GET /v1/model
let current = 0;    // the latest upload's number: answers to an older one are dropped

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function call(path, file) {
  const form = new FormData();
  form.append("image", file, file.name);
  const r = await fetch(path, { method: "POST", body: form });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const why = body && typeof body.error === "string" ? body.error : `The server answered ${r.status}.`;
    throw new Error(why);
  }
  return body;
}

function bars(list, top) {
  list.replaceChildren();
  for (const t of top) {
    const li = el("li");
    const name = el("span", "name", t["class"]);
    name.title = t["class"] === t.id ? t.id : `${t["class"]} (${t.id})`;
    const bar = el("span", "bar");
    const fill = el("span");
    fill.style.width = `${Math.max(0, Math.min(100, 100 * t.prob)).toFixed(1)}%`;
    bar.append(fill);
    li.append(name, bar, el("span", "p", `${(100 * t.prob).toFixed(1)}%`));
    li.dataset.index = String(t.index);
    list.append(li);
  }
}

function thumbs(box, found) {
  box.replaceChildren();
  for (const n of found) {
    const fig = el("figure", "thumb");
    const img = el("img");
    img.src = `v1/train/${Number(n.id)}.png`;
    img.alt = `training image ${Number(n.id)}: ${n["class"]}`;
    const cap = el("figcaption");
    cap.append(el("span", "cls", n["class"]), el("br"), el("span", "d", `distance ${Number(n.distance).toPrecision(3)}`));
    fig.append(img, cap);
    box.append(fig);
  }
}

async function upload(file) {
  const mine = ++current;
  showError("");
  if (model && model.limits && file.size > model.limits.max_upload_bytes) {
    showError(`${file.name} is ${file.size} bytes; this server takes at most ${model.limits.max_upload_bytes}.`);
    return;
  }
  const prev = $("query-image").src;
  $("query-image").src = URL.createObjectURL(file);
  if (prev && prev.startsWith("blob:")) URL.revokeObjectURL(prev);
  $("query-name").textContent = file.name;
  $("status").textContent = `Classifying ${file.name}…`;
  document.body.classList.add("busy");
  const jobs = [call("v1/predict?tta=center", file), call("v1/predict?tta=10crop", file)];
  if (model && model.neighbors) jobs.push(call(`v1/neighbors?k=${kDefault()}`, file));
  const got = await Promise.allSettled(jobs);
  if (mine !== current) return;  // a newer upload is on its way; this one is stale
  document.body.classList.remove("busy");
  const failed = got.find((g) => g.status === "rejected");
  if (failed) {
    $("status").textContent = "";
    showError(`Refused: ${failed.reason.message}`);
    $("results").hidden = true;
    $("neighbors").hidden = true;
    return;
  }
  const [center, tencrop, nb] = got.map((g) => g.value);
  bars($("top-center"), center[0].top);
  bars($("top-10crop"), tencrop[0].top);
  $("results").hidden = false;
  $("results").dataset.top = center[0].top.length ? center[0].top[0]["class"] : "";
  if (nb) {
    thumbs($("neighbors-fc7"), nb.fc7);
    thumbs($("neighbors-pixels"), nb.pixels);
    $("neighbors").hidden = false;
  }
  const c = center[0].top[0], t = tencrop[0].top[0];
  $("status").textContent = c && t ? (c.index === t.index ? `Centre crop and 10 patches agree: ${c["class"]}.`
                                                         : `Centre crop says ${c["class"]}; 10 patches say ${t["class"]}.`) : "";
}

function kDefault() {
  const q = new URLSearchParams(location.search).get("k");
  return q && /^\d+$/.test(q) ? q : "6";
}

function tabs() {
  for (const b of document.querySelectorAll(".tab")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll(".tab")) o.classList.toggle("active", o === b);
      for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== b.dataset.panel;
      if (b.dataset.panel === "filters-panel" && !$("filters").src) $("filters").src = "v1/filters.png";
    });
  }
}

function dropZone() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
}

async function loadModel() {
  try {
    const r = await fetch("v1/model");
    model = await r.json();
    const sha = model.checkpoint.sha256.slice(0, 12);
    const nb = model.neighbors ? `; neighbours among ${model.neighbors.train_images} training images` : "";
    $("model-line").textContent = `${model.model}, ${model.num_classes} classes, ${model.checkpoint.file} (sha256 ${sha}…)${nb}`;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("model-line").textContent = "The model description could not be loaded.";
  }
}

tabs();
dropZone();
loadModel();
