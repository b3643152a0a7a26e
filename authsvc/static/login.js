// The login page. It follows the login's status and shows the methods the assurance policy offers now (card through
// sscard helper, the e-card app by QR code, a face check with the liveness vendor); after each completed method the
// server says what is still missing. Once the level is reached it continues to the portal by itself.
"use strict";
(function () {
  const main = document.getElementById("main");
  const loginId = main.dataset.login;
  const helper = main.dataset.helper;
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const status = document.getElementById("status");
  const base = "/login/" + encodeURIComponent(loginId);
  const sections = {
    card: document.getElementById("method-card"),
    ecard: document.getElementById("method-ecard"),
    face: document.getElementById("method-face"),
  };
  const cardButton = document.getElementById("card-button");
  const faceButton = document.getElementById("face-button");
  let finished = false;
  let lastFailure = "";
  let lastFace = "";
  let reached = null;
  let ecardTimer = null;

  function say(text) { status.textContent = text; }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  // The QR codes come as SVG markup from this origin (CSP allows no data: images and no inline script).
  function showQr(id, svg) {
    const box = document.getElementById(id);
    const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    box.replaceChildren(document.importNode(doc.documentElement, true));
  }

  function showLink(id, href) {
    const link = document.getElementById(id);
    link.href = href;
    link.hidden = false;
  }

  async function refreshEcardQr() {
    clearTimeout(ecardTimer);
    if (finished || sections.ecard.hidden) { return; }
    let wait = 5;
    try {
      const response = await fetch(base + "/ecard", { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const answer = await response.json();
        showQr("ecard-qr", answer.qr_svg);
        showLink("ecard-link", answer.url);
        wait = Math.max(5, answer.expires_in - 5);
      }
    } catch (e) { /* retried below */ }
    ecardTimer = setTimeout(refreshEcardQr, wait * 1000);
  }

  function offer(missing) {
    for (const name of Object.keys(sections)) {
      const wasHidden = sections[name].hidden;
      sections[name].hidden = missing.indexOf(name) < 0;
      if (name === "ecard" && wasHidden && !sections[name].hidden) { refreshEcardQr(); }
    }
    // A pending login's `missing` lists only the methods this deployment offers: empty, the level needs one it
    // lacks (an empty list never means "nothing missing": the status is "done" then).
    document.getElementById("unavailable").hidden = missing.some(function (m) { return m in sections; });
  }

  function follow(answer) {
    if (answer.missing) { offer(answer.missing); }
    if (answer.reached && answer.reached !== reached) {
      reached = answer.reached;
      say(messages.more);
    }
    const face = answer.face ? answer.face.state : "";
    if (face !== lastFace) {
      lastFace = face;
      if (face === "waiting") { say(messages.face_waiting); }
      if (face === "failed") { say(messages.face_failed); faceButton.disabled = false; }
      if (face === "timed_out") { say(messages.face_timed_out); faceButton.disabled = false; }
    }
    const failure = answer.last_failure ? JSON.stringify(answer.last_failure) : "";
    if (failure && failure !== lastFailure) {
      lastFailure = failure;
      say(messages.failed + answer.last_failure.reason);
      // A refused e-card approval spent the code the app scanned: show a fresh one at once, not at its expiry.
      refreshEcardQr();
    }
  }

  async function poll() {
    while (!finished) {
      let answer = null;
      try {
        const response = await fetch(base + "/status", { credentials: "same-origin", cache: "no-store" });
        if (response.status === 404) { say(messages.expired); finished = true; break; }
        answer = await response.json();
      } catch (e) { answer = null; }
      if (answer && answer.status === "done") {
        finished = true;
        say(messages.done);
        window.location.assign(base + "/continue");
        break;
      }
      if (answer) { follow(answer); }
      await sleep(1000);
    }
  }

  async function signWithCard() {
    cardButton.disabled = true;
    say(messages.contacting);
    try {
      const response = await fetch(helper + "/sign", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ login: loginId }),
        credentials: "omit",
      });
      const answer = await response.json();
      if (answer.status === "ok") { say(messages.waiting); }
      else { say(messages.failed + (answer.message || answer.error || response.status)); }
    } catch (e) {
      say(messages.no_helper);
    } finally {
      cardButton.disabled = false;
    }
  }

  async function startFace() {
    faceButton.disabled = true;
    try {
      const response = await fetch(base + "/face", { method: "POST", credentials: "same-origin", cache: "no-store" });
      const answer = await response.json();
      if (!response.ok) {
        say(messages.face_error + " (" + (answer.reason || response.status) + ")");
        faceButton.disabled = false;
        return;
      }
      showQr("face-qr", answer.qr_svg);
      showLink("face-link", answer.capture_url);
      lastFace = "waiting";
      say(messages.face_waiting);
    } catch (e) {
      say(messages.face_error);
      faceButton.disabled = false;
    }
  }

  cardButton.addEventListener("click", signWithCard);
  faceButton.addEventListener("click", startFace);
  if (!sections.ecard.hidden) { refreshEcardQr(); }
  poll();
})();
