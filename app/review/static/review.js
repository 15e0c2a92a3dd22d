/* Verity review UI: keyboard shortcuts, reveal, face boxes, timeline, claim heartbeat. */
(function () {
  "use strict";
  var token = (document.querySelector('meta[name="csrf-token"]') || {}).content;
  var help = document.getElementById("help");
  var viewer = document.getElementById("viewer");
  var crops = document.getElementById("crops");
  var media = document.getElementById("media");
  var svg = document.getElementById("boxes");
  var dataEl = document.getElementById("evidence-data");
  var data = dataEl ? JSON.parse(dataEl.textContent) : null;
  var showBoxes = true;

  function typing(e) {
    var t = e.target;
    if (!t) return false;
    if (t.tagName === "INPUT") return !/^(checkbox|radio|button|submit|reset)$/i.test(t.type);
    return t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable;
  }

  function toggleReveal() {
    if (!viewer) return;
    var blurred = viewer.classList.toggle("blurred");
    if (crops) crops.classList.toggle("blurred", blurred);
  }
  /* the blurred viewer reveals on a click anywhere over it, not only on its button */
  var revealLayer = viewer && viewer.querySelector(".reveal");
  if (revealLayer) revealLayer.addEventListener("click", function (e) { if (e.target === revealLayer) toggleReveal(); });
  var revealBtn = document.getElementById("reveal-btn");
  if (revealBtn) revealBtn.addEventListener("click", toggleReveal);

  function colour(s) { return s == null ? "#9aa3b2" : s >= 0.8 ? "#ff4d4d" : s >= 0.5 ? "#ffb020" : "#35c46a"; }

  function frameAt(t) {
    if (!data || !data.overlay.length) return null;
    var best = data.overlay[0], d = Infinity;
    for (var i = 0; i < data.overlay.length; i++) {
      var dd = Math.abs(data.overlay[i].t - t);
      if (dd < d) { d = dd; best = data.overlay[i]; }
    }
    return best;
  }

  function draw() {
    if (!svg || !media || !data) return;
    var w = media.naturalWidth || media.videoWidth, h = media.naturalHeight || media.videoHeight;
    if (!w || !h) return;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!showBoxes) return;
    var f = data.kind === "video" ? frameAt(media.currentTime || 0) : data.overlay[0];
    if (!f) return;
    var ns = "http://www.w3.org/2000/svg";
    f.faces.forEach(function (face) {
      if (!face.box) return;
      var b = face.box, r = document.createElementNS(ns, "rect");
      r.setAttribute("x", b[0]); r.setAttribute("y", b[1]);
      r.setAttribute("width", b[2] - b[0]); r.setAttribute("height", b[3] - b[1]);
      r.setAttribute("stroke", colour(face.score)); r.setAttribute("rx", 4);
      svg.appendChild(r);
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", b[0] + 4); t.setAttribute("y", Math.max(14, b[1] - 6) * 1);
      t.setAttribute("font-size", Math.max(13, Math.round(h / 40)));
      t.textContent = face.score == null ? "face" : face.score.toFixed(3);
      svg.appendChild(t);
    });
  }

  if (media) {
    media.addEventListener("load", draw);
    media.addEventListener("loadedmetadata", draw);
    media.addEventListener("seeked", draw);
    media.addEventListener("timeupdate", function () { draw(); movePlayhead(); });
    if (media.complete) draw();
    window.addEventListener("resize", draw);
  }
  var boxesToggle = document.getElementById("boxes-toggle");
  if (boxesToggle) boxesToggle.addEventListener("click", function () {
    showBoxes = !showBoxes; boxesToggle.textContent = "Boxes: " + (showBoxes ? "on" : "off"); draw();
  });

  function seek(t) {
    if (!media || data.kind !== "video") return;
    media.pause();
    media.currentTime = Math.max(0, t);
  }
  var timeline = document.getElementById("timeline");
  var playhead = document.getElementById("playhead");
  function movePlayhead() {
    if (!timeline || !playhead || !media.duration) return;
    var ticks = timeline.querySelectorAll(".tick");
    var f = frameAt(media.currentTime);
    for (var i = 0; i < ticks.length; i++) {
      if (parseFloat(ticks[i].dataset.t) === f.t) {
        playhead.style.left = (ticks[i].offsetLeft + ticks[i].offsetWidth / 2 - 1) + "px";
      }
    }
  }
  if (timeline) timeline.addEventListener("click", function (e) {
    var tick = e.target.closest(".tick, .occ-band");  // a hand-over-face band: its most covered moment
    if (tick) seek(parseFloat(tick.dataset.t));
  });
  var occlusion = document.getElementById("occlusion");
  if (occlusion) occlusion.addEventListener("click", function (e) {
    var ev = e.target.closest(".occ-event");
    if (!ev) return;
    seek(parseFloat(ev.dataset.t));
    if (viewer) viewer.scrollIntoView({ block: "nearest" });
  });
  if (crops) crops.addEventListener("click", function (e) {
    var c = e.target.closest(".crop");
    if (!c) return;
    if (crops.classList.contains("blurred")) { toggleReveal(); return; }  // the first click reveals
    if (data.kind === "video") { seek(parseFloat(c.dataset.t)); }
    if (viewer) viewer.scrollIntoView({ block: "nearest" });
  });
  function step(dir) {
    if (!media || !data || data.kind !== "video" || !data.overlay.length) return;
    var ts = data.overlay.map(function (f) { return f.t; });
    var cur = media.currentTime, target = null;
    for (var i = 0; i < ts.length; i++) {
      var j = dir > 0 ? i : ts.length - 1 - i;
      if (dir > 0 ? ts[j] > cur + 1e-3 : ts[j] < cur - 1e-3) { target = ts[j]; break; }
    }
    if (target != null) seek(target);
  }

  /* claim heartbeat: renew while the page is open; say so when the claim is lost */
  var claimLeft = document.getElementById("claim-left");
  var until = claimLeft && claimLeft.dataset.until ? new Date(claimLeft.dataset.until) : null;
  function showLeft() {
    if (!claimLeft || !until) return;
    var s = Math.max(0, Math.round((until - new Date()) / 1000));
    claimLeft.textContent = s > 0 ? Math.floor(s / 60) + "m " + ("0" + s % 60).slice(-2) + "s left (renewed while open)" : "claim expired";
  }
  function beat() {
    if (!data || !data.heartbeat) return;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", data.heartbeat);
    xhr.setRequestHeader("X-CSRFToken", token);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
      if (xhr.status === 200 && body.until) { until = new Date(body.until); }
      else if (xhr.status === 409) {
        var cl = document.getElementById("claimline");
        if (cl) cl.innerHTML = '<span class="late">Your claim was taken over or released. Reload before deciding.</span>';
        var form = document.getElementById("decide-form");
        if (form) form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        data.heartbeat = null;
      }
    };
    xhr.send();
  }
  if (data && data.heartbeat) {
    showLeft();
    setInterval(showLeft, 1000);
    setInterval(beat, data.heartbeat_ms);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) beat(); });
  }

  var decideForm = document.getElementById("decide-form");
  function decideWith(key) {
    if (!decideForm) return false;
    var btn = decideForm.querySelector('button[data-key="' + key + '"]');
    if (!btn || btn.disabled) return false;
    btn.classList.add("primary");
    decideForm.requestSubmit(btn);
    return true;
  }
  if (decideForm) decideForm.addEventListener("submit", function () {
    decideForm.querySelectorAll("button").forEach(function (b) { setTimeout(function () { b.disabled = true; }, 0); });
  });

  /* admin keys page: copy a key or secret that is shown once; confirm a form marked data-confirm */
  function selectText(el) {
    var r = document.createRange(), sel = window.getSelection();
    r.selectNodeContents(el); sel.removeAllRanges(); sel.addRange(r);
  }
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.dataset.copy);
      if (!el) return;
      var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); };
      selectText(el);
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(el.textContent).then(done, function () { /* stays selected: Ctrl-C */ });
      } else {
        try { if (document.execCommand("copy")) done(); } catch (err) { /* stays selected: Ctrl-C */ }
      }
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) { if (!window.confirm(f.dataset.confirm)) e.preventDefault(); });
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") {
      if (help.classList.contains("open")) help.classList.remove("open");
      else if (typing(e)) e.target.blur();
      return;
    }
    if (typing(e)) return;
    if (e.key === "?") { help.classList.toggle("open"); e.preventDefault(); return; }
    if (help.classList.contains("open")) return;
    switch (e.key) {
      case "n": document.getElementById("next-form").requestSubmit(); e.preventDefault(); break;
      case "r": toggleReveal(); e.preventDefault(); break;
      case "f": case "a": case "i": if (decideWith(e.key)) e.preventDefault(); break;
      case "ArrowRight": step(1); break;
      case "ArrowLeft": step(-1); break;
    }
  });
  help.addEventListener("click", function (e) { if (e.target === help) help.classList.remove("open"); });
})();
