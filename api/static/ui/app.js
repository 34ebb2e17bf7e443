// The results page: reads and drives the gateway's REST API with the key the person typed (sessionStorage, this tab
// only), sent as `Authorization: Bearer` and never in a URL. Every URL is relative (works behind the proxy, under
// any prefix). Data goes into the page as text nodes only (textContent), never as HTML. Routes: #/ and #/jobs/<id>.
// It uploads datasets (XMLHttpRequest: the only browser API with upload progress), starts predict, text-fit and
// leaderboard jobs, cancels, and deletes after a second click on the same button.
"use strict";

(() => {
  const KEY_STORAGE = "arena-pref.api-key";
  const LIST_POLL_MS = 1500;
  const JOB_POLL_MS = 1000;
  const SIDE_TABLES_EVERY = 6; // datasets and adapters: every 6th jobs poll (~10 s)
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const STATES = new Set(["queued", "dispatched", "running", "assembling", "succeeded", "failed", "cancelled"]);
  const JOB_ROUTE = /^#\/jobs\/([0-9a-f]{32})$/;
  // Figures of result shown first and how they are called; any other scalar follows under its own name.
  const METRIC_LABELS = { log_loss: "log loss", accuracy: "accuracy", rows: "rows", truncated_rows: "truncated rows" };
  const LABEL_NAMES = { winner_model_a: "A wins", winner_model_b: "B wins", winner_tie: "tie" };
  // Figures of result shown elsewhere on the report than its cards.
  const NOT_A_CARD = new Set(["submission_path"]);
  // A delete button's first click arms it ("really delete?"); a second click within this long deletes.
  const CONFIRM_MS = 5000;

  const $ = (selector) => document.querySelector(selector);
  let generation = 0; // bumped on every route change: a poll of the previous view stops and renders nothing
  let timer = null;
  let objectUrls = [];
  let pendingDatasetChoice = null; // a dataset just uploaded: chosen in the job form once the list holds it
  const datasetNames = new Map(); // dataset id -> its file name, from the last datasets list

  const actionCells = new Map(); // "job:<id>", "dataset:<id>", "adapter:<name>" -> {signature, cell}: buttons survive the polls' redraws

  class AuthError extends Error {}
  class NotFoundError extends Error {}

  // --- the REST API ------------------------------------------------------------------------------------------

  function authorization() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (!key) throw new AuthError("");
    return `Bearer ${key}`;
  }

  // The API's `detail`: a sentence, or FastAPI's list of validation errors ({loc, msg}), as one line.
  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((error) => {
          if (!error || typeof error !== "object" || !("msg" in error)) return JSON.stringify(error);
          const where = (Array.isArray(error.loc) ? error.loc : []).filter((part) => part !== "body").join(".");
          return where ? `${where}: ${error.msg}` : String(error.msg);
        })
        .join("; ");
    }
    return JSON.stringify(detail);
  }

  function apiError(status, statusText, body) {
    const detail = body && typeof body === "object" && "detail" in body ? detailText(body.detail) : statusText;
    if (status === 401) return new AuthError("the gateway refused the key");
    if (status === 404) return new NotFoundError(String(detail));
    return new Error(`${status}: ${detail}`);
  }

  async function request(method, path, { json, as = "json" } = {}) {
    const headers = { Authorization: authorization() };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        // not JSON (e.g. the proxy's own page): the status text says it
      }
      throw apiError(response.status, response.statusText, body);
    }
    if (response.status === 204) return null;
    if (as === "blob") return response.blob();
    if (as === "text") return response.text();
    return response.json();
  }

  const api = (path, as = "json") => request("GET", path, { as });

  // POST /v1/datasets as multipart (field `file`), reporting (sent, total) bytes as the body goes out.
  function uploadDataset(file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "v1/datasets");
      xhr.setRequestHeader("Authorization", authorization());
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size));
      xhr.upload.addEventListener("load", () => onProgress(file.size, file.size));
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
        else reject(apiError(xhr.status, xhr.statusText, xhr.response));
      });
      // The proxy answers an over-size body before reading it and closes: the browser sees no answer at all.
      xhr.addEventListener("error", () => reject(new Error("the upload did not reach the gateway (a file over the proxy's size cap is cut off)")));
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }

  function artifactPath(jobId, name) {
    return `v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`;
  }

  // --- DOM helpers: elements built from text, never from HTML strings --------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (name === "class") node.className = value;
      else if (name === "data") Object.assign(node.dataset, value);
      else node[name] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function row(...cells) {
    return el("tr", {}, ...cells.map((cell) => (cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell ?? "–"))));
  }

  function number(value, digits = 4) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function count(value) {
    return typeof value === "number" ? value.toLocaleString("en") : "–";
  }

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "–";
    const pad = (part) => String(part).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function bytes(value) {
    if (typeof value !== "number") return "–";
    const units = ["B", "KB", "MB", "GB"];
    let size = value;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return `${size.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  // Seconds the job has run: its timings once finished, else counted from started_at in the browser.
  function runSeconds(job) {
    if (job.timings && typeof job.timings.run_seconds === "number") return job.timings.run_seconds;
    if (!job.started_at) return null;
    return Math.max(0, (Date.now() - new Date(job.started_at).getTime()) / 1000);
  }

  function stateBadge(state) {
    return el("span", { class: STATES.has(state) ? `state state-${state}` : "state" }, state);
  }

  function progressCell(progress) {
    const done = progress?.done ?? 0;
    const total = progress?.total ?? 0;
    const bar = el("progress", { max: Math.max(total, 1), value: Math.min(done, Math.max(total, 1)) });
    return el("td", { class: "progress-cell" }, bar, el("span", { class: "progress-text" }, `${count(done)} / ${count(total)}`));
  }

  function setStatus(text, isError = false) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function show(view) {
    for (const id of ["#key-view", "#list-view", "#job-view"]) $(id).hidden = id !== view;
    $("#forget-key").hidden = view === "#key-view";
    $("#tenant").hidden = view === "#key-view" || !$("#tenant").textContent;
  }

  function revokeObjectUrls() {
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
  }

  // --- actions: what the page asks the API to do ------------------------------------------------------------------

  // The outcome of the last action, in both views; `link` (a job id) makes it a link to that job's report.
  function say(text, { isError = false, jobId = null } = {}) {
    const message = $("#action-message");
    message.replaceChildren(text);
    if (jobId) message.append(" ", el("a", { href: `#/jobs/${jobId}` }, el("code", {}, jobId)));
    message.classList.toggle("error", isError);
    message.hidden = !text;
  }

  // Runs one action; a refused key goes back to the key form, any other error is said with the API's detail.
  async function act(button, failureText, work) {
    if (button) button.disabled = true;
    try {
      await work();
    } catch (error) {
      if (error instanceof AuthError) forgetKey(error.message);
      else say(`${failureText}: ${error.message}`, { isError: true });
    } finally {
      if (button) button.disabled = false;
    }
  }

  // A delete needs two clicks on the same button: the first arms it for CONFIRM_MS, the second runs `run`.
  function confirmThen(button, run) {
    if (button.dataset.armed !== "true") {
      const label = button.textContent;
      button.dataset.armed = "true";
      button.textContent = "really delete?";
      const disarm = () => {
        delete button.dataset.armed;
        button.textContent = label;
      };
      const timeout = setTimeout(disarm, CONFIRM_MS);
      button.disarm = () => {
        clearTimeout(timeout);
        disarm();
      };
      return;
    }
    button.disarm();
    run();
  }

  function cancelJob(button, jobId) {
    return act(button, `cancelling job ${jobId.slice(0, 8)} failed`, async () => {
      const job = await request("POST", `v1/jobs/${jobId}/cancel`);
      say(`Job ${jobId.slice(0, 8)} is ${job.state}.`);
      refresh();
    });
  }

  function deleteJob(button, jobId, { afterwards = refresh } = {}) {
    return act(button, `deleting job ${jobId.slice(0, 8)} failed`, async () => {
      await request("DELETE", `v1/jobs/${jobId}`);
      say(`Job ${jobId.slice(0, 8)} deleted, with its files.`);
      afterwards();
    });
  }

  function deleteDataset(button, dataset) {
    return act(button, `deleting dataset ${dataset.name} failed`, async () => {
      await request("DELETE", `v1/datasets/${encodeURIComponent(dataset.id)}`);
      datasetNames.delete(dataset.id);
      say(`Dataset ${dataset.name} (${dataset.id.slice(0, 8)}) deleted.`);
      refresh();
    });
  }

  function deleteAdapter(button, name) {
    return act(button, `deleting adapter ${name} failed`, async () => {
      await request("DELETE", `v1/adapters/${encodeURIComponent(name)}`);
      say(`Adapter ${name} deleted.`);
      refresh();
    });
  }

  function actionButton(label, action, onClick, className) {
    const button = el("button", { type: "button", class: className, data: { action } }, label);
    button.addEventListener("click", () => onClick(button));
    return button;
  }

  // The same cell (and buttons) while `signature` holds: a poll's redraw between a press and a release, or between
  // the two clicks of a delete, would otherwise swallow the click or the armed state.
  function actionCell(key, signature, build) {
    const cached = actionCells.get(key);
    if (cached && cached.signature === signature) return cached.cell;
    const cell = el("td", { class: "actions-cell" }, ...build());
    actionCells.set(key, { signature, cell });
    return cell;
  }

  function jobActions(job) {
    const running = !TERMINAL.has(job.state);
    return actionCell(`job:${job.id}`, running ? "running" : "finished", () => [
      running ? actionButton("Cancel", "cancel", (button) => cancelJob(button, job.id)) : null,
      actionButton("Delete", "delete", (button) => confirmThen(button, () => deleteJob(button, job.id)), "danger"),
    ]);
  }

  function datasetActions(dataset) {
    return actionCell(`dataset:${dataset.id}`, "", () => [
      actionButton("Delete", "delete", (button) => confirmThen(button, () => deleteDataset(button, dataset)), "danger"),
    ]);
  }

  function adapterActions(adapter) {
    return actionCell(`adapter:${adapter.name}`, "", () => [
      actionButton("Delete", "delete", (button) => confirmThen(button, () => deleteAdapter(button, adapter.name)), "danger"),
    ]);
  }

  // Keeps a select's choice across redraws (when that option is still there).
  function fillSelect(select, options) {
    const chosen = select.value;
    select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
    if (options.some(([value]) => value === chosen)) select.value = chosen;
  }

  function showJobFormFields() {
    const kind = $("#job-kind").value;
    for (const node of document.querySelectorAll("#job-form [data-for-kind]")) node.hidden = node.dataset.forKind !== kind;
  }

  // The request body of the job the form describes, and the route it goes to.
  function jobRequest() {
    const kind = $("#job-kind").value;
    const dataset = $("#job-dataset").value;
    if (kind === "predict") {
      const adapter = $("#job-adapter").value;
      return ["v1/jobs/predict", adapter ? { dataset, adapter } : { dataset }];
    }
    if (kind === "text-fit") {
      const name = $("#job-adapter-name").value.trim();
      return ["v1/jobs/train", name ? { dataset, text_only: true, adapter_name: name } : { dataset, text_only: true }];
    }
    return ["v1/jobs/leaderboard", { dataset }];
  }

  async function submitJob(event) {
    event.preventDefault();
    const status = $("#job-form-status");
    if (!$("#job-dataset").value) {
      status.textContent = "Upload a dataset first.";
      return;
    }
    const [path, body] = jobRequest();
    status.textContent = "starting…";
    await act($("#job-submit"), "the job was not started", async () => {
      const created = await request("POST", path, { json: body });
      say(`Started ${created.kind} job`, { jobId: created.job_id });
      refresh();
    });
    status.textContent = "";
  }

  async function submitUpload(event) {
    event.preventDefault();
    const file = $("#upload-file").files[0];
    const bar = $("#upload-progress");
    const status = $("#upload-status");
    if (!file) {
      status.textContent = "Choose a CSV file first.";
      return;
    }
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    status.classList.remove("error");
    await act($("#upload-button"), `uploading ${file.name} failed`, async () => {
      try {
        const dataset = await uploadDataset(file, (sent, total) => {
          bar.max = Math.max(total, 1);
          bar.value = Math.min(sent, bar.max);
          status.textContent = sent < total ? `${bytes(sent)} of ${bytes(total)} sent` : `${bytes(total)} sent; the gateway checks it…`;
        });
        status.textContent = `${dataset.name}: ${count(dataset.rows)} rows${dataset.labelled ? ", labelled" : ""}`;
        datasetNames.set(dataset.id, dataset.name);
        $("#upload-file").value = "";
        pendingDatasetChoice = dataset.id; // the next job most likely runs on what was just uploaded
        say(`Uploaded ${dataset.name} as dataset ${dataset.id.slice(0, 8)}.`);
        refresh();
      } catch (error) {
        status.textContent = "not uploaded";
        status.classList.add("error");
        throw error;
      }
    });
  }

  // --- polling -------------------------------------------------------------------------------------------------

  // Runs `step(alive)` now and every `intervalMs` while it returns true and the route has not changed.
  function poll(step, intervalMs) {
    const mine = generation;
    const alive = () => mine === generation;
    const tick = async () => {
      if (!alive()) return;
      if (document.hidden) {
        timer = setTimeout(tick, intervalMs); // a tab in the background asks nothing
        return;
      }
      let again = true;
      try {
        again = await step(alive);
        if (alive()) setStatus(again ? `live · updated ${when(new Date().toISOString()).slice(11)}` : "");
      } catch (error) {
        if (!alive()) return;
        if (error instanceof AuthError) {
          forgetKey(error.message);
          return;
        }
        if (error instanceof NotFoundError) {
          setStatus(error.message, true);
          return;
        }
        setStatus(`${error.message}; retrying`, true);
      }
      if (again && alive()) timer = setTimeout(tick, intervalMs);
    };
    tick();
  }

  // --- #/ : jobs, datasets, adapters -----------------------------------------------------------------------------

  function jobRow(job) {
    const link = el("a", { href: `#/jobs/${job.id}`, title: job.id }, el("code", {}, job.id.slice(0, 8)));
    return el(
      "tr",
      { data: { job: job.id, state: job.state } },
      el("td", {}, link),
      el("td", {}, job.kind),
      el("td", {}, datasetLabel(job.params?.dataset)),
      el("td", {}, stateBadge(job.state)),
      progressCell(job.progress),
      el("td", {}, when(job.created_at)),
      el("td", {}, duration(runSeconds(job))),
      el("td", {}, number(job.result?.log_loss)),
      jobActions(job),
    );
  }

  function datasetLabel(datasetId) {
    if (typeof datasetId !== "string") return "–";
    return el("span", { title: datasetId }, datasetNames.get(datasetId) ?? datasetId.slice(0, 8));
  }

  function renderJobs(jobs) {
    $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
    $("#jobs-empty").hidden = jobs.length > 0;
  }

  function renderDatasets(datasets) {
    for (const dataset of datasets) datasetNames.set(dataset.id, dataset.name);
    $("#datasets-empty").hidden = datasets.length > 0;
    $("#datasets tbody").replaceChildren(
      ...datasets.map((dataset) => {
        const tr = row(el("code", { title: dataset.id }, dataset.id.slice(0, 8)), dataset.name, count(dataset.rows),
          dataset.labelled ? "yes" : "no", bytes(dataset.bytes), when(dataset.created_at), datasetActions(dataset));
        tr.dataset.dataset = dataset.id;
        return tr;
      }),
    );
    const select = $("#job-dataset");
    fillSelect(select, datasets.map((dataset) => [dataset.id,
      `${dataset.name} · ${count(dataset.rows)} rows${dataset.labelled ? ", labelled" : ""} · ${dataset.id.slice(0, 8)}`]));
    if (pendingDatasetChoice && datasets.some((dataset) => dataset.id === pendingDatasetChoice)) {
      select.value = pendingDatasetChoice;
      pendingDatasetChoice = null;
    }
  }

  function renderAdapters(adapters) {
    $("#adapters-empty").hidden = adapters.length > 0;
    fillSelect($("#job-adapter"), [["", "default predictor"],
      ...adapters.filter((adapter) => adapter.complete).map((adapter) => [adapter.name, `${adapter.name} (${adapter.kind})`])]);
    $("#adapters tbody").replaceChildren(
      ...adapters.map((adapter) => {
        const tr = row(adapter.name, adapter.kind, adapter.base_model, adapter.complete ? "yes" : "training",
          number(adapter.val_log_loss), number(adapter.calibrated_val_log_loss), count(adapter.val_rows),
          when(adapter.modified_at), adapterActions(adapter));
        tr.dataset.adapter = adapter.name;
        return tr;
      }),
    );
  }

  function showList() {
    show("#list-view");
    let ticks = 0;
    poll(async (alive) => {
      const withSideTables = ticks % SIDE_TABLES_EVERY === 0;
      ticks += 1;
      const [jobs, datasets, adapters] = await Promise.all([
        api("v1/jobs?limit=100"),
        withSideTables ? api("v1/datasets") : null,
        withSideTables ? api("v1/adapters") : null,
      ]);
      if (!alive()) return false;
      if (datasets) renderDatasets(datasets);
      if (adapters) renderAdapters(adapters);
      renderJobs(jobs);
      return true;
    }, LIST_POLL_MS);
  }

  // --- #/jobs/<id> : one job's report ----------------------------------------------------------------------------

  function card(label, value, key) {
    return el("div", { class: "card", data: key ? { metric: key } : {} }, el("div", { class: "card-label" }, label),
      el("div", { class: "card-value" }, value));
  }

  function renderSummary(job) {
    const timings = job.timings ?? {};
    const cards = [
      card("kind", job.kind),
      ...(typeof job.params?.dataset === "string" ? [card("dataset", datasetLabel(job.params.dataset))] : []),
      el("div", { class: "card" }, el("div", { class: "card-label" }, "state"), el("div", { class: "card-value" }, stateBadge(job.state))),
      card("created", when(job.created_at)),
      card("started", when(job.started_at)),
      card("finished", when(job.finished_at)),
      card("waited", duration(timings.queued_seconds)),
      card("ran", duration(runSeconds(job))),
      card("total", duration(timings.total_seconds)),
    ];
    if (job.worker) cards.push(card("worker", job.worker));
    if (job.attempts) cards.push(card("attempts", count(job.attempts)));
    $("#job-summary").replaceChildren(...cards);
    const done = job.progress?.done ?? 0;
    const total = job.progress?.total ?? 0;
    const bar = $("#job-progress");
    bar.max = Math.max(total, 1);
    bar.value = Math.min(done, bar.max);
    const percent = total ? ` (${Math.floor((100 * done) / total)}%)` : "";
    $("#job-progress-text").textContent = `${count(done)} / ${count(total)}${percent}`;
    $("#job-error").hidden = !job.error;
    $("#job-error").textContent = job.error ?? "";
    $("#job-cancel").hidden = TERMINAL.has(job.state);
  }

  function renderChunks(job) {
    const chunks = job.chunks ?? [];
    $("#chunks").hidden = chunks.length === 0;
    $("#chunks-empty").hidden = chunks.length > 0;
    $("#chunks tbody").replaceChildren(
      ...chunks.map((chunk) => {
        const rows = chunk.stop - chunk.start;
        return row(count(chunk.index), `${count(chunk.start)}–${count(chunk.stop - 1)}`, el("td", {}, stateBadge(chunk.state)),
          `${count(chunk.done)} / ${count(rows)}`, chunk.worker, count(chunk.attempts), when(chunk.started_at),
          when(chunk.finished_at));
      }),
    );
  }

  function renderMetrics(result) {
    const scalars = Object.entries(result).filter(
      ([key, value]) => !NOT_A_CARD.has(key) && ["number", "string", "boolean"].includes(typeof value),
    );
    const known = Object.keys(METRIC_LABELS).filter((key) => key in result);
    const others = scalars.filter(([key]) => !(key in METRIC_LABELS)).map(([key]) => key);
    const cards = [...known, ...others].map((key) => {
      const value = result[key];
      const text = typeof value === "number" && !Number.isInteger(value) ? number(value) : typeof value === "number" ? count(value) : String(value);
      return card(METRIC_LABELS[key] ?? key.replaceAll("_", " "), text, key);
    });
    $("#metric-cards").replaceChildren(...cards);
    $("#submission-path").hidden = typeof result.submission_path !== "string";
    $("#submission-path").textContent = `In the shared storage: ${result.submission_path ?? ""}`;
    $("#job-metrics").hidden = cards.length === 0;

    const perSource = result.per_source && typeof result.per_source === "object" ? Object.entries(result.per_source) : [];
    $("#job-per-source tbody").replaceChildren(
      ...perSource.map(([source, figures]) => row(source, count(figures?.rows), number(figures?.log_loss), number(figures?.accuracy))),
    );
    $("#job-per-source").hidden = perSource.length === 0;

    renderConfusion(result.confusion_matrix);
    renderDomainCheck(result.domain_check);

    const workers = result.workers && typeof result.workers === "object" ? Object.entries(result.workers) : [];
    $("#job-workers tbody").replaceChildren(
      ...workers.map(([worker, share]) =>
        row(worker, count(share?.chunks), count(share?.rows), number(share?.seconds, 1),
          share?.seconds ? number(share.rows / share.seconds, 1) : "–"),
      ),
    );
    $("#job-workers").hidden = workers.length === 0;

    const board = result.leaderboard;
    const notes = [];
    if (board?.skipped) notes.push(`No leaderboard: ${board.skipped}`);
    if (board?.agreement) {
      const agreement = board.agreement;
      notes.push(`Predicted vs human board over ${count(agreement.models)} models: Spearman ${number(agreement.spearman, 2)},`
        + ` Kendall ${number(agreement.kendall, 2)}, mean |Δ rating| ${number(agreement.mean_abs_rating_difference, 1)},`
        + ` same top model: ${agreement.same_top_model ? "yes" : "no"}.`);
    }
    $("#leaderboard-note").textContent = notes.join(" ");
    if (notes.length) $("#job-leaderboard").hidden = false;
  }

  // A text predictor's job says whether its prompts are like the predictor's training prompts; only "unlike" is
  // worth a person's attention: the log loss to expect is then the left-out-source figure, not the in-domain one.
  function renderDomainCheck(check) {
    const unlike = check && typeof check === "object" && check.like_training === false;
    $("#job-domain-warning").hidden = !unlike;
    $("#job-domain-warning").textContent = unlike ? `Unlike the training data. ${check.note ?? ""}` : "";
  }

  function renderConfusion(matrix) {
    const valid = matrix && Array.isArray(matrix.labels) && Array.isArray(matrix.counts);
    $("#job-confusion").hidden = !valid;
    if (!valid) return;
    const names = matrix.labels.map((label) => LABEL_NAMES[label] ?? label);
    const largest = Math.max(1, ...matrix.counts.flat().filter((value) => typeof value === "number"));
    $("#job-confusion thead").replaceChildren(el("tr", {}, el("th", {}, "human ↓ predicted →"), ...names.map((name) => el("th", {}, name))));
    $("#job-confusion tbody").replaceChildren(
      ...matrix.counts.map((counts, index) => {
        const cells = counts.map((value) => {
          const cell = el("td", { class: "count" }, count(value));
          // Shade by share of the largest cell (CSSOM, not an inline style attribute: the CSP allows it).
          cell.style.backgroundColor = `rgba(37, 99, 235, ${(0.08 + 0.6 * (value / largest)).toFixed(3)})`;
          return cell;
        });
        return el("tr", {}, el("th", {}, names[index] ?? String(index)), ...cells);
      }),
    );
  }

  // A small CSV reader (quoted fields, doubled quotes): enough for the leaderboard files the workers write.
  function parseCsv(text) {
    const rows = [];
    let fields = [];
    let field = "";
    let quoted = false;
    for (let index = 0; index < text.length; index += 1) {
      const char = text[index];
      if (quoted) {
        if (char === '"' && text[index + 1] === '"') {
          field += '"';
          index += 1;
        } else if (char === '"') quoted = false;
        else field += char;
      } else if (char === '"') quoted = true;
      else if (char === ",") {
        fields.push(field);
        field = "";
      } else if (char === "\n" || char === "\r") {
        if (char === "\r" && text[index + 1] === "\n") index += 1;
        fields.push(field);
        rows.push(fields);
        fields = [];
        field = "";
      } else field += char;
    }
    if (field !== "" || fields.length) {
      fields.push(field);
      rows.push(fields);
    }
    return rows.filter((fields) => fields.length > 1 || fields[0] !== "");
  }

  function csvTable(name, text) {
    const [header = [], ...body] = parseCsv(text);
    const cell = (value) => (/^-?\d+\.\d+$/.test(value) ? Number(value).toFixed(1) : value);
    return el("div", { class: "csv-table" }, el("h3", {}, name),
      el("table", { class: "grid", data: { artifact: name } },
        el("thead", {}, el("tr", {}, el("th", {}, "#"), ...header.map((title) => el("th", {}, title)))),
        el("tbody", {}, ...body.map((values, index) => el("tr", {}, el("td", {}, String(index + 1)), ...values.map((value) => el("td", {}, cell(value))))))));
  }

  async function download(jobId, name) {
    try {
      const blob = await api(artifactPath(jobId, name), "blob");
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      if (error instanceof AuthError) forgetKey(error.message);
      else setStatus(`download of ${name} failed: ${error.message}`, true);
    }
  }

  async function renderArtifacts(job, alive) {
    const names = Array.isArray(job.artifacts) ? job.artifacts : [];
    $("#downloads").replaceChildren(
      ...names.map((name) => {
        const button = el("button", { type: "button", class: "link", data: { artifact: name } }, name);
        button.addEventListener("click", () => download(job.id, name));
        return el("li", {}, button);
      }),
    );
    $("#downloads-empty").hidden = names.length > 0;
    const images = names.filter((name) => name.toLowerCase().endsWith(".png"));
    const boards = names.filter((name) => name.toLowerCase().endsWith("leaderboard.csv"));
    const [imageBlobs, boardTexts] = await Promise.all([
      Promise.all(images.map((name) => api(artifactPath(job.id, name), "blob"))),
      Promise.all(boards.map((name) => api(artifactPath(job.id, name), "text"))),
    ]);
    if (!alive()) return;
    const figure = (name, blob) => {
      const url = URL.createObjectURL(blob);
      objectUrls.push(url);
      return el("figure", {}, el("img", { src: url, alt: name, data: { artifact: name } }), el("figcaption", {}, name));
    };
    const boardImages = images.map((name, index) => [name, imageBlobs[index]]).filter(([name]) => name.includes("leaderboard"));
    const otherImages = images.map((name, index) => [name, imageBlobs[index]]).filter(([name]) => !name.includes("leaderboard"));
    $("#figures").replaceChildren(...otherImages.map(([name, blob]) => figure(name, blob)));
    $("#job-figures").hidden = otherImages.length === 0;
    $("#leaderboard-tables").replaceChildren(...boards.map((name, index) => csvTable(name, boardTexts[index])));
    $("#leaderboard-figures").replaceChildren(...boardImages.map(([name, blob]) => figure(name, blob)));
    if (boards.length || boardImages.length) $("#job-leaderboard").hidden = false;
  }

  function showJob(jobId) {
    show("#job-view");
    $("#job-id").textContent = jobId;
    $("#job-cancel").hidden = true;
    $("#job-delete").disarm?.();
    for (const id of ["#job-metrics", "#job-per-source", "#job-confusion", "#job-leaderboard", "#job-figures", "#job-workers"]) {
      $(id).hidden = true;
    }
    for (const id of ["#job-summary", "#metric-cards", "#figures", "#leaderboard-tables", "#leaderboard-figures", "#downloads",
      "#chunks tbody", "#params tbody"]) {
      $(id).replaceChildren();
    }
    $("#leaderboard-note").textContent = "";
    $("#job-domain-warning").hidden = true;
    $("#downloads-empty").hidden = false;
    $("#submission-path").hidden = true;
    poll(async (alive) => {
      let job;
      try {
        job = await api(`v1/jobs/${jobId}`);
      } catch (error) {
        if (error instanceof NotFoundError) $("#job-summary").replaceChildren(el("p", { class: "error" }, `No job ${jobId} on this gateway.`));
        throw error;
      }
      if (!alive()) return false;
      const datasetId = job.params?.dataset;
      if (typeof datasetId === "string" && !datasetNames.has(datasetId)) {
        try {
          datasetNames.set(datasetId, (await api(`v1/datasets/${encodeURIComponent(datasetId)}`)).name);
        } catch (error) {
          if (error instanceof AuthError) throw error;
          datasetNames.set(datasetId, datasetId.slice(0, 8)); // asked once, whatever the answer
        }
        if (!alive()) return false;
      }
      renderSummary(job);
      renderChunks(job);
      renderMetrics(job.result ?? {});
      $("#params tbody").replaceChildren(
        ...Object.entries(job.params ?? {}).map(([name, value]) => row(name, value === null ? "–" : typeof value === "object" ? JSON.stringify(value) : String(value))),
      );
      if (!TERMINAL.has(job.state)) return true;
      await renderArtifacts(job, alive);
      return false; // finished: nothing more will change
    }, JOB_POLL_MS);
  }

  // --- the key and the routes ------------------------------------------------------------------------------------

  // The tenant the key signs in as: the lists below hold that tenant's work only (the admin key: everyone's).
  async function showTenant() {
    const me = await api("v1/whoami");
    $("#tenant").textContent = me.admin ? `signed in as ${me.tenant} (sees every tenant)` : `signed in as ${me.tenant}`;
    $("#tenant").hidden = false;
  }

  function forgetKey(reason = "") {
    $("#tenant").textContent = "";
    sessionStorage.removeItem(KEY_STORAGE);
    say("");
    actionCells.clear();
    route();
    $("#key-error").textContent = reason ? `${reason}; enter it again.` : "";
  }

  // Redraws the view now (after an action); the action's message stays.
  function refresh() {
    route();
  }

  function route() {
    generation += 1;
    clearTimeout(timer);
    revokeObjectUrls();
    setStatus("");
    if (!sessionStorage.getItem(KEY_STORAGE)) {
      show("#key-view");
      $("#api-key").focus();
      return;
    }
    if (!$("#tenant").textContent) showTenant().catch(() => {}); // a reload: the views report a refused key
    const match = location.hash.match(JOB_ROUTE);
    if (match) showJob(match[1]);
    else showList();
  }

  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#api-key");
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("#key-error").textContent = "";
    try {
      await showTenant();
    } catch (error) {
      sessionStorage.removeItem(KEY_STORAGE);
      $("#key-error").textContent =
        error instanceof AuthError ? "The gateway refused this key." : `The gateway did not answer: ${error.message}`;
      return;
    }
    route();
  });
  $("#forget-key").addEventListener("click", () => forgetKey());
  $("#upload-form").addEventListener("submit", submitUpload);
  $("#job-form").addEventListener("submit", submitJob);
  $("#job-kind").addEventListener("change", showJobFormFields);
  showJobFormFields();
  $("#job-cancel").addEventListener("click", (event) => cancelJob(event.currentTarget, $("#job-id").textContent));
  $("#job-delete").addEventListener("click", (event) => {
    const button = event.currentTarget;
    const jobId = $("#job-id").textContent;
    confirmThen(button, () => deleteJob(button, jobId, { afterwards: () => (location.hash = "#/") }));
  });
  window.addEventListener("hashchange", route);
  route();
})();
