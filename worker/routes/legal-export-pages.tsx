import { Hono } from "hono";
import { legalExportScope } from "../../protocol/jobs";
import type { WorkContext } from "../context";
import { badRequest, notFound } from "../errors";
import { submitForm, utcDateTime, type FormFields } from "../http/forms";
import type { SessionAppEnv } from "../http/session";
import { parseWith } from "../http/validation";
import { legalExportRequest, requestLegalExport } from "../legal/exports";
import { findLegalExport, findServerByIdOrName, legalExportAuditTrail, listLegalExports } from "../legal/pages-data";
import {
  ConfirmLegalExportPage,
  EMPTY_LEGAL_EXPORT_FORM,
  LegalExportPage,
  legalExportPath,
  LegalExportsPage,
  RequestLegalExportPage,
  type LegalExportFormValues,
  type ReviewedLegalExport,
} from "../pages/legal-exports";

// Legal-request exports as pages, for operators (mounted at /operator/legal-exports, behind the
// console's guard): the list, a request (form → confirmation → the same service as POST
// /api/admin/servers/:id/legal-exports), and one export with its audit trail.

const REQUESTED_NOTICE = "The export is requested: the homeserver's host makes it and encrypts it to your recipient.";

function formValues(fields: FormFields): LegalExportFormValues {
  const values = { ...EMPTY_LEGAL_EXPORT_FORM };
  for (const name of Object.keys(values) as Array<keyof LegalExportFormValues>) values[name] = fields[name] ?? "";
  return values;
}

const listed = (text: string) => text.split(/[\s,]+/).filter((item) => item !== "");

/** The form as a request, or one refusal naming everything that is wrong (the values are the operator's own, shown back to them). */
async function reviewForm(ctx: WorkContext, values: LegalExportFormValues): Promise<ReviewedLegalExport> {
  const problems: string[] = [];
  const serverText = values.server.trim();
  const server = serverText === "" ? undefined : await findServerByIdOrName(ctx.db, ctx.config, serverText);
  if (serverText === "") problems.push("Name the homeserver.");
  else if (!server) problems.push(`No homeserver has the id or name “${serverText}”.`);
  const reference = values.reference.trim();
  if (reference === "" || reference.length > 200) problems.push("Give the legal request's reference (up to 200 characters).");

  const users = listed(values.users);
  const rooms = listed(values.rooms);
  const from = utcDateTime(values.from, "From", problems);
  const until = utcDateTime(values.until, "Until", problems);
  if (values.content !== "yes" && values.content !== "no") problems.push("Choose whether the export holds content.");
  const scope = legalExportScope.safeParse({ users, rooms, from, until, content: values.content === "yes" });
  for (const issue of scope.error?.issues ?? []) {
    const [list, index] = issue.path;
    if (list === "users" && typeof index === "number") problems.push(`“${users[index]}” is not a Matrix user id (@name:server).`);
    else if (list === "rooms" && typeof index === "number") problems.push(`“${rooms[index]}” is not a Matrix room id (!id:server).`);
    else if (list === "users" || list === "rooms") problems.push(`List at most 100 ${list}.`);
    else if (list === "from" || list === "until") problems.push(`${list === "from" ? "From" : "Until"} must be after 1970.`);
    else problems.push("From must come before until.");
  }

  const recipient = values.recipient.trim();
  if (!legalExportRequest.shape.recipient.safeParse(recipient).success) problems.push("The recipient must be an age X25519 recipient (age1…).");
  const reason = values.reason.trim();
  if (values.notice !== "given" && values.notice !== "barred") problems.push("Say whether notice is given or legally barred.");
  if (values.notice === "barred" && (reason.length < 3 || reason.length > 500))
    problems.push("Give the legal ground for barring notice (3 to 500 characters).");
  if (values.notice === "given" && reason !== "")
    problems.push("A reason is recorded only when notice is barred: choose “notice is legally barred” or leave the reason empty.");

  if (problems.length > 0 || !server || !scope.success) throw badRequest("validation_failed", problems.join(" "));
  const request = parseWith(legalExportRequest, {
    reference,
    scope: scope.data,
    recipient,
    ...(values.notice === "barred" ? { noticeBarred: { reason } } : {}),
  });
  return { server, reference: request.reference, scope: request.scope, recipient: request.recipient, noticeBarredReason: request.noticeBarred?.reason ?? null };
}

export const legalExportPageRoutes = new Hono<SessionAppEnv>()
  .get("/", async (c) => c.html(<LegalExportsPage user={c.var.user} exports={await listLegalExports(c.var.ctx.db, c.var.ctx.config)} />))
  // `?server=` fills the homeserver in, for links from a server's operator view.
  .get("/new", (c) => c.html(<RequestLegalExportPage user={c.var.user} values={{ ...EMPTY_LEGAL_EXPORT_FORM, server: c.req.query("server") ?? "" }} />))
  // One form, three steps by the button pressed: review (the confirmation page), edit (the form again), request.
  .post("/", (c) =>
    submitForm(
      c,
      async (fields) => {
        const values = formValues(fields);
        if (fields.step === "edit") return c.html(<RequestLegalExportPage user={c.var.user} values={values} />);
        const request = await reviewForm(c.var.ctx, values);
        if (fields.step !== "request") return c.html(<ConfirmLegalExportPage user={c.var.user} values={values} request={request} />);
        const row = await requestLegalExport(c.var.ctx, c.var.user.id, request.server.id, {
          reference: request.reference,
          scope: request.scope,
          recipient: request.recipient,
          ...(request.noticeBarredReason === null ? {} : { noticeBarred: { reason: request.noticeBarredReason } }),
        });
        return c.redirect(`${legalExportPath(row.id)}?notice=requested`, 303);
      },
      (error, fields) => <RequestLegalExportPage user={c.var.user} values={formValues(fields)} error={error} />,
    ),
  )
  .get("/:id", async (c) => {
    const { ctx } = c.var;
    const found = await findLegalExport(ctx.db, ctx.config, c.req.param("id"));
    if (!found) throw notFound("No such legal export.");
    const audit = await legalExportAuditTrail(ctx.db, found.export);
    const notice = c.req.query("notice") === "requested" ? REQUESTED_NOTICE : undefined;
    return c.html(<LegalExportPage user={c.var.user} listed={found} audit={audit} notice={notice} />);
  });
