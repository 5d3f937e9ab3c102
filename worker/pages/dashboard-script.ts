import { NAME_MAX, NAME_MIN, RESERVED_NAMES, nameProblem } from "../servers/names";
import { STEP_TEXT } from "./servers";

/**
 * The dashboard's only script, served same-origin from /assets/dashboard.js.
 * It enhances pages that work without it: the name is checked as it is typed
 * by the very function the server uses (its source, with the constants it
 * reads), and a server's page follows its status over server-sent events,
 * re-fetching its own HTML for the sections a change affects; a page that had
 * to leave a homeserver's job under way follows it and shows its outcome.
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
