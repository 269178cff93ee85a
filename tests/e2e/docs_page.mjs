// Drives the /docs page as a person would: Authorize with a bearer token, open
// createChildConversation, "Try it out", fill the parent id and the body, Execute.
// Prints one JSON line for the Python test (tests/e2e/test_docs_page.py) to check.
//
// Env: BASE_URL, TOKEN, PARENT_ID, SUBJECT, SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const { BASE_URL, TOKEN, PARENT_ID, SUBJECT, SCREENSHOT_DIR } = process.env;
const TIMEOUT = 20_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright gives every launch a new, empty profile (--user-data-dir in a temp folder).
  // The rest keeps Chromium from calling home, which this network refuses anyway.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
// Per page: requests to anything but the service (refused), and console errors.
const result = { docs: { foreign: [], errors: [] }, redoc: { foreign: [], errors: [] } };
let current = result.docs;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // The page must work offline: anything not served by the service is recorded and refused.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(BASE_URL + "/") || url.startsWith("data:")) return route.continue();
    current.foreign.push(url);
    return route.abort();
  });
  page.on("console", (msg) => {
    if (msg.type() === "error") current.errors.push(msg.text());
  });

  await page.goto(`${BASE_URL}/docs`);
  result.title = (await page.locator(".swagger-ui .info .title").textContent()).trim();

  // Authorize → paste the token → Authorize → Close.
  await page.locator("button.authorize").first().click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.locator("input").first().fill(TOKEN);
  await dialog.locator("button.authorize").click();
  await dialog.locator("button.btn-done").click();

  // The operation, by its operationId: Swagger UI's block id is operations-<tag>-<id>.
  const op = page.locator("#operations-conversations-createChildConversation");
  await op.locator(".opblock-summary").click();
  await op.locator("button.try-out__btn").click();
  await op.locator('tr[data-param-name="conversation_id"] input').fill(PARENT_ID);
  await op.locator("textarea.body-param__text").fill(JSON.stringify({ subject: SUBJECT }));
  await op.locator("button.execute").click();

  const live = op.locator(".live-responses-table .response");
  await live.locator(".response-col_status").first().waitFor();
  result.status = Number((await live.locator(".response-col_status").first().textContent()).trim());
  const bodyText = await live.locator(".response-col_description pre.microlight").first().textContent();
  result.body = JSON.parse(bodyText);
  result.curl = await op.locator(".curl-command pre, .curl-command textarea").first().textContent();
  await live.first().scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${SCREENSHOT_DIR}/docs-child-created.png`, fullPage: false });

  // The lifecycle operations, each run from its own block on the new child.
  const runOperation = async (operationId, body) => {
    const block = page.locator(`#operations-conversations-${operationId}`);
    await block.locator(".opblock-summary").click();
    await block.locator("button.try-out__btn").click();
    await block.locator('tr[data-param-name="conversation_id"] input').fill(result.body.id);
    if (body !== undefined) {
      await block.locator("textarea.body-param__text").fill(JSON.stringify(body));
    }
    await block.locator("button.execute").click();
    const response = block.locator(".live-responses-table .response");
    await response.locator(".response-col_status").first().waitFor();
    const status = Number((await response.locator(".response-col_status").first().textContent()).trim());
    let parsed = null;
    if (status !== 204) {
      const text = await response.locator(".response-col_description pre.microlight").first().textContent();
      parsed = JSON.parse(text);
    }
    await block.locator(".opblock-summary").click();
    return { status, body: parsed };
  };
  result.lifecycle = {
    updateConversation: await runOperation("updateConversation", { status: "resolved" }),
    setConversationParent: await runOperation("setConversationParent", { parent_id: null }),
    listConversationActivities: await runOperation("listConversationActivities"),
    deleteConversation: await runOperation("deleteConversation"),
  };

  // The reference page renders from local assets as well.
  current = result.redoc;
  await page.goto(`${BASE_URL}/redoc`);
  result.redocHeading = (await page.locator("h1").first().textContent()).trim();
  await page.locator("h2", { hasText: "Create a child conversation" }).first().waitFor();
  await page.screenshot({ path: `${SCREENSHOT_DIR}/redoc.png` });
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
