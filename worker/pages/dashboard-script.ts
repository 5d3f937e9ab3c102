import { NAME_MAX, NAME_MIN, RESERVED_NAMES, nameProblem } from "../servers/names";
import { STEP_TEXT } from "./servers";

/**
 * The dashboard's only script, served same-origin from /assets/dashboard.js.
 * It enhances pages that work without it: the name is checked as it is typed
 * by the very function the server uses (its source, with the constants it
 * reads), and a server's page follows its status over server-sent events,
 * re-fetching its own HTML for the sections a change affects; a page that had
 * to leave a homeserver's job under way follows it and shows its outcome; and
 * an archive to import is uploaded in checked parts, resumably (the one thing
 * that needs it).
 */
export const DASHBOARD_SCRIPT = `"use strict";
(() => {
  const NAME_MIN = ${NAME_MIN}, NAME_MAX = ${NAME_MAX}, RESERVED_NAMES = new Set(${JSON.stringify([...RESERVED_NAMES])});
  const nameProblem = ${nameProblem.toString()};

  const name = document.querySelector("form[data-name-check] input[name=name]");
  if (name) {
    const out = document.getElementById("field-name-problem");
    name.addEventListener("input", () => {
      const problem = name.value === "" ? null : nameProblem(name.value);
      const message = problem ? "The name " + problem + "." : "";
      name.setCustomValidity(message);
      name.setAttribute("aria-invalid", problem ? "true" : "false");
      out.textContent = message;
    });
  }

  // A homeserver job the page had to leave under way: follow it, then open the page of its outcome.
  const pending = document.getElementById("job-pending");
  if (pending) {
    document.getElementById("job-note").textContent = "now, or wait: this page shows the result by itself when it is done.";
    const follow = async () => {
      const response = await fetch(pending.dataset.job).catch(() => null);
      const job = response && response.ok ? (await response.json()).job : null;
      if (!response || (job && job.status === "pending")) setTimeout(follow, 1500);
      else location.replace(pending.dataset.outcome);
    };
    setTimeout(follow, 1000);
  }

  // "Import a homeserver": the archive hashed and sent in the import's parts, then completed. A file
  // chosen again resumes: a part is sent only when what arrived differs from the file's.
  const upload = document.getElementById("import-upload");
  if (upload) {
    upload.hidden = false;
    const bar = document.getElementById("import-upload-progress");
    const status = document.getElementById("import-upload-status");
    const button = upload.querySelector("button[type=submit]");
    const hex = (buffer) => Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
    const call = async (method, path, body, headers) => {
      const response = await fetch(upload.dataset.api + path, { method, body, headers: headers || { "content-type": "application/json" } });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) return answer;
      const error = new Error((answer.error && answer.error.message) || "the server answered " + response.status + ".");
      error.status = response.status;
      error.code = answer.error && answer.error.code;
      throw error;
    };
    // A part lost or damaged on the way is sent again, twice at most; a refusal is not.
    const sendPart = async (part, bytes, digest) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await call("PUT", "/parts/" + part, bytes, { "content-type": "application/octet-stream", "x-part-sha256": digest });
        } catch (error) {
          const again = error.status === undefined || error.status >= 500 || error.code === "part_corrupted";
          if (!again || attempt === 3) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
        }
      }
    };
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = upload.elements.archive.files[0];
      const passphrase = upload.elements.passphrase.value;
      button.disabled = true;
      bar.hidden = false;
      try {
        let current = await call("GET", "").catch((error) => {
          if (error.status === 404) return null;
          throw error;
        });
        if (current && current.status === "uploading" && current.sizeBytes !== file.size) {
          status.textContent = "Another file was being uploaded: it is cancelled.";
          await call("DELETE", "");
          current = null;
        }
        if (!current || current.status !== "uploading") current = await call("POST", "", JSON.stringify({ sizeBytes: file.size }));
        const received = new Map(current.receivedParts.map((part) => [part.partNumber, part.sha256]));
        for (let part = 1; part <= current.parts; part++) {
          const bytes = await file.slice((part - 1) * current.partSize, part * current.partSize).arrayBuffer();
          const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
          if (received.get(part) !== digest) await sendPart(part, bytes, digest);
          bar.value = part / current.parts;
          status.textContent = part + " of " + current.parts + " parts uploaded.";
        }
        status.textContent = "Checking the archive…";
        await call("POST", "/complete", JSON.stringify(passphrase ? { passphrase } : {}));
        location.assign(upload.dataset.done);
      } catch (error) {
        status.textContent = "The upload stopped: " + error.message + " Choose the same file again to resume.";
        button.disabled = false;
      }
    });
  }

  const live = document.getElementById("live-status");
  if (!live || !window.EventSource) return;
  const field = (key) => live.querySelector("[data-field=" + key + "]");
  const stateOf = (server) => server.status + "/" + (server.lastJob ? server.lastJob.status : "");
  const STEPS = ${JSON.stringify(STEP_TEXT)};
  let state = live.dataset.state;

  // Sections whose forms depend on the state are swapped for fresh ones, unless the person is in one.
  const refresh = async () => {
    const response = await fetch(live.dataset.page, { headers: { accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const section of document.querySelectorAll("[data-refresh]")) {
      const replacement = fresh.getElementById(section.id);
      if (replacement && !section.contains(document.activeElement)) section.replaceWith(replacement);
    }
  };

  const source = new EventSource(live.dataset.events);
  source.addEventListener("server", (event) => {
    const server = JSON.parse(event.data);
    const job = server.lastJob;
    const underWay = job && ["queued", "sent", "acked"].includes(job.status);
    const badge = field("status").firstElementChild;
    badge.textContent = server.status;
    badge.className = "badge " + (server.status === "running" ? "ok" : server.status === "failed" ? "bad" : "warn");
    field("reason").textContent = server.statusReason || "";
    field("step").hidden = !underWay;
    field("step").textContent = underWay ? (STEPS[job.kind] || job.kind) + ": " + (job.message || job.status) : "";
    field("progress").hidden = !underWay;
    field("progress").value = job ? job.progress || 0 : 0;
    field("progress").textContent = Math.round((job ? job.progress || 0 : 0) * 100) + " %";
    document.getElementById("live-note").textContent = "This status updates by itself.";
    if (stateOf(server) !== state) {
      state = stateOf(server);
      refresh();
    }
  });
})();
`;
