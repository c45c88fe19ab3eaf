// The live explorers' loader, on every page that has an explorer (book/_ext/live_explorers.py adds it).
// An explorer's static player (labkit.widgets) sits in an element with a data-labkit-live
// configuration; this adds a "Run live" button to it. Nothing else is loaded until the reader
// presses it: then explorer.js, onnxruntime-web and the model come from the book's own _static
// folder. Without WebAssembly the static player stays, with a note saying why.

function note(root, text, color = "inherit") {
  const div = document.createElement("div");
  div.className = "labkit-live-note";
  div.style.cssText = `font-size:0.9em;margin:0.3em 0;color:${color}`;
  div.textContent = text;
  root.prepend(div);
  return div;
}

for (const root of document.querySelectorAll("[data-labkit-live]")) {
  if (typeof WebAssembly !== "object" || typeof WebAssembly.instantiate !== "function") {
    note(root, "This browser has no WebAssembly, so the explorer cannot run live here; the player shows precomputed frames.");
    continue;
  }
  const bar = document.createElement("div");
  bar.className = "labkit-live-bar";
  bar.style.cssText = "display:flex;align-items:center;gap:0.6em;margin:0.3em 0";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "labkit-live-run";
  button.textContent = "Run live";
  const hint = document.createElement("span");
  hint.style.fontSize = "0.9em";
  hint.textContent = "runs the model in your browser (about 20 MB, loaded once)"
    + (root.querySelector(".labkit-frames") ? "; below: precomputed frames" : "");
  bar.append(button, hint);
  root.prepend(bar);
  const ui = document.createElement("div");
  ui.className = "labkit-live";
  bar.after(ui);
  button.addEventListener("click", async () => {
    root.dataset.openedAt = String(performance.now());  // the explorer's first-image time counts from here
    button.disabled = true;
    hint.textContent = "";
    root.dataset.liveState = "loading";
    try {
      const { open } = await import("./explorer.js");
      await open(root, ui);
    } catch (error) {
      root.dataset.liveState = "error";
      for (const player of root.querySelectorAll(".labkit-frames")) player.hidden = false;
      note(ui, `The live explorer could not start: ${error.message}. The player below shows precomputed frames.`,
           "#b00020").className = "labkit-live-error";
      console.warn("labkit live explorer:", error);
    }
  }, { once: true });
}
