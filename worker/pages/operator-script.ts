/**
 * The operator console's only script, served same-origin from /assets/operator.js. Without it,
 * text to copy (a join token, the enrollment command) is plain selectable text; with it, each
 * gets a button that copies it and says so.
 */
export const OPERATOR_SCRIPT = `"use strict";
(() => {
  for (const source of document.querySelectorAll("pre[data-copy]")) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy " + source.dataset.copy;
    const said = document.createElement("span");
    said.className = "hint";
    said.setAttribute("role", "status");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent);
        said.textContent = " Copied.";
      } catch {
        said.textContent = " Could not copy: select the text instead.";
      }
    });
    source.after(button, said);
  }
})();
`;
