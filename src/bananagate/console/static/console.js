// bananagate console: the small progressive layer over server-rendered pages.
// Every feature here also works without it (plain form posts); this adds live choices,
// drag-and-drop, a progress timer while generating, copy buttons and confirmations.
"use strict";

(function () {
  // --- confirmations on destructive forms (data-confirm="question") ---
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);

  // --- copy buttons (data-copy="id of the input to copy") ---
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) return;
    var done = function () {
      var note = document.querySelector("[data-copied]");
      if (note) note.hidden = false;
      button.textContent = "Copied";
    };
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {
        if (document.execCommand("copy")) done();
      });
    } else if (document.execCommand("copy")) {
      done();
    }
  });

  var form = document.querySelector("[data-playground]");
  if (!form) return;

  var model = form.querySelector("[data-model]");
  var ratio = form.querySelector("[data-ratio]");
  var size = form.querySelector("[data-size]");
  var files = form.querySelector("#images");
  var zone = form.querySelector("[data-dropzone]");
  var previews = form.querySelector("[data-previews]");
  var collage = form.querySelector("#collage");
  var tooMany = form.querySelector("[data-too-many]");
  var maxLabel = form.querySelector("[data-limit-label]");
  var submit = form.querySelector("[data-submit]");
  var progress = form.querySelector("[data-progress]");
  var elapsed = form.querySelector("[data-elapsed]");
  var result = document.querySelector("[data-result-area]");

  function chosen() { return model.options[model.selectedIndex]; }

  function fill(select, values, keep, first) {
    var previous = select.value;
    select.textContent = "";
    if (first) select.appendChild(new Option(first, ""));
    values.forEach(function (value) { select.appendChild(new Option(value, value)); });
    select.value = values.indexOf(previous) >= 0 ? previous : keep;
  }

  function limit() { return parseInt(chosen().getAttribute("data-max-images"), 10); }

  // The ratio and size menus follow the chosen model's table.
  function onModel() {
    var option = chosen();
    fill(ratio, option.getAttribute("data-ratios").split(" "), "", "Auto");
    fill(size, option.getAttribute("data-sizes").split(" "), option.getAttribute("data-default-size"));
    maxLabel.textContent = String(limit());
    onFiles();
  }

  function onFiles() {
    var list = Array.prototype.slice.call(files.files || []);
    previews.textContent = "";
    list.forEach(function (file) {
      var item = document.createElement("li");
      var img = document.createElement("img");
      img.alt = "";
      img.src = URL.createObjectURL(file);
      img.addEventListener("load", function () { URL.revokeObjectURL(img.src); });
      item.appendChild(img);
      item.appendChild(document.createTextNode(file.name));
      previews.appendChild(item);
    });
    var over = list.length > limit();
    tooMany.hidden = !over || collage.checked;
    tooMany.textContent = over
      ? list.length + " images: this model takes " + limit() + ". Tick the collage box, or remove some."
      : "";
  }

  model.addEventListener("change", onModel);
  files.addEventListener("change", onFiles);
  collage.addEventListener("change", onFiles);

  // Drag and drop: dropped files join the ones already chosen, in the file input itself,
  // so the form posts them like any other.
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    var dropped = event.dataTransfer && event.dataTransfer.files;
    if (!dropped || !dropped.length) return;
    var merged = new DataTransfer();
    Array.prototype.forEach.call(files.files || [], function (f) { merged.items.add(f); });
    Array.prototype.forEach.call(dropped, function (f) {
      if (/^image\//.test(f.type)) merged.items.add(f);
    });
    files.files = merged.files;
    onFiles();
  });

  // Generate without leaving the page: post by fetch, show a running timer, then the answer.
  form.addEventListener("submit", function (event) {
    if (event.defaultPrevented) return;
    event.preventDefault();
    var started = performance.now();
    var timer = window.setInterval(function () {
      elapsed.textContent = ((performance.now() - started) / 1000).toFixed(1);
    }, 100);
    elapsed.textContent = "0.0";
    progress.hidden = false;
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "x-console-fragment": "1" }
    }).then(function (response) {
      return response.text();
    }).then(function (html) {
      result.innerHTML = html;  // server-rendered and escaped by the template engine
    }, function () {
      result.textContent = "";
      var p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      p.textContent = "The gateway could not be reached. Try again.";
      result.appendChild(p);
    }).then(function () {
      window.clearInterval(timer);
      progress.hidden = true;
      submit.disabled = false;
      form.removeAttribute("aria-busy");
      var heading = result.querySelector("h2");
      if (heading) heading.focus();
    });
  });

  onModel();
})();
