// medplug web page: pick a plugin, drop a study, show the prediction and heatmap.
// Plain JS, no build step; talks to the same server's REST API.
"use strict";

const $ = (id) => document.getElementById(id);
let chosenFile = null;

function authHeaders() {
  const token = $("token").value.trim();
  sessionStorage.setItem("medplug-token", token);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function apiError(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadPlugins() {
  const select = $("plugin");
  $("error").textContent = "";
  const response = await fetch("/plugins", { headers: authHeaders() });
  if (!response.ok) {
    select.innerHTML = "<option value=''>(enter the token)</option>";
    $("error").textContent = "Cannot list plugins: " + (await apiError(response));
    return;
  }
  const plugins = (await response.json()).filter((p) => p.ok);
  select.innerHTML = "";
  for (const plugin of plugins) {
    const option = document.createElement("option");
    option.value = plugin.name;
    option.textContent = plugin.name + (plugin.model_available ? "" : " (no model)");
    option.disabled = !plugin.model_available;
    select.appendChild(option);
  }
  const usable = plugins.find((p) => p.model_available);
  if (usable) select.value = usable.name;
  updateButton();
}

function updateButton() {
  $("run").disabled = !(chosenFile && $("plugin").value);
}

function choose(file) {
  chosenFile = file || null;
  $("chosen").textContent = chosenFile ? `${chosenFile.name} (${(chosenFile.size / 1024).toFixed(0)} KiB)` : "";
  updateButton();
}

function showResult(answer) {
  const prediction = answer.prediction;
  $("label").textContent = prediction.label ?? "(none)";
  const body = $("probabilities").querySelector("tbody");
  body.innerHTML = "";
  for (const [name, p] of Object.entries(prediction.probabilities || {})) {
    const row = body.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = (100 * p).toFixed(1) + " %";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = Math.round(160 * p) + "px";
    row.insertCell().appendChild(bar);
  }
  const warnings = $("warnings");
  warnings.innerHTML = "";
  for (const text of prediction.warnings || []) {
    const item = document.createElement("li");
    item.textContent = text;
    warnings.appendChild(item);
  }
  const overlay = $("overlay");
  overlay.hidden = !answer.overlay;
  if (!answer.overlay) {
    $("caption").textContent = "This plugin returned no heatmap.";
  } else {
    showOverlay(overlay, answer.overlay);
  }
  $("meta").textContent = `${prediction.plugin} ${prediction.plugin_version} · ${(1000 * prediction.elapsed_s).toFixed(0)} ms`;
  $("result").hidden = false;
}

function showOverlay(overlay, info) {
  overlay.onload = () => {
    const width = overlay.clientWidth;
    overlay.style.height = Math.round(width * (overlay.naturalHeight / overlay.naturalWidth) * info.pixel_aspect) + "px";
  };
  overlay.src = "data:image/png;base64," + info.png_base64;
  $("caption").textContent = `Grad-CAM over slice ${info.slice + 1} of ${info.slices}`;
}

async function run() {
  $("error").textContent = "";
  $("status").textContent = "Predicting…";
  $("run").disabled = true;
  const form = new FormData();
  form.append("files", chosenFile, chosenFile.name);
  if ($("report").value.trim()) form.append("report", $("report").value);
  if ($("clinical").value.trim()) form.append("clinical", $("clinical").value);
  try {
    const plugin = encodeURIComponent($("plugin").value);
    const response = await fetch(`/predict/${plugin}?output=viewer`, {
      method: "POST", headers: authHeaders(), body: form,
    });
    if (!response.ok) throw new Error(await apiError(response));
    showResult(await response.json());
    $("status").textContent = "Done.";
  } catch (error) {
    $("status").textContent = "";
    $("error").textContent = "Prediction failed: " + error.message;
  } finally {
    updateButton();
  }
}

function setup() {
  $("token").value = sessionStorage.getItem("medplug-token") || "";
  $("token").addEventListener("change", loadPlugins);
  $("plugin").addEventListener("change", updateButton);
  $("file").addEventListener("change", () => choose($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  $("run").addEventListener("click", run);
  loadPlugins();
}

setup();
