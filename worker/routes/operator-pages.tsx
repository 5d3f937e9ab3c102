import { Hono, type Context } from "hono";
import { z } from "zod";
import { lateBackups } from "../backups/maintenance";
import { fleetCheckStatus } from "../checks/alerts";
import { HOST_STATES } from "../db/schema";
import { badRequest, conflict, notFound } from "../errors";
import { actorsNamed, auditEntries, hostDetail, hostMoves, hostOverviews } from "../fleet/console";
import { cancelDrain, drainProgress, latestDrain, startDrain } from "../fleet/drains";
import { createJoinToken, REGIONS } from "../fleet/enrollment";
import { requireHost, revokeHost, setHostState, setUnencryptedPlacementOverride } from "../fleet/hosts";
import { DRAIN_CONCURRENCY, JOIN_TOKEN_DEFAULT_MINUTES, JOIN_TOKEN_MAX_MINUTES } from "../fleet/policy";
import type { AppEnv } from "../http/context";
import { submitForm, utcDateTime } from "../http/forms";
import { requireOperatorPage } from "../http/operator";
import { requireLogin, type SessionAppEnv } from "../http/session";
import { parseWith } from "../http/validation";
import {
  AlertsPage,
  AuditPage,
  CancelDrainPage,
  DrainHostPage,
  EMPTY_AUDIT_FILTER,
  HOSTS_PATH,
  HostPage,
  hostPath,
  HostsPage,
  JoinTokenCreatedPage,
  JoinTokenPage,
  MoveServerPage,
  RevokeHostPage,
  type AuditFilterValues,
  type HostFormValues,
  type JoinTokenFormValues,
} from "../pages/operator";
import { noticeFor, type NoticeKey } from "../pages/layout";
import { OPERATOR_SCRIPT } from "../pages/operator-script";
import { startMigration } from "../servers/migration";
import { currentStorageAlerts } from "../servers/storage-alerts";
import { legalExportPageRoutes } from "./legal-export-pages";

// The operator console (mounted at /operator): hosts, one host's homeservers, jobs and actions,
// join tokens, the audit log and alerts, and the legal-export pages. Every action runs the same
// service as /api/admin and redirects (303), or shows its page again with the reason. Nobody
// logged in gets the log-in page; anyone but an operator, the page of an address with nothing at it.

type OperatorContext = Context<SessionAppEnv>;

/** Entries on one page of the audit log. */
const AUDIT_PAGE_SIZE = 50;

const reasonField = z.string().trim().max(500, "must be at most 500 characters");

const stateForm = z.object({
  state: z.enum(HOST_STATES, "choose active, draining or out of service"),
  reason: reasonField.refine((reason) => reason === "" || reason.length >= 3, "must be 3 to 500 characters, or empty"),
});
const overrideForm = z.object({
  allow: z.enum(["yes", "no"], "choose allowed or not allowed"),
  reason: reasonField.min(3, "must be 3 to 500 characters"),
});
const joinTokenForm = z.object({
  region: z.enum(REGIONS, `choose one of ${REGIONS.join(", ")}`),
  minutes: z.coerce.number().int().min(1).max(JOIN_TOKEN_MAX_MINUTES),
});

const toHost = (c: OperatorContext, notice: NoticeKey) => c.redirect(`${hostPath(c.req.param("id")!)}?notice=${notice}`, 303);

async function renderHost(c: OperatorContext, state: { notice?: string | undefined; error?: string; values?: HostFormValues } = {}) {
  const { ctx } = c.var;
  const detail = await hostDetail(ctx.db, ctx.config, c.req.param("id")!, ctx.now);
  return <HostPage user={c.var.user} detail={detail} moves={await hostMoves(ctx, detail.overview.host)} now={ctx.now} {...state} />;
}

async function renderDrain(c: OperatorContext, error?: string) {
  const { ctx } = c.var;
  const detail = await hostDetail(ctx.db, ctx.config, c.req.param("id")!, ctx.now);
  return <DrainHostPage user={c.var.user} detail={detail} concurrency={DRAIN_CONCURRENCY} error={error} />;
}

async function renderCancelDrain(c: OperatorContext, error?: string) {
  const { ctx } = c.var;
  const host = await requireHost(ctx.db, c.req.param("id")!);
  const drain = await latestDrain(ctx, host.id);
  if (!drain || drain.finishedAt || drain.cancelledAt) throw notFound("This host has no drain under way to cancel.");
  return <CancelDrainPage user={c.var.user} host={host} moving={(await drainProgress(ctx, drain)).counts.moving} error={error} />;
}

const moveForm = z.object({ server: z.string().min(1).max(64), target: z.string().min(1).max(64) });

/** What a move is about: a homeserver of the page's host and an existing target host (404 otherwise). */
async function moveSubject(c: OperatorContext, fields: Record<string, string | undefined>) {
  const { ctx } = c.var;
  const { server: serverId, target: targetId } = parseWith(moveForm, fields);
  const detail = await hostDetail(ctx.db, ctx.config, c.req.param("id")!, ctx.now);
  const found = detail.homeservers.find(({ server }) => server.id === serverId);
  if (!found) throw notFound("No such homeserver on this host.");
  return { source: detail.overview.host, target: await requireHost(ctx.db, targetId), ...found };
}

async function renderMove(c: OperatorContext, fields: Record<string, string | undefined>, error?: string) {
  return <MoveServerPage user={c.var.user} {...(await moveSubject(c, fields))} error={error} />;
}

async function renderRevoke(c: OperatorContext, state: { error?: string; typed?: string | undefined } = {}) {
  const { ctx } = c.var;
  return <RevokeHostPage user={c.var.user} detail={await hostDetail(ctx.db, ctx.config, c.req.param("id")!, ctx.now)} {...state} />;
}

const joinTokenPage = (c: OperatorContext, values: JoinTokenFormValues, error?: string) => (
  <JoinTokenPage user={c.var.user} regions={REGIONS} maxMinutes={JOIN_TOKEN_MAX_MINUTES} values={values} error={error} />
);

/** The audit log page for the query's filters: a filter that cannot be read is shown back with the reason (400). */
async function renderAudit(c: OperatorContext) {
  const query = c.req.query();
  const values: AuditFilterValues = { ...EMPTY_AUDIT_FILTER };
  for (const name of Object.keys(values) as Array<keyof AuditFilterValues>) values[name] = (query[name] ?? "").trim().slice(0, 320);
  const problems: string[] = [];
  const from = utcDateTime(values.from, "From", problems);
  const until = utcDateTime(values.until, "Until", problems);
  const before = query.before === undefined ? undefined : z.coerce.number().int().min(1).safeParse(query.before);
  if (before && !before.success) problems.push("That page of the log does not exist: start from the newest entries.");
  const page = (props: { entries: Awaited<ReturnType<typeof auditEntries>>; olderBefore: number | undefined; error?: string }) => (
    <AuditPage user={c.var.user} values={values} paged={before?.success === true} {...props} />
  );
  if (problems.length > 0) return c.html(page({ entries: [], olderBefore: undefined, error: problems.join(" ") }), 400);
  const { db } = c.var.ctx;
  const entries = await auditEntries(db, {
    // One more than shown tells whether there is an older page.
    limit: AUDIT_PAGE_SIZE + 1,
    actors: values.actor === "" ? undefined : await actorsNamed(db, values.actor),
    action: values.action || undefined,
    target: values.target || undefined,
    from: from === undefined ? undefined : new Date(from),
    until: until === undefined ? undefined : new Date(until),
    beforeId: before?.data,
  });
  const shown = entries.slice(0, AUDIT_PAGE_SIZE);
  return c.html(page({ entries: shown, olderBefore: entries.length > AUDIT_PAGE_SIZE ? shown.at(-1)!.id : undefined }));
}

const hostRoutes = new Hono<SessionAppEnv>()
  .get("/", async (c) => {
    const { ctx } = c.var;
    const [hosts, checks] = await Promise.all([hostOverviews(ctx.db, ctx.now), fleetCheckStatus(ctx.db)]);
    return c.html(<HostsPage user={c.var.user} hosts={hosts} checks={checks} domain={ctx.config.homeservers.domain} />);
  })
  .get("/:id", async (c) => c.html(await renderHost(c, { notice: noticeFor(c.req.query("notice")) })))
  .post("/:id/state", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { state, reason } = parseWith(stateForm, fields);
        await setHostState(c.var.ctx.db, c.var.user.id, c.req.param("id"), state, reason || undefined, c.var.ctx.now);
        return toHost(c, "host_state_changed");
      },
      (error, fields) => renderHost(c, { error, values: { state: fields.state, reason: fields.reason } }),
    ),
  )
  .post("/:id/unencrypted-placement", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { allow, reason } = parseWith(overrideForm, fields);
        await setUnencryptedPlacementOverride(c.var.ctx.db, c.var.user.id, c.req.param("id"), allow === "yes", reason, c.var.ctx.now);
        return toHost(c, allow === "yes" ? "host_override_allowed" : "host_override_withdrawn");
      },
      (error, fields) => renderHost(c, { error, values: { allow: fields.allow, overrideReason: fields.reason } }),
    ),
  )
  .get("/:id/drain", async (c) => c.html(await renderDrain(c)))
  // The confirmation page's button sends confirm=drain: a bare POST starts nothing.
  .post("/:id/drain", (c) =>
    submitForm(
      c,
      async (fields) => {
        if (fields.confirm !== "drain") throw badRequest("confirmation_required", "Confirm the drain on this page to start it.");
        await startDrain(c.var.ctx, c.var.user.id, c.req.param("id"));
        return toHost(c, "host_drain_started");
      },
      (error) => renderDrain(c, error),
    ),
  )
  .get("/:id/drain/cancel", async (c) => c.html(await renderCancelDrain(c)))
  // As a drain: only the confirmation page's button (confirm=cancel) cancels it.
  .post("/:id/drain/cancel", (c) =>
    submitForm(
      c,
      async (fields) => {
        if (fields.confirm !== "cancel") throw badRequest("confirmation_required", "Confirm on this page to cancel the drain.");
        await cancelDrain(c.var.ctx, c.var.user.id, c.req.param("id"));
        return toHost(c, "host_drain_cancelled");
      },
      (error) => renderCancelDrain(c, error),
    ),
  )
  .get("/:id/move", async (c) => c.html(await renderMove(c, c.req.query())))
  // As a drain: only the confirmation page's button (confirm=move) starts the move; a refusal is shown there, nothing started.
  .post("/:id/move", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { server, target } = await moveSubject(c, fields);
        if (fields.confirm !== "move") throw badRequest("confirmation_required", "Confirm the move on this page to start it.");
        await startMigration(c.var.ctx, { serverId: server.id, targetHostId: target.id, actor: `user:${c.var.user.id}` });
        return toHost(c, "migration_started");
      },
      (error, fields) => renderMove(c, fields, error),
    ),
  )
  .get("/:id/revoke", async (c) => c.html(await renderRevoke(c)))
  // Revocation is final: the operator types the host's name, as the page asks.
  .post("/:id/revoke", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { ctx } = c.var;
        const host = await requireHost(ctx.db, c.req.param("id"));
        if (host.status === "revoked") throw conflict("already_revoked", `${host.name} is already revoked.`);
        if ((fields.confirm ?? "").trim() !== host.name) throw badRequest("confirmation_required", `Type the host's name, ${host.name}, to revoke it.`);
        await revokeHost(ctx.db, ctx.env, c.var.user.id, host.id, ctx.now);
        return toHost(c, "host_revoked");
      },
      (error, fields) => renderRevoke(c, { error, typed: fields.confirm }),
    ),
  );

const operatorRoutes = new Hono<SessionAppEnv>()
  .get("/", (c) => c.redirect(HOSTS_PATH, 303))
  .route("/hosts", hostRoutes)
  .get("/join-tokens", (c) => c.html(joinTokenPage(c, { region: REGIONS[0], minutes: String(JOIN_TOKEN_DEFAULT_MINUTES) })))
  // The token is in this answer only (never in a URL, and only its hash is stored): no redirect to show it.
  .post("/join-tokens", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { region, minutes } = parseWith(joinTokenForm, fields);
        const { ctx } = c.var;
        const created = await createJoinToken(ctx.db, c.var.user.id, region, minutes, ctx.now);
        const enrollCommand = `BERTH_AGENT_JOIN_TOKEN='${created.token}' berth-agent enroll --url ${ctx.link("")}`;
        return c.html(
          <JoinTokenCreatedPage user={c.var.user} token={created.token} region={region} expiresAt={created.expiresAt} enrollCommand={enrollCommand} />,
        );
      },
      (error, fields) => joinTokenPage(c, { region: fields.region ?? "", minutes: fields.minutes ?? "" }, error),
    ),
  )
  .get("/audit", renderAudit)
  .get("/alerts", async (c) => {
    const { ctx } = c.var;
    const [late, storage] = await Promise.all([lateBackups(ctx.db, ctx.now), currentStorageAlerts(ctx.db, ctx.now)]);
    return c.html(<AlertsPage user={c.var.user} late={late} storage={storage} domain={ctx.config.homeservers.domain} />);
  })
  .route("/legal-exports", legalExportPageRoutes);

export const operatorPageRoutes = new Hono<AppEnv>()
  .get("/assets/operator.js", (c) => {
    c.header("Cache-Control", "public, max-age=3600");
    return c.body(OPERATOR_SCRIPT, 200, { "Content-Type": "text/javascript; charset=utf-8" });
  })
  .route("/operator", new Hono<AppEnv>().use(requireLogin).use(requireOperatorPage).route("/", operatorRoutes));
