// 图文检索 page: plain JS against the JSON API. Results are built with textContent only,
// so captions and ids from the data can never inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("tuwen-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("tuwen-api-key", keyInput.value.trim());
  loadStatus();
});

function authHeaders() {
  const key = keyInput.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    if (response.status === 401) detail = `需要 API 密钥（在页面底部“设置”中填写）：${detail}`;
    throw new Error(`${response.status}：${detail || response.statusText}`);
  }
  return body;
}

// With a key required, <img src> cannot send it: fetch the bytes and show a blob instead.
function setImage(img, url) {
  if (!keyInput.value.trim()) { img.src = url; return; }
  fetch(url, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(r.status)))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = "图片加载失败"; });
}

function empty(container, text) {
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = text;
  container.replaceChildren(p);
}

function renderImages(container, results) {
  if (!results.length) { empty(container, "没有结果"); return; }
  container.replaceChildren(...results.map((hit, i) => {
    const figure = document.createElement("figure");
    figure.className = "result";
    const link = document.createElement("a");
    link.href = hit.url;
    link.target = "_blank";
    link.rel = "noopener";
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = hit.image_id;
    setImage(img, hit.url);
    link.append(img);
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    caption.append(`#${i + 1} `, score, ` ${hit.image_id}`);
    caption.title = hit.image_id;
    figure.append(link, caption);
    return figure;
  }));
}

function renderCaptions(container, results) {
  if (!results.length) { empty(container, "没有结果"); return; }
  container.replaceChildren(...results.map((hit) => {
    const li = document.createElement("li");
    li.className = "caption-result";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const id = document.createElement("span");
    id.className = "tid";
    id.textContent = hit.text_id;
    li.append(score, hit.caption, id);
    return li;
  }));
}

// A search is a URL: /?q=…&k=… runs it on load, and each search updates the address bar
// (history entries, so Back returns to the previous search).
async function searchText(q, k, { push = true } = {}) {
  if (!q) return;
  $("query").value = q;
  if ([...$("text-k").options].some((o) => o.value === String(k))) $("text-k").value = String(k);
  if (push) {
    const url = new URL(window.location.href);
    url.search = new URLSearchParams({ q, k: $("text-k").value }).toString();
    if (url.href !== window.location.href) history.pushState({ q }, "", url);
  }
  showError("");
  empty($("text-results"), "搜索中…");
  try {
    const params = new URLSearchParams({ q, k: $("text-k").value });
    const body = await api(`/api/search/text?${params}`);
    renderImages($("text-results"), body.results);
  } catch (err) {
    $("text-results").replaceChildren();
    showError(err.message);
  }
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  searchText($("query").value.trim(), $("text-k").value);
});

function searchFromAddress() {
  const params = new URLSearchParams(window.location.search);
  const q = (params.get("q") || "").trim();
  if (q) searchText(q, params.get("k") || $("text-k").value, { push: false });
}
window.addEventListener("popstate", searchFromAddress);

async function searchByImage(file) {
  if (!file) return;
  showError("");
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-hint").textContent = `${file.name}（点击或拖入可更换）`;
  empty($("caption-results"), "搜索中…");
  empty($("similar-results"), "搜索中…");
  const post = (path, k) => {
    const form = new FormData();
    form.append("file", file);
    return api(`${path}?k=${k}`, { method: "POST", body: form });
  };
  try {
    const [captions, similar] = await Promise.all([
      post("/api/search/image", 10),
      post("/api/search/image-to-image", 6),
    ]);
    renderCaptions($("caption-results"), captions.results);
    renderImages($("similar-results"), similar.results);
  } catch (err) {
    $("caption-results").replaceChildren();
    $("similar-results").replaceChildren();
    preview.hidden = true;
    showError(err.message);
  }
}

$("file").addEventListener("change", (event) => searchByImage(event.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  searchByImage(event.dataTransfer.files[0]);
});

// The model's name, never a server path: a checkpoint spec is a file path, so show its architecture.
function modelName(model) {
  const spec = model.spec || "";
  return /[\\/]/.test(spec) || spec.endsWith(".pt") ? model.arch : spec;
}

async function loadStatus() {
  const status = $("status");
  try {
    const stats = await api("/api/stats");
    if (!stats.ready) throw new Error(stats.reload_error || "索引尚未建立：请先运行 tuwen index");
    const c = stats.index.counts;
    status.className = "status ok";
    status.textContent = `已就绪 · 候选图片 ${c.image_candidates || 0} 张，候选文本 ${c.text_candidates || 0} 条 · `
      + `模型 ${modelName(stats.model)}（${stats.model.model_id}）· 索引 ${stats.index.generation}`;
  } catch (err) {
    status.className = "status bad";
    status.textContent = `服务未就绪：${err.message}`;
  }
}
loadStatus();
searchFromAddress();
