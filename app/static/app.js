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
    const served = Object.keys(stats.corpora || {});
    const store = stats.store_state && stats.store_state.state !== "ready" ? " · 数据库不可达：检索照常，写入暂停" : "";
    if (!stats.ready && served.length) {
      status.className = "status ok";
      status.textContent = `已就绪 · 收藏集 ${served.join("、")}（竞赛索引尚未建立）${store}`;
      return;
    }
    if (!stats.ready) throw new Error(stats.reload_error || "索引尚未建立：请先运行 tuwen index");
    const c = stats.index.counts;
    status.className = "status ok";
    status.textContent = `已就绪 · 候选图片 ${c.image_candidates || 0} 张，候选文本 ${c.text_candidates || 0} 条 · `
      + `模型 ${modelName(stats.model)}（${stats.model.model_id}）· 索引 ${stats.index.generation}`
      + (served.length ? ` · 收藏集 ${served.length} 个` : "") + store;
  } catch (err) {
    status.className = "status bad";
    status.textContent = `服务未就绪：${err.message}`;
  }
}
// ---- Collections: pick a corpus, filter by its fields, page with "more", click for "more like this".
// The address carries the search: ?c=NAME&q=TEXT (or &item=ID)&t=image|text&where={JSON}.
const corpora = new Map();
const search = { corpus: "", q: "", item: "", target: "", where: {}, next: null };

function corpusLabel(c) {
  const what = { image_candidates: "竞赛：候选图片", text_candidates: "竞赛：候选文本" }[c.name];
  return what ? `${what}（${c.name}）` : `${c.name}（${c.rows} 条）`;
}

async function loadCorpora() {
  const list = await api("/api/corpora");
  const select = $("corpus");
  for (const c of list) {
    corpora.set(c.name, c);
    const option = document.createElement("option");
    option.value = c.name;
    option.textContent = corpusLabel(c) + (c.encoded ? "" : " · 未编码");
    option.disabled = !c.encoded;
    select.append(option);
  }
}

function fieldControl(name, kind, corpus) {
  const label = document.createElement("label");
  label.append(name === "time" ? "时间" : name);
  const current = search.where[name];
  if (kind === "str" && corpus.values && corpus.values[name]) {
    const select = document.createElement("select");
    select.dataset.field = name;
    select.dataset.op = "eq";
    select.append(new Option("全部", ""));
    for (const v of corpus.values[name]) select.append(new Option(v, v));
    select.value = typeof current === "string" ? current : "";
    label.append(select);
    return label;
  }
  if (kind === "str") {
    const input = document.createElement("input");
    Object.assign(input, { type: "text", placeholder: "等于" });
    input.dataset.field = name;
    input.dataset.op = "eq";
    input.value = typeof current === "string" ? current : "";
    label.append(input);
    return label;
  }
  const type = kind === "datetime" ? "date" : "number";
  for (const [op, hint] of [["gte", "最小"], ["lte", "最大"]]) {
    const input = document.createElement("input");
    Object.assign(input, { type, placeholder: hint, title: hint });
    if (type === "number") input.step = "any";
    input.dataset.field = name;
    input.dataset.op = op;
    input.dataset.kind = kind;
    const bound = current && typeof current === "object" ? current[op === "lte" && type === "date" ? "lt" : op] : undefined;
    if (bound !== undefined) input.value = type === "date" ? shiftDay(String(bound).slice(0, 10), op === "lte" ? -1 : 0) : bound;
    label.append(input);
    if (op === "gte") label.append("–");
  }
  return label;
}

function shiftDay(iso, days) {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

function renderFilters(corpus) {
  const fields = { ...corpus.fields };
  if (corpus.time_kind) fields.time = corpus.time_kind;
  $("filters").replaceChildren(...Object.entries(fields).map(([name, kind]) => fieldControl(name, kind, corpus)));
  $("filters").querySelectorAll("input, select").forEach((el) => el.addEventListener("change", () => {
    search.where = readFilters();
    runCorpusSearch();
  }));
}

// A date's maximum means "through that day": sent as lt the next midnight.
function readFilters() {
  const where = {};
  $("filters").querySelectorAll("[data-field]").forEach((el) => {
    const raw = el.value.trim();
    if (!raw) return;
    const { field, op, kind } = el.dataset;
    if (op === "eq") { where[field] = raw; return; }
    const value = el.type === "date" ? (op === "lte" ? shiftDay(raw, 1) : raw) : Number(raw);
    where[field] = { ...(where[field] || {}), [el.type === "date" && op === "lte" ? "lt" : op]: value };
    if (kind === "int" && el.type === "number") where[field][op] = Math.round(value);
  });
  return where;
}

function showCorpus(name) {
  const corpus = corpora.get(name);
  search.corpus = corpus ? name : "";
  $("corpus").value = search.corpus;
  $("corpus-panel").hidden = !corpus;
  $("text-panel").hidden = !!corpus;
  $("image-panel").hidden = !!corpus;
  if (!corpus) return;
  $("corpus-title").textContent = corpusLabel(corpus);
  const target = $("corpus-target");
  [...target.options].forEach((o) => { o.disabled = !corpus.targets.includes(o.value); });
  target.value = corpus.targets.includes(search.target) ? search.target : corpus.targets[0];
  renderFilters(corpus);
}

function corpusAddress() {
  const params = new URLSearchParams({ c: search.corpus });
  if (search.item) params.set("item", search.item); else if (search.q) params.set("q", search.q);
  params.set("t", $("corpus-target").value);
  if (Object.keys(search.where).length) params.set("where", JSON.stringify(search.where));
  return `?${params}`;
}

function hitFigure(hit) {
  const figure = document.createElement("figure");
  figure.className = "result";
  figure.dataset.id = hit.id;
  figure.title = `${hit.id}：点击查看相似`;
  if (hit.image_url) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = hit.id;
    setImage(img, hit.image_url);
    figure.append(img);
  } else {
    const text = document.createElement("div");
    text.className = "text-only";
    text.textContent = hit.caption || hit.id;
    figure.append(text);
  }
  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  caption.append(score, ` ${hit.id}`);
  const cap = document.createElement("div");
  cap.className = "cap";
  cap.textContent = hit.caption || "";
  const attrs = document.createElement("div");
  attrs.className = "attrs";
  const values = Object.entries(hit.attributes).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  if (hit.time !== null) values.unshift(String(hit.time).slice(0, 10));
  attrs.textContent = values.join(" · ");
  figure.append(caption, cap, attrs);
  figure.addEventListener("click", () => moreLikeThis(hit.id));
  return figure;
}

async function runCorpusSearch({ append = false, push = true } = {}) {
  if (!search.corpus || (!search.q && !search.item)) return;
  if (push) {
    const url = corpusAddress();
    if (url !== window.location.search) history.pushState({}, "", url);
  }
  showError("");
  const body = { k: 20, offset: append ? search.next : 0, target: $("corpus-target").value, where: search.where };
  if (search.item) body.item = search.item; else body.q = search.q;
  if (!append) empty($("corpus-results"), "搜索中…");
  try {
    const page = await api(`/api/corpora/${encodeURIComponent(search.corpus)}/search`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const figures = page.results.map(hitFigure);
    if (append) $("corpus-results").append(...figures);
    else if (figures.length) $("corpus-results").replaceChildren(...figures);
    else empty($("corpus-results"), "没有结果");
    search.next = page.next_offset;
    $("more").hidden = page.next_offset === null;
    const what = search.item ? `与 ${search.item} 相似` : `“${search.q}”`;
    $("corpus-summary").textContent = `${what} · 符合条件 ${page.total} 条 · 已显示 ${$("corpus-results").querySelectorAll("figure").length} 条`;
  } catch (err) {
    if (!append) $("corpus-results").replaceChildren();
    $("more").hidden = true;
    showError(err.message);
  }
}

function moreLikeThis(id) {
  search.item = id;
  search.q = "";
  $("corpus-query").value = "";
  $("corpus-query").placeholder = `相似：${id}（输入文字可改为文字搜索）`;
  runCorpusSearch();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

$("corpus").addEventListener("change", () => {
  search.where = {};
  search.item = "";
  showCorpus($("corpus").value);
  $("corpus-results").replaceChildren();
  $("corpus-summary").textContent = "";
  $("more").hidden = true;
  if (search.corpus && search.q) runCorpusSearch();
  else history.pushState({}, "", search.corpus ? corpusAddress() : "/");
});
$("corpus-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search.q = $("corpus-query").value.trim();
  search.item = "";
  search.where = readFilters();
  runCorpusSearch();
});
$("corpus-target").addEventListener("change", () => runCorpusSearch());
$("more").addEventListener("click", () => runCorpusSearch({ append: true, push: false }));

function corpusFromAddress() {
  const params = new URLSearchParams(window.location.search);
  const name = params.get("c") || "";
  search.q = (params.get("q") || "").trim();
  search.item = params.get("item") || "";
  search.target = params.get("t") || "";
  try { search.where = JSON.parse(params.get("where") || "{}") || {}; } catch (_) { search.where = {}; }
  showCorpus(name);
  if (!search.corpus) return false;
  $("corpus-query").value = search.q;
  runCorpusSearch({ push: false });
  return true;
}

window.addEventListener("popstate", () => { if (!corpusFromAddress()) searchFromAddress(); });

loadStatus();
loadCorpora()
  .catch((err) => showError(err.message))
  .finally(() => { if (!corpusFromAddress()) searchFromAddress(); });
