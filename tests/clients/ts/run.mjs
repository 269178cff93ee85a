// Runs the compiled typed call (build/call.js, from call.ts) against a running server.
// Env: BASE_URL, TOKEN, PARENT_ID. Prints one JSON line for the Python test.
import {
  ApiError,
  createChild,
  example,
  openChildIds,
  splitExample,
  updateConversation,
} from "./build/call.js";

const { BASE_URL, TOKEN, PARENT_ID } = process.env;
const summary = await example(BASE_URL, TOKEN, PARENT_ID);
let refusal = null;
try {
  await createChild(BASE_URL, TOKEN, "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70", { subject: "x" });
} catch (error) {
  if (!(error instanceof ApiError)) throw error;
  refusal = { status: error.status, code: error.body.code };
}
let blocked = null;
try {
  await updateConversation(BASE_URL, TOKEN, PARENT_ID, { status: "resolved" });
} catch (error) {
  if (!(error instanceof ApiError)) throw error;
  blocked = { status: error.status, code: error.body.code, open: openChildIds(error.body) };
}
const parent = await updateConversation(BASE_URL, TOKEN, PARENT_ID, { status: "resolved" }, "resolve");
const resolved = `${parent.status} v${parent.version}`;
// Split last: its two children reopen the resolved parent.
const split = await splitExample(BASE_URL, TOKEN, PARENT_ID);
process.stdout.write(JSON.stringify({ summary, refusal, blocked, resolved, split }) + "\n");
