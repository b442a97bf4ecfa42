"""The quota query page: a key field, a model list, a table of what each model has left."""

from __future__ import annotations

from typing import Final

QUOTA_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ModelScope quota query</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
label { display: block; margin-top: 1rem; font-weight: 600; }
input, textarea { width: 100%; font-family: monospace; }
table { border-collapse: collapse; margin-top: 1rem; width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; }
td:first-child, th:first-child, td:last-child { text-align: left; }
.warn { background: #fff4d6; padding: 0.5rem 1rem; border-left: 4px solid #e0a800; }
</style>
</head>
<body>
<h1>ModelScope quota query</h1>
<p class="warn"><strong>Each probe spends one request</strong> of that model's daily quota (and
of the account's 2,000 a day): ModelScope reports what is left only in the headers of a real
answer.</p>
<form id="query">
<label for="key">ModelScope API key (sent once as X-API-Key; never stored or logged)</label>
<input id="key" type="password" autocomplete="off" required>
<label for="token">Gateway token (only if the gateway has one)</label>
<input id="token" type="password" autocomplete="off">
<label for="models">Model ids, one per line</label>
<textarea id="models" rows="6">Qwen/Qwen3-235B-A22B-Instruct-2507</textarea>
<p><button type="submit">Query</button> <span id="state"></span></p>
</form>
<table id="results" hidden>
<thead><tr><th>model</th><th>account limit</th><th>account left</th><th>model limit</th>
<th>model left</th><th>error</th></tr></thead>
<tbody></tbody>
</table>
<script>
const form = document.getElementById("query");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const state = document.getElementById("state");
  const models = document.getElementById("models").value.split("\\n")
    .map((m) => m.trim()).filter((m) => m);
  const headers = {"Content-Type": "application/json",
                   "X-API-Key": document.getElementById("key").value};
  const token = document.getElementById("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  state.textContent = "asking " + models.length + " models...";
  const answer = await fetch("/api/quota/query",
    {method: "POST", headers, body: JSON.stringify({models})});
  const body = await answer.json();
  if (!answer.ok) { state.textContent = body.error ? body.error.message : answer.status; return; }
  state.textContent = body.note;
  const rows = document.querySelector("#results tbody");
  rows.replaceChildren();
  for (const r of body.results) {
    const tr = document.createElement("tr");
    for (const value of [r.model, r.request_limit, r.request_remaining, r.model_request_limit,
                         r.model_request_remaining, r.error]) {
      const td = document.createElement("td");
      td.textContent = value === null ? "" : String(value);
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  document.getElementById("results").hidden = false;
});
</script>
</body>
</html>
"""
