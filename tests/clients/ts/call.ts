// Typed calls of createChildConversation and createChildConversationsBatch with the types
// openapi-typescript generates from openapi.json. `tsc --noEmit` must accept it, and must refuse each line under an
// expect-error directive at the end: the generated types really constrain callers.
import type { components, operations, paths } from "./generated/schema";

type CreateChild = operations["createChildConversation"];
type ChildPath = paths["/api/v2/conversations/{conversation_id}/children"];
type Body = CreateChild["requestBody"]["content"]["application/json"];
type Child = CreateChild["responses"][201]["content"]["application/json"];
type ErrorBody = components["schemas"]["ErrorBody"];
type Conflict = CreateChild["responses"][409]["content"]["application/json"];
type CreateBatch = operations["createChildConversationsBatch"];
type BatchBody = CreateBatch["requestBody"]["content"]["application/json"];
type Batch = CreateBatch["responses"][201]["content"]["application/json"];
type Update = operations["updateConversation"];
type Patch = Update["requestBody"]["content"]["application/json"];
type Updated = Update["responses"][200]["content"]["application/json"];
type ChildrenMode = NonNullable<NonNullable<Update["parameters"]["query"]>["children"]>;
type UpdateConflict = Update["responses"][409]["content"]["application/json"];

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(`${status} ${body.code}: ${body.detail}`);
  }
}

export async function createChild(
  baseUrl: string,
  token: string,
  parentId: ChildPath["post"]["parameters"]["path"]["conversation_id"],
  body: Body,
  idempotencyKey?: string,
): Promise<Child> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${token}`,
    "Content-Type": "application/json",
  };
  if (idempotencyKey !== undefined) headers["Idempotency-Key"] = idempotencyKey;
  const response = await fetch(
    `${baseUrl}/api/v2/conversations/${encodeURIComponent(parentId)}/children`,
    { method: "POST", headers, body: JSON.stringify(body) },
  );
  if (response.status !== 201) {
    throw new ApiError(response.status, (await response.json()) as ErrorBody);
  }
  return (await response.json()) as Child;
}

export async function updateConversation(
  baseUrl: string,
  token: string,
  conversationId: string,
  body: Patch,
  children?: ChildrenMode,
): Promise<Updated> {
  const query = children === undefined ? "" : `?children=${children}`;
  const response = await fetch(
    `${baseUrl}/api/v2/conversations/${encodeURIComponent(conversationId)}${query}`,
    {
      method: "PATCH",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    },
  );
  if (response.status !== 200) {
    throw new ApiError(response.status, (await response.json()) as ErrorBody);
  }
  return (await response.json()) as Updated;
}

// The 409 of updateConversation is an ErrorBody or, for open_children, one that names them.
export function openChildIds(body: UpdateConflict): string[] {
  return "open_child_ids" in body ? body.open_child_ids : [];
}

export async function example(baseUrl: string, token: string, parentId: string): Promise<string> {
  const child = await createChild(baseUrl, token, parentId, { subject: "Refund the item" });
  const status: "new" | "open" | "pending" | "on_hold" | "resolved" | "closed" = child.status;
  const parent: string | null = child.parent_id;
  const version: number = child.version;
  const related: number = child.tab_counts.related;
  return `${child.id} ${status} ${parent ?? "-"} v${version} related=${related}`;
}

export async function createChildren(
  baseUrl: string,
  token: string,
  parentId: string,
  body: BatchBody,
  idempotencyKey?: string,
): Promise<Batch> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${token}`,
    "Content-Type": "application/json",
  };
  if (idempotencyKey !== undefined) headers["Idempotency-Key"] = idempotencyKey;
  const response = await fetch(
    `${baseUrl}/api/v2/conversations/${encodeURIComponent(parentId)}/children/batch`,
    { method: "POST", headers, body: JSON.stringify(body) },
  );
  if (response.status !== 201) {
    throw new ApiError(response.status, (await response.json()) as ErrorBody);
  }
  return (await response.json()) as Batch;
}

// A split into two children: one for another team that starts with an internal note, one
// with a higher priority; `null` clears an inherited field.
export async function splitExample(
  baseUrl: string,
  token: string,
  parentId: string,
): Promise<string> {
  const { items } = await createChildren(baseUrl, token, parentId, {
    children: [
      {
        subject: "Refund the item",
        assignee_team_id: "team_billing",
        assignee_user_id: null,
        message: {
          body: "Split off: Billing refunds it.",
          is_internal: true,
          content_type: "text/plain",
          metadata: {},
        },
      },
      { subject: "Replace the item", priority: "urgent", tags: ["replacement"] },
    ],
  });
  const [refund, replace] = items;
  if (refund === undefined || replace === undefined) throw new Error("two children expected");
  const note: boolean | undefined = refund.messages[0]?.is_internal;
  return `${items.length} ${refund.assignee_team_id} ${refund.assignee_user_id} ${note} ${replace.priority} ${replace.tags.join(",")}`;
}

export function isLimitReached(error: Conflict): boolean {
  return error.code === "children_limit_reached";
}

// The body is closed: fields a child does not inherit do not compile.
// @ts-expect-error status is not a field of ChildConversationCreate
export const unknownField: Body = { subject: "x", status: "open" };
// @ts-expect-error an override takes the documented values only
export const badPriority: Body = { subject: "x", priority: "extreme" };
// @ts-expect-error a batch is a list of child bodies
export const badBatch: BatchBody = { children: [{ priority: "low" }] };
// @ts-expect-error subject is required
export const noSubject: Body = {};
// @ts-expect-error status is one of the documented values
export const badStatus: Child["status"] = "archived";
// @ts-expect-error subject cannot be cleared by a patch
export const nullSubject: Patch = { subject: null };
// @ts-expect-error the cascade is asked for with "resolve" only
export const badMode: ChildrenMode = "all";
