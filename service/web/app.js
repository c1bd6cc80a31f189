// The conformer page: read the form, POST /v1/conformers, show the energy table and the 3D viewer,
// download the same request as SDF, and show the API's error message when a request is refused.
// A server with an API key answers 401: the page asks for the key once, keeps it for the browser tab
// (sessionStorage) and sends it in the X-API-Key header.

"use strict";

const API = "/v1/conformers";
const KEY_STORAGE = "adjoint-sampling-api-key";

const $ = (id) => document.getElementById(id);

const page = {
  form: $("conformer-form"),
  submit: $("submit"),
  error: $("error"),
  status: $("status"),
  results: $("results"),
  resultSmiles: $("result-smiles"),
  tbody: document.querySelector("#energy-table tbody"),
  caption: $("viewer-caption"),
  download: $("download-sdf"),
  provenance: $("provenance"),
};

const viewer = new window.MoleculeViewer($("viewer"));
let current = null; // {request, doc}

// Form inputs by the request field they set (to mark the field an error names).
const FIELDS = {
  smiles: $("smiles"),
  num_conformers: $("num-conformers"),
  energy_window: $("energy-window"),
  dedup_rmsd: $("dedup-rmsd"),
  energy_model: $("energy-model"),
  seed: $("seed"),
  relax: $("relax"),
  select: $("fast"), // ticked: the fast pipeline, "select": false
};

// The request body from the form; optional fields left empty are left out (the server's defaults apply).
// Numbers are sent as typed: the server validates them and names the field when one is wrong.
function readForm() {
  const body = { smiles: FIELDS.smiles.value.trim(), relax: FIELDS.relax.checked, format: "json" };
  if (FIELDS.select.checked) body.select = false; // unticked: the model's default
  for (const name of ["num_conformers", "energy_window", "dedup_rmsd", "seed"]) {
    const text = FIELDS[name].value.trim();
    if (text !== "") body[name] = Number(text);
  }
  if (FIELDS.energy_model.value) body.energy_model = FIELDS.energy_model.value;
  return body;
}

class ApiError extends Error {
  constructor(message, fields) {
    super(message);
    this.fields = fields;
  }
}

// The service's errors: {"message": "one sentence", "detail": [{"field", "msg", ...}]}; plain FastAPI
// errors ({"detail": "text"} or {"detail": [{"loc", "msg"}]}) are read too.
function apiError(status, payload) {
  const detail = Array.isArray(payload?.detail) ? payload.detail : [];
  const fields = detail.map((d) => d.field ?? (d.loc || []).filter((p) => p !== "body").join("."));
  let message = payload?.message;
  if (!message && typeof payload?.detail === "string") message = payload.detail;
  if (!message && detail.length) {
    message = detail.map((d, k) => (fields[k] ? `${fields[k]}: ${d.msg}` : d.msg)).join("\n");
  }
  return new ApiError(message || `The server answered ${status}.`, fields);
}

function storedKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function storeKey(key) {
  try {
    if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
    else window.sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key is asked for again next time
  }
}

// fetch() with the stored API key; on 401 the page asks for the key (once per request) and tries again.
async function apiFetch(url, options = {}) {
  const send = () => {
    const headers = { ...(options.headers || {}) };
    const key = storedKey();
    if (key) headers["X-API-Key"] = key;
    return fetch(url, { ...options, headers });
  };
  let response = await send();
  if (response.status === 401) {
    const hadKey = storedKey() !== "";
    const key = window.prompt(
      hadKey ? "The API key was not accepted. API key:" : "This server needs an API key. API key:",
      "",
    );
    if (key && key.trim()) {
      storeKey(key.trim());
      response = await send();
      if (response.status === 401) storeKey("");
    }
  }
  return response;
}

async function post(body) {
  let response;
  try {
    response = await apiFetch(API, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(`Cannot reach the server: ${exc.message}`, []);
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // not JSON: the status alone
    }
    throw apiError(response.status, payload);
  }
  return response;
}

function showError(exc) {
  page.error.textContent = exc.message;
  page.error.hidden = false;
  for (const field of exc.fields || []) {
    const input = FIELDS[field.split(/[.[]/)[0]];
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

function clearError() {
  page.error.textContent = "";
  page.error.hidden = true;
  for (const input of Object.values(FIELDS)) input.removeAttribute("aria-invalid");
}

function setBusy(busy, message) {
  page.submit.disabled = busy;
  page.download.disabled = busy;
  page.status.textContent = message;
}

// Ranks count from 1, as the answer's `conformer_rank` and the SDF tag of that name do.
function displayRank(conformer, index) {
  return conformer.conformer_rank ?? (conformer.rank ?? index) + 1;
}

function fmt(value, digits) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

function renderTable(doc) {
  page.tbody.replaceChildren();
  doc.conformers.forEach((conformer, index) => {
    const row = document.createElement("tr");
    row.id = `conformer-${index}`;
    row.tabIndex = index === 0 ? 0 : -1; // roving focus: Tab reaches the selected row, arrows move
    row.dataset.index = String(index);
    row.setAttribute("aria-selected", "false");
    const cells = [
      String(displayRank(conformer, index)),
      fmt(conformer.relative_energy_kcal_mol, 2),
      fmt(conformer.energy_ev, 4),
      fmt(conformer.boltzmann_weight, 3),
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    row.addEventListener("click", () => select(index));
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        select(index);
      } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const next = Math.min(doc.conformers.length - 1, Math.max(0, index + (e.key === "ArrowDown" ? 1 : -1)));
        select(next);
        $(`conformer-${next}`).focus();
      }
    });
    page.tbody.append(row);
  });
}

function select(index) {
  const doc = current.doc;
  const conformer = doc.conformers[index];
  for (const row of page.tbody.rows) {
    const selected = row.dataset.index === String(index);
    row.setAttribute("aria-selected", String(selected));
    row.tabIndex = selected ? 0 : -1;
  }
  viewer.show({ elements: doc.elements, positions: conformer.positions, bonds: doc.bonds });
  page.caption.textContent =
    `Conformer ${displayRank(conformer, index)} of ${doc.conformers.length}` +
    (typeof conformer.relative_energy_kcal_mol === "number"
      ? `, ΔE ${conformer.relative_energy_kcal_mol.toFixed(2)} kcal/mol`
      : "") +
    ". Drag to rotate, scroll to zoom.";
}

function render(request, doc) {
  current = { request, doc };
  page.resultSmiles.textContent = doc.smiles ?? request.smiles;
  page.provenance.textContent = JSON.stringify({ checks: doc.checks, provenance: doc.provenance }, null, 2);
  renderTable(doc);
  page.results.hidden = false;
  if (doc.conformers.length > 0) {
    viewer.resetView(); // a new molecule: start from the default view (conformers of one share a view)
    select(0);
  } else {
    viewer.clear();
    page.caption.textContent = "No conformer passed the checks.";
  }
  page.download.disabled = doc.conformers.length === 0;
}

// "7 of 10 conformers returned; rejected: connectivity 3."
function summary(doc) {
  const c = doc.checks;
  if (!c) return `${doc.conformers.length} conformers.`;
  let text = `${c.returned} of ${c.requested} conformers returned`;
  const rejected = Object.entries(c.rejected || {}).map(([reason, n]) => `${reason} ${n}`);
  if (rejected.length) text += `; rejected: ${rejected.join(", ")}`;
  if (c.pruned) text += `; ${c.pruned} removed as duplicates`;
  if (c.outside_energy_window) text += `; ${c.outside_energy_window} outside the energy window`;
  return `${text}.`;
}

async function onSubmit(event) {
  event.preventDefault();
  clearError();
  const request = readForm();
  setBusy(true, "Sampling conformers…");
  try {
    const doc = await (await post(request)).json();
    render(request, doc);
    page.status.textContent = summary(doc);
  } catch (exc) {
    current = null; // the error is about this request: no older answer stays on show
    page.results.hidden = true;
    showError(exc);
    page.status.textContent = "";
  } finally {
    page.submit.disabled = false;
  }
}

// The same request (same seed, so the same conformers) as SDF, saved through a temporary link.
async function onDownload() {
  if (!current) return;
  clearError();
  setBusy(true, "Preparing the SDF…");
  try {
    const response = await post({ ...current.request, format: "sdf" });
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `${safeName(current.request.smiles)}.sdf`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    page.status.textContent = "SDF downloaded.";
  } catch (exc) {
    showError(exc);
    page.status.textContent = "";
  } finally {
    page.submit.disabled = false;
    page.download.disabled = false;
  }
}

function safeName(smiles) {
  const name = smiles.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 40);
  return name ? `conformers_${name}` : "conformers";
}

// The energy models a request may choose, the conformer limit and the model's identity.
async function loadModelInfo() {
  const info = $("model-info");
  try {
    const response = await apiFetch("/v1/model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const model = await response.json();
    const select = FIELDS.energy_model;
    select.options[0].textContent = `server default (${model.default_energy_model})`;
    for (const name of model.energy_models) select.add(new Option(name, name));
    if (model.limits?.max_sync_conformers) FIELDS.num_conformers.max = String(model.limits.max_sync_conformers);
    // the fast-pipeline box turns relaxed selection off: shown only where this model selects by default
    FIELDS.select.closest(".field").hidden = model.model.default_select !== true;
    const m = model.model;
    info.textContent =
      `Model: ${m.checkpoint} (sha256 ${m.sha256.slice(0, 12)}…, ${m.training_rounds ?? "?"} training rounds ` +
      `on ${m.training_energy_model ?? "?"}, ${m.integration_steps} integration steps)`;
  } catch (exc) {
    info.textContent = `Model: unavailable (${exc.message})`;
  }
}

loadModelInfo();
page.form.addEventListener("submit", onSubmit);
page.download.addEventListener("click", onDownload);
