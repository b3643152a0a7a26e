// The login page: ask sscard helper to sign this login's challenge with the card, then follow the login's status
// and continue to the portal. Any authenticator can complete the login; the page only watches and continues.
"use strict";
(function () {
  const main = document.getElementById("main");
  const loginId = main.dataset.login;
  const helper = main.dataset.helper;
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const status = document.getElementById("status");
  const button = document.getElementById("card-button");
  const base = "/login/" + encodeURIComponent(loginId);
  let finished = false;

  function say(text) { status.textContent = text; }

  async function poll() {
    while (!finished) {
      let answer;
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
      await new Promise(function (resolve) { setTimeout(resolve, 1000); });
    }
  }

  async function signWithCard() {
    button.disabled = true;
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
      button.disabled = false;
    }
  }

  if (button) { button.addEventListener("click", signWithCard); }
  poll();
})();
