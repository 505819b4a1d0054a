// The built-in web client in headless Chromium: two users in two browser contexts chat both
// ways, one drops offline and gets the missed messages on return, an image upload shows for the
// other, a hostile display name stays text. Screenshots at phone and desktop sizes.
//
//   node tests/browser/client.mjs <chat base url> <screenshot dir>
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
const hostile = "<img src=x onerror=alert(1)>";

function check(cond, what) { if (!cond) throw new Error("check failed: " + what); console.log("ok - " + what); }

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const dialogs = [];
async function newUser(viewport, username, displayName) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // The UI asks with prompt() to edit and confirm() to delete; an alert() would mean script from
  // user content ran.
  page.on("dialog", async (d) => {
    if (d.type() === "prompt") return d.accept("edited by its author");
    if (d.type() === "confirm") return d.accept();
    dialogs.push(d.message());
    await d.dismiss();
  });
  page.on("pageerror", (e) => console.log("page error: " + e.message));
  await page.goto(base + "/");
  await page.click("#signup-btn");
  await page.fill("#auth-user", username);
  await page.fill("#auth-pass", "password123");
  await page.fill("#auth-name", displayName);
  await page.click("#signup-btn");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("#conn.online");
  return { context, page };
}
async function messages(page) { return page.$$eval("#messages li .body", (b) => b.map((x) => x.textContent)); }

try {
  const alice = await newUser({ width: 1280, height: 800 }, "alice", hostile);
  const bob = await newUser({ width: 1280, height: 800 }, "bob", "Bob");
  check(true, "two users signed up in two browser contexts");
  const firstToken = await bob.page.evaluate(() => window.rookery.session.access_token);

  // Alice finds Bob and starts a direct conversation.
  await alice.page.fill("#find-q", "bob");
  await alice.page.click("#found li");
  await alice.page.waitForSelector("#composer:not([hidden])");
  await alice.page.fill("#text", "hi bob");
  await alice.page.press("#text", "Enter");
  await alice.page.waitForSelector("#messages li.own:not(.pending)");
  check(true, "alice's message was acked (optimistic display reconciled)");

  // Bob sees the conversation, opens it, replies.
  await bob.page.waitForSelector("#convs li");
  const title = await bob.page.textContent("#convs li .title");
  check(title.includes(hostile), "a markup display name is shown as text in the list");
  await bob.page.click("#convs li");
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#messages li .body")].some((b) => b.textContent === "hi bob"));
  check(true, "bob got alice's message");
  await bob.page.fill("#text", "hello alice");
  await bob.page.press("#text", "Enter");
  await alice.page.waitForFunction(() => [...document.querySelectorAll("#messages li .body")].some((b) => b.textContent === "hello alice"));
  check(true, "alice got bob's reply");
  await alice.page.waitForFunction(() => /Seen by/.test(document.querySelector("#seen").textContent), null, { timeout: 10000 });
  check(true, "alice sees that bob read her message");

  // Bob drops offline; alice sends two messages; bob comes back and gets both, once each.
  // (The client's own disconnect: Chromium's offline emulation can hold the close handshake for
  // tens of seconds on a loaded machine.)
  await bob.page.evaluate(() => window.rookery.disconnect());
  await bob.page.waitForSelector("#conn.offline, #conn.connecting");
  check(true, "bob's page shows the connection is down");
  await alice.page.fill("#text", "while you were away 1");
  await alice.page.press("#text", "Enter");
  await alice.page.fill("#text", "while you were away 2");
  await alice.page.press("#text", "Enter");
  await alice.page.waitForFunction(() => document.querySelectorAll("#messages li.own:not(.pending)").length >= 3);
  await bob.page.evaluate(() => window.rookery.connect());
  await bob.page.waitForSelector("#conn.online", { timeout: 30000 });
  await bob.page.waitForFunction(() => {
    const b = [...document.querySelectorAll("#messages li .body")].map((x) => x.textContent);
    return b.includes("while you were away 1") && b.includes("while you were away 2");
  }, null, { timeout: 15000 });
  const got = await messages(bob.page);
  check(got.filter((b) => b.startsWith("while you were away")).length === 2, "bob got the missed messages, once each, after reconnecting");

  // An image upload shows for the other user.
  await alice.page.setInputFiles("#file", { name: "dot.png", mimeType: "image/png", buffer: PNG });
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#messages img")].some((i) => i.complete && i.naturalWidth > 0), null, { timeout: 15000 });
  check(true, "alice's image shows for bob");

  // Typing shows on the other side.
  // (the page sends `typing` at most every 3 s, so keep typing until it shows).
  let seenTyping = false;
  for (let i = 0; i < 12 && !seenTyping; i++) {
    await alice.page.type("#text", "x");
    seenTyping = await bob.page.waitForFunction(() => /typing/.test(document.querySelector("#typing").textContent), null, { timeout: 1000 }).then(() => true, () => false);
  }
  check(seenTyping, "bob sees alice typing");
  await alice.page.fill("#text", "");

  // Edit and delete one's own message; the other side follows.
  await alice.page.click("#messages li.own:first-child button[aria-label='Edit message']");
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#messages li .body")].some((b) => b.textContent === "edited by its author"));
  check(true, "an edit reaches the other user");
  await alice.page.click("#messages li.own:first-child button[aria-label='Delete message']");
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#messages li .body")].some((b) => b.textContent === "(deleted)"));
  check(true, "a delete reaches the other user");

  // A group: create, add bob, bob sees it, remove bob.
  await alice.page.fill("#group-title", "Team");
  await alice.page.click("#new-group button");
  await alice.page.waitForFunction(() => document.querySelector("#chat-title").textContent === "Team");
  await alice.page.fill("#add-q", "bob");
  await alice.page.click("#add-member button");
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#convs li .title")].some((t) => t.textContent.includes("Team")));
  check(true, "a member added to a group sees it");
  await alice.page.click("#member-list button[aria-label='Remove Bob']");
  await bob.page.waitForFunction(() => ![...document.querySelectorAll("#convs li .title")].some((t) => t.textContent.includes("Team")));
  check(true, "a removed member no longer sees the group");

  // History loads on scroll: 60 more messages, then scroll to the top of the conversation.
  const conv = await bob.page.evaluate(() => document.querySelector("#convs li").dataset.conv);
  await alice.page.evaluate(async (conv) => {
    for (let i = 0; i < 60; i++) await window.rookery.api("POST", `/api/conversations/${conv}/messages`, { client_id: "bulk" + i, body: "bulk " + i });
  }, conv);
  await bob.page.reload();
  await bob.page.waitForSelector("#conn.online");
  await bob.page.click(`#convs li[data-conv="${conv}"]`);
  await bob.page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 50);
  const before = await bob.page.$$eval("#messages li", (l) => l.length);
  await bob.page.evaluate(() => { document.querySelector("#messages").scrollTop = 0; });
  await bob.page.waitForFunction((n) => document.querySelectorAll("#messages li").length > n, before, { timeout: 10000 });
  check(true, "older history loads when scrolling up");

  await alice.page.screenshot({ path: shots + "/client-desktop.png" });
  await bob.page.setViewportSize({ width: 390, height: 844 });
  await bob.page.screenshot({ path: shots + "/client-phone.png" });
  check(await bob.page.isVisible("#back"), "the phone layout shows one pane with a back button");
  check(dialogs.length === 0, "no script from user content ran");

  // The node runs with 4 s access tokens: the page refreshed them (and reconnected) on its own.
  const lastToken = await bob.page.evaluate(() => window.rookery.session.access_token);
  check(lastToken !== firstToken, "access tokens were refreshed before they expired");

  // Log out: back to the sign-in form, and the session is gone after a reload.
  await alice.page.click("#logout");
  await alice.page.waitForSelector("#auth:not([hidden])");
  await alice.page.reload();
  await alice.page.waitForSelector("#auth:not([hidden])");
  check(await alice.page.evaluate(() => window.rookery.session === null), "logged out");

  // Bob deletes his account: a wrong password is refused and shown; the right one signs him out
  // for good (logging in again fails).
  await bob.page.setViewportSize({ width: 1280, height: 800 });
  await bob.page.click("#delete-account");
  await bob.page.fill("#delete-pass", "wrong password");
  await bob.page.click("#delete-form button");
  await bob.page.waitForSelector("#delete-error:not(:empty)");
  check(/wrong password/.test(await bob.page.textContent("#delete-error")), "a wrong password does not delete the account");
  await bob.page.fill("#delete-pass", "password123");
  await bob.page.click("#delete-form button");
  await bob.page.waitForSelector("#auth:not([hidden])");
  await bob.page.fill("#auth-user", "bob");
  await bob.page.fill("#auth-pass", "password123");
  await bob.page.click("#login-btn");
  await bob.page.waitForSelector("#auth-error:not(:empty)");
  check(await bob.page.isVisible("#auth"), "a deleted account cannot log in again");
} finally {
  await browser.close();
}
