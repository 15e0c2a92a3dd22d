/* "Record a check" on the upload page: 5 seconds from the camera (getUserMedia + MediaRecorder),
   sent through the page's own upload (same CSRF token, page token and limits: window.VerityPage,
   set by the page's script), its result shown like an upload's with the hand-over-face check. */
(function () {
  "use strict";
  var section = document.getElementById("record-check");
  var page = window.VerityPage;
  if (!section || !page) return;  // this visitor may not upload here
  var SECONDS = 5;
  var TYPES = ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm", "video/mp4"];
  var openBtn = document.getElementById("record-open");
  var panel = document.getElementById("record-panel");
  var preview = document.getElementById("record-preview");
  var startBtn = document.getElementById("record-start");
  var cancelBtn = document.getElementById("record-cancel");
  var countdown = document.getElementById("record-countdown");
  var unavailable = document.getElementById("record-unavailable");
  var errorEl = document.getElementById("record-error");
  var stream = null, recorder = null, timer = null, cancelled = false;

  function mimeType() {
    if (typeof MediaRecorder.isTypeSupported !== "function") return "";
    for (var i = 0; i < TYPES.length; i++) if (MediaRecorder.isTypeSupported(TYPES[i])) return TYPES[i];
    return null;
  }
  function why() {
    if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
      return window.isSecureContext === false
        ? "Recording a check needs the camera, which browsers only give to a page served over HTTPS."
        : "Recording a check needs the camera, and this browser gives no page access to one.";
    }
    if (typeof window.MediaRecorder !== "function") return "Recording a check needs a browser that can record video (MediaRecorder); this one cannot.";
    if (mimeType() === null) return "Recording a check needs a browser that can record WebM or MP4 video; this one cannot.";
    return "";
  }

  section.hidden = false;
  var reason = why();
  if (reason) {  // the feature is not offered; the upload above works as before
    openBtn.hidden = true;
    unavailable.textContent = reason;
    unavailable.hidden = false;
    section.dataset.state = "unavailable";
    return;
  }
  section.dataset.state = "idle";

  function fail(text) {
    stop();
    errorEl.textContent = text;
    errorEl.hidden = false;
    section.dataset.state = "error";
    openBtn.focus();
  }
  function cameraError(e) {
    var name = e && e.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return "The camera was refused: allow this page to use the camera (in the browser's address bar), then try again.";
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return "No camera was found: connect one, then try again.";
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return "The camera could not be started: close any other program that uses it, then try again.";
    }
    return "The camera could not be opened" + (e && e.message ? " (" + e.message + ")" : "") + ": try again.";
  }

  /* Ends whatever runs: the countdown, the recorder (its data thrown away unless `keep`), the camera. */
  function stop(keep) {
    cancelled = !keep;
    if (timer) { clearInterval(timer); timer = null; }
    if (recorder && recorder.state !== "inactive") recorder.stop();
    if (!keep) recorder = null;
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); stream = null; }
    preview.srcObject = null;
    panel.hidden = true;
    countdown.textContent = "";
    openBtn.disabled = false;
    startBtn.disabled = false;
  }

  function open() {
    errorEl.hidden = true;
    openBtn.disabled = true;
    section.dataset.state = "opening";
    page.setStatus("Opening the camera…", "busy");
    navigator.mediaDevices.getUserMedia({ audio: false, video: {
      width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 25 }, facingMode: "user" } })
      .then(function (s) {
        stream = s;
        s.getVideoTracks().forEach(function (t) {
          t.addEventListener("ended", function () {
            if (stream) { page.setStatus("", ""); fail("The camera stopped: try again."); }
          });
        });
        preview.srcObject = s;
        panel.hidden = false;
        section.dataset.state = "ready";
        page.setStatus("The camera is on. " + document.getElementById("record-instructions").textContent +
                       " Press Start recording when you are ready.", "");
        startBtn.focus();
      })
      .catch(function (e) { page.setStatus("", ""); fail(cameraError(e)); });
  }

  function start() {
    if (!stream) return;
    var type = mimeType();
    var chunks = [];
    try {
      recorder = new MediaRecorder(stream, type ? { mimeType: type, videoBitsPerSecond: 2000000 } : {});
    } catch (e) {
      fail("This browser could not record from the camera" + (e && e.message ? " (" + e.message + ")" : "") + ".");
      return;
    }
    cancelled = false;
    recorder.ondataavailable = function (e) { if (e.data && e.data.size) chunks.push(e.data); };
    recorder.onerror = function (e) { fail("The recording failed" + (e && e.error ? " (" + e.error.name + ")" : "") + ": try again."); };
    recorder.onstop = function () {
      var rec = recorder;
      recorder = null;
      if (cancelled) return;
      var kind = ((rec && rec.mimeType) || type || "video/webm").split(";")[0];
      var blob = new Blob(chunks, { type: kind });
      stop(false);
      if (!blob.size) { fail("The recording came out empty: try again."); return; }
      section.dataset.state = "sent";
      var file = new File([blob], "check." + (kind === "video/mp4" ? "mp4" : "webm"), { type: kind });
      page.upload(file, { recorded: true, label: "your " + SECONDS + "-second recording", again: again });
    };
    recorder.start(1000);
    cancelBtn.focus();  // the start button is off while recording: the focus stays in the panel
    startBtn.disabled = true;
    section.dataset.state = "recording";
    var left = SECONDS;
    function tick() {
      countdown.textContent = String(left);
      page.setStatus("Recording: " + left + " s left. Pass your hand slowly in front of your face.", "busy");
    }
    tick();
    timer = setInterval(function () {
      left -= 1;
      if (left > 0) { tick(); return; }
      clearInterval(timer); timer = null;
      countdown.textContent = "";
      page.setStatus("Recording done. Sending it…", "busy");
      stop(true);
    }, 1000);
  }

  function cancel() {
    stop(false);
    section.dataset.state = "idle";
    page.setStatus("Recording cancelled.", "");
    openBtn.focus();
  }
  function again() {
    page.clearOutcome();
    section.scrollIntoView({ block: "nearest" });
    open();
  }

  openBtn.addEventListener("click", open);
  startBtn.addEventListener("click", start);
  cancelBtn.addEventListener("click", cancel);
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && !panel.hidden) { e.preventDefault(); cancel(); }
  });
  window.addEventListener("pagehide", function () { stop(false); });
})();
