"""The service's web page: one HTML document with its CSS and JavaScript inline.

Plain HTML and a little JavaScript (fetch + FormData): no build step and nothing loaded from
elsewhere, so it works offline. It is kept in Python (not a static file) so that it ships inside
the package with no package-data configuration. It calls the same JSON API as any client;
results are inserted with ``textContent`` (never ``innerHTML``), so catalogue texts cannot inject
markup.
"""

from __future__ import annotations

import html

from unifashion.settings import GENERATION

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>UniFashion search</title>
<style>
  :root { --ink: #1d1d1f; --muted: #6e6e73; --line: #d2d2d7; --accent: #7a2e5c; --bg: #fafafa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.4 system-ui, sans-serif; color: var(--ink); background: var(--bg); }
  header { padding: 12px 24px; background: #fff; border-bottom: 1px solid var(--line);
           display: flex; align-items: baseline; gap: 16px; }
  header h1 { margin: 0; font-size: 20px; color: var(--accent); }
  #status { color: var(--muted); font-size: 13px; }
  main { padding: 16px 24px; display: grid; gap: 16px; grid-template-columns: 1fr 1fr; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  form { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
  input[type=text] { flex: 1 1 220px; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; }
  input[type=number] { width: 70px; padding: 6px; border: 1px solid var(--line); border-radius: 6px; }
  select { padding: 6px; border: 1px solid var(--line); border-radius: 6px; }
  button { padding: 6px 14px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; }
  button:disabled { opacity: .5; cursor: wait; }
  label { font-size: 13px; color: var(--muted); }
  .preview { width: 56px; height: 56px; object-fit: contain; border: 1px solid var(--line); border-radius: 4px; }
  .preview[src=""] { display: none; }
  #error { grid-column: 1 / -1; display: none; padding: 8px 12px; border-radius: 6px;
           background: #fde8e8; color: #8a1c1c; }
  #results-status { color: var(--muted); margin: 0 0 8px; }
  #results { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); }
  .result { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; background: #fff; }
  .result img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #f2f2f2; border-radius: 4px; }
  .result .caption { font-size: 13px; margin: 4px 0; }
  .result .meta { font-size: 12px; color: var(--muted); }
  #texts-out li { margin: 4px 0; }
  #texts-out .meta, #caption-out .meta, #gen-info { color: var(--muted); font-size: 12px; }
  #gen-out { width: 192px; height: 192px; object-fit: contain; image-rendering: pixelated;
             border: 1px solid var(--line); border-radius: 6px; margin-top: 8px; display: none; }
</style>
</head>
<body>
<header><h1>UniFashion</h1><span id="status">loading&hellip;</span></header>
<main>
  <div id="error" role="alert"></div>

  <section>
    <h2>Search by text</h2>
    <form id="text-form">
      <input id="text-query" type="text" placeholder="e.g. a red floral dress with long sleeves" required>
      <select id="category" title="category"><option value="">all categories</option></select>
      <label>top <input id="top-k" type="number" min="1" value="12"></label>
      <button id="text-search" type="submit">Search</button>
    </form>
  </section>

  <section>
    <h2>Search by image + modification (composed)</h2>
    <form id="composed-form">
      <input id="composed-image" type="file" accept="image/*" required>
      <img id="composed-preview" class="preview" src="" alt="reference image">
      <input id="composed-text" type="text" placeholder="e.g. is blue and has shorter sleeves" required>
      <label><input id="fusion" type="checkbox" checked> caption fusion</label>
      <button id="composed-search" type="submit">Search</button>
    </form>
  </section>

  <section class="wide">
    <p id="results-status">Results appear here.</p>
    <div id="results"></div>
  </section>

  <section>
    <h2>Describe an image</h2>
    <form id="describe-form">
      <input id="describe-image" type="file" accept="image/*" required>
      <img id="describe-preview" class="preview" src="" alt="image to describe">
      <select id="caption-style" title="caption style">
        <option value="short">short</option><option value="professional">professional</option>
        <option value="detailed" selected>detailed</option>
      </select>
      <button id="caption-btn" type="submit">Caption</button>
      <button id="match-btn" type="button">Matching catalogue texts</button>
    </form>
    <p id="caption-out"></p>
    <ol id="texts-out"></ol>
  </section>

  <section>
    <h2>Generate</h2>
    <form id="generate-form">
      <input id="gen-text" type="text" placeholder="e.g. a light pink floral mini dress">
      <label>reference (optional) <input id="gen-image" type="file" accept="image/*"></label>
      <label>steps <input id="gen-steps" type="number" min="1" value="__STEPS__"></label>
      <label>seed <input id="gen-seed" type="number" min="0" value="0"></label>
      <button id="generate-btn" type="submit">Generate</button>
    </form>
    <img id="gen-out" alt="generated image">
    <div id="gen-info"></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.style.display = message ? "block" : "none";
}

// fetch that throws the service's error message ({"error": {"message"}}) on a non-2xx answer.
async function call(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); if (body.error) message = body.error.message; } catch (e) {}
    throw new Error(message);
  }
  return response;
}

// Run a form's action with its submit button disabled and errors shown in the banner.
async function busy(button, action) {
  showError("");
  button.disabled = true;
  try { await action(); } catch (e) { showError(e.message); } finally { button.disabled = false; }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function displayCaption(item) {
  const c = item.captions || {};
  return c.short || c.caption || item.fusion_caption || Object.values(c)[0] || item.item_id;
}

function showHits(description, hits) {
  const grid = $("results");
  grid.replaceChildren();
  $("results-status").textContent = hits.length + " results for " + description;
  for (const hit of hits) {
    const card = element("figure", "result");
    card.dataset.itemId = hit.item_id;
    const img = element("img");
    if (hit.item.image_url) img.src = hit.item.image_url;
    img.alt = displayCaption(hit.item);
    card.append(img);
    const caption = element("figcaption");
    caption.append(element("div", "caption", displayCaption(hit.item)));
    let score = "#" + hit.rank + " \u00b7 score " + hit.score.toFixed(3);
    if (hit.fusion) score += " (max-sim " + hit.maxsim.toFixed(3) + " + fusion " + hit.fusion.toFixed(3) + ")";
    caption.append(element("div", "meta score", score));
    caption.append(element("div", "meta", hit.item_id + (hit.item.category ? " \u00b7 " + hit.item.category : "")));
    card.append(caption);
    grid.append(card);
  }
}

function topK() { return Math.max(1, parseInt($("top-k").value, 10) || 10); }

function previewOnChange(inputId, previewId) {
  $(inputId).addEventListener("change", () => {
    const file = $(inputId).files[0];
    $(previewId).src = file ? URL.createObjectURL(file) : "";
  });
}
previewOnChange("composed-image", "composed-preview");
previewOnChange("describe-image", "describe-preview");

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("text-search"), async () => {
    const text = $("text-query").value;
    const body = { text: text, top_k: topK(), category: $("category").value || null };
    const response = await call("/search/text", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    showHits("\u201c" + text + "\u201d", (await response.json()).results);
  });
});

$("composed-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("composed-search"), async () => {
    const form = new FormData();
    form.append("image", $("composed-image").files[0]);
    form.append("text", $("composed-text").value);
    form.append("top_k", String(topK()));
    form.append("fusion", $("fusion").checked ? "true" : "false");
    if ($("category").value) form.append("category", $("category").value);
    const response = await call("/search/composed", { method: "POST", body: form });
    showHits("the image + \u201c" + $("composed-text").value + "\u201d", (await response.json()).results);
  });
});

function describeForm() {
  const file = $("describe-image").files[0];
  if (!file) throw new Error("choose an image first");
  const form = new FormData();
  form.append("image", file);
  return form;
}

$("describe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("caption-btn"), async () => {
    const form = describeForm();
    form.append("style", $("caption-style").value);
    const body = await (await call("/caption", { method: "POST", body: form })).json();
    const out = $("caption-out");
    out.replaceChildren(element("span", "", body.caption), element("span", "meta", " (" + body.style + ")"));
  });
});

$("match-btn").addEventListener("click", () => {
  busy($("match-btn"), async () => {
    const form = describeForm();
    form.append("top_k", "5");
    const body = await (await call("/search/image-to-text", { method: "POST", body: form })).json();
    const list = $("texts-out");
    list.replaceChildren();
    for (const hit of body.results) {
      const li = element("li", "", hit.text);
      const ids = hit.sources.slice(0, 3).map((s) => s.item_id + " (" + s.style + ")").join(", ");
      li.append(element("div", "meta", "score " + hit.score.toFixed(3) + " \u00b7 " + ids));
      list.append(li);
    }
  });
});

$("generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("generate-btn"), async () => {
    const form = new FormData();
    if ($("gen-text").value) form.append("text", $("gen-text").value);
    if ($("gen-image").files[0]) form.append("image", $("gen-image").files[0]);
    form.append("steps", $("gen-steps").value);
    if ($("gen-seed").value !== "") form.append("seed", $("gen-seed").value);
    const response = await call("/generate", { method: "POST", body: form });
    const out = $("gen-out");
    out.src = URL.createObjectURL(await response.blob());
    out.style.display = "block";
    $("gen-info").textContent = "seed " + response.headers.get("X-Seed");
  });
});

// Catalogue size and categories for the status line and the category filter.
call("/health").then((r) => r.json()).then((health) => {
  $("status").textContent = health.items + " items \u00b7 model " + (health.model || "(unnamed)");
  for (const name of Object.keys(health.categories)) {
    const option = element("option", "", name);
    option.value = name;
    $("category").append(option);
  }
}).catch((e) => showError("service unreachable: " + e.message));
</script>
</body>
</html>
"""


def render_page(model_name: str = "", default_steps: int = GENERATION.steps) -> str:
    """The page's HTML. ``model_name`` is shown in the title bar."""
    page = _PAGE.replace("__STEPS__", str(int(default_steps)))
    if model_name:
        page = page.replace("<title>UniFashion search</title>",
                            f"<title>UniFashion search \u00b7 {html.escape(model_name)}</title>")
    return page
