// The login link's page: it sends the link's one-time token to the server (a POST, so
// nothing changes on a GET), which answers with the session cookie; then the chat page.
// The token is taken out of the address bar and history at once.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const say = (text) => { document.getElementById("login-state").textContent = text; };
  const token = new URLSearchParams(location.search).get("token");
  history.replaceState(null, "", HPC.root + "login");
  const already = await fetch(HPC.root + "v1/models", {credentials: "same-origin"});
  if (already.ok) {  // a session already (a second click on the link)
    location.replace(HPC.root);
    return;
  }
  if (!token) {
    say("This link has no token: use the link hpc-chat serve printed (the current one is " +
        "in $HPC_CHAT_HOME/server/login-url).");
    return;
  }
  const answer = await HPC.api("login", {method: "POST", body: JSON.stringify({token})});
  if (answer.ok) {
    location.replace(HPC.root);
    return;
  }
  let message = answer.statusText;
  try {
    message = (await answer.json()).error.message;
  } catch (e) { /* not JSON */ }
  say(`Not logged in: ${message}`);
});
