// The console in a real headless Chromium: sign in, watch the message counter move while
// traffic flows, ban a user and delete another from the page, read the audit log, and check that a hostile display
// name is shown as text. Run by node/tests/it/browser.rs, which starts the node and the traffic:
//
//   node tests/browser/console.mjs <admin base url> <admin token> <victim username> <screenshot path> <user to delete>
//
// Exits 0 when every check passes; prints what failed otherwise.
import { chromium } from "playwright-core";

const [base, token, victim, screenshot, doomed] = process.argv.slice(2);
const hostile = "<img src=x onerror=alert(1)>";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const dialogs = [];
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(base + "/");

  // A wrong token is refused; the right one signs in.
  await page.fill("#token", "not-the-token");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-error:not(:empty)");
  check(await page.isHidden("#app"), "a wrong token does not sign in");
  await page.fill("#token", token);
  await page.click("#signin-form button");
  await page.waitForSelector("#app:not([hidden])");
  check(true, "signed in with the admin token");

  // The received counter moves while the test client sends.
  await page.waitForSelector("#stat-received");
  const first = Number(await page.textContent("#stat-received"));
  await page.waitForFunction((n) => Number(document.querySelector("#stat-received").textContent) > n + 5, first, { timeout: 15000 });
  check(true, "the message counter moves with live traffic");
  await page.waitForTimeout(1500); // let the charts draw a few points
  await page.screenshot({ path: screenshot, fullPage: true });
  check(true, "screenshot of the overview saved to " + screenshot);

  // The hostile display name is shown as text, not markup.
  await page.click("nav button[data-tab=users]");
  await page.fill("#user-q", "");
  await page.click("#user-search button");
  await page.waitForSelector("#users tbody tr");
  const cells = await page.$$eval("#users tbody td", (tds) => tds.map((td) => td.textContent));
  check(cells.includes(hostile), "a display name of markup is rendered as text");
  check(await page.$("#users img") === null, "no element was created from user content");

  // Ban the victim from the page.
  await page.fill("#user-q", victim);
  await page.click("#user-search button");
  await page.waitForSelector(`#users button[data-user="${victim}"]`);
  await page.fill("#mod-reason", "spamming the lobby");
  await page.click(`#users button[data-user="${victim}"]`);
  await page.waitForFunction(() => /Banned/.test(document.querySelector("#status").textContent), null, { timeout: 10000 });
  check(true, "the ban button reports success");
  // Wait for an overview refresh to land (the counter moves with the test's traffic), then
  // look again: the refresh must not have overwritten what the ban said.
  const seen = Number(await page.textContent("#stat-received"));
  await page.waitForFunction((n) => Number(document.querySelector("#stat-received").textContent) > n, seen, { timeout: 10000 });
  check(/Banned/.test(await page.textContent("#status")), "the refresh does not hide what the ban reported");
  check(await page.textContent("#live") === "live", "the refresh reports beside it");

  // Delete another account from the page: the first click only arms the button.
  await page.fill("#user-q", doomed);
  await page.click("#user-search button");
  await page.waitForSelector(`#users button[data-delete="${doomed}"]`);
  await page.fill("#mod-reason", "asked by mail");
  await page.click(`#users button[data-delete="${doomed}"]`);
  check(/again/.test(await page.textContent(`#users button[data-delete="${doomed}"]`)), "deleting asks for a second click");
  await page.click(`#users button[data-delete="${doomed}"]`);
  await page.waitForFunction(() => /Deleted/.test(document.querySelector("#status").textContent), null, { timeout: 10000 });
  await page.waitForFunction(() => !document.querySelector("#users tbody tr"), null, { timeout: 10000 });
  check(true, "the deleted account is gone from the user search");

  // The audit log shows the ban and the deletion.
  await page.click("nav button[data-tab=audit]");
  await page.waitForSelector("#audit tbody tr");
  const audit = await page.$$eval("#audit tbody tr", (trs) => trs.map((tr) => tr.textContent));
  check(audit.some((r) => r.includes("ban") && r.includes("spamming the lobby")), "the audit log has the ban with its reason");
  check(audit.some((r) => r.includes("delete_account") && r.includes("asked by mail")), "the audit log has the deletion");
  check(dialogs.length === 0, "no script from user content ran (no dialogs)");
} finally {
  await browser.close();
}
