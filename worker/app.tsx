import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { BACKUP_PART_SIZE } from "../protocol/messages";
import { isDevelopment } from "./config";
import { ApiError, notFound } from "./errors";
import { requestContext, type AppEnv } from "./http/context";
import { csrfProtection } from "./http/csrf";
import { errorAnswer, errorBody, errorResponse } from "./http/errors";
import { contentSecurityPolicyHeader, securityHeaders } from "./http/security-headers";
import { loadSession } from "./http/session";
import { MAX_BODY_BYTES } from "./http/validation";
import { accountRoutes } from "./routes/account";
import { adminRoutes } from "./routes/admin";
import { agentRoutes } from "./routes/agent";
import { serverRoutes } from "./routes/servers";
import { serverSettingsRoutes } from "./routes/server-settings";
import { serverCheckRoutes } from "./routes/server-checks";
import { serverSettingsPageRoutes } from "./routes/server-settings-pages";
import { serverDelegationPageRoutes } from "./routes/server-delegation-pages";
import { serverSecurityPageRoutes } from "./routes/server-security-pages";
import { serverExportPageRoutes } from "./routes/server-export-pages";
import { serverImportPageRoutes } from "./routes/server-import-pages";
import { serverUserRoutes } from "./routes/server-users";
import { serverRoomRoutes } from "./routes/server-rooms";
import { agentBackupRoutes, serverBackupRoutes } from "./routes/backups";
import { agentServerExportRoutes, serverExportRoutes } from "./routes/server-exports";
import { adminLegalExportRoutes, agentLegalExportRoutes } from "./routes/legal-exports";
import { authRoutes } from "./routes/auth";
import { billingRoutes } from "./routes/billing";
import { billingPageRoutes } from "./routes/billing-pages";
import { agentImportRoutes, serverImportRoutes } from "./routes/server-imports";
import { stripeWebhookRoutes } from "./routes/stripe-webhook";
import { devRoutes } from "./routes/dev";
import { pageRoutes } from "./routes/pages";
import { dashboardPageRoutes } from "./routes/dashboard-pages";
import { roomPageRoutes } from "./routes/room-pages";
import { homeserverPageRoutes } from "./routes/homeserver-pages";
import { operatorPageRoutes } from "./routes/operator-pages";
import { securityPageRoutes } from "./routes/security-pages";
import { MessagePage } from "./pages/auth";

function limitBody(maxSize: number) {
  return bodyLimit({
    maxSize,
    onError: () => {
      throw new ApiError(413, "payload_too_large", `The request body is over ${maxSize} bytes.`);
    },
  });
}

/** People get pages; programs (and everything under /api and /webhooks) get the JSON error shape. */
const wantsPage = (c: Context<AppEnv>) =>
  !c.req.path.startsWith("/api/") && !c.req.path.startsWith("/webhooks/") && (c.req.header("accept")?.includes("text/html") ?? false);

const ERROR_PAGE_TITLES: Partial<Record<string, string>> = {
  invalid_form: "The form could not be read",
  unsupported_media_type: "The form could not be read",
  csrf_rejected: "Not allowed",
  operator_only: "Not allowed",
  not_found: "Not found",
  payload_too_large: "Too much to send",
};

const bodyLimitForPeople = limitBody(MAX_BODY_BYTES);
// Stripe's events (an invoice with its lines) outgrow what we allow people.
const webhookBodyLimit = limitBody(512 * 1024);
// Backup, full export and legal export parts (and import parts, below); an agent's body is read only once its signature holds.
const agentBackupBodyLimit = limitBody(BACKUP_PART_SIZE);

// A part of an archive its owner uploads to import.
const IMPORT_PART_PATH = /^\/api\/servers\/[^/]+\/import\/parts\/[^/]+$/;

function bodyLimitFor(path: string) {
  if (path.startsWith("/webhooks/")) return webhookBodyLimit;
  if (["/api/agent/backups/", "/api/agent/exports/", "/api/agent/legal-exports/"].some((prefix) => path.startsWith(prefix))) return agentBackupBodyLimit;
  if (IMPORT_PART_PATH.test(path)) return agentBackupBodyLimit;
  return bodyLimitForPeople;
}

export const app = new Hono<AppEnv>()
  .use(securityHeaders)
  .use(async (c, next) => {
    await next();
    // Nothing we serve but static assets may be cached: responses carry account data.
    if (!c.res.headers.has("Cache-Control")) c.header("Cache-Control", "no-store");
  })
  .use(requestContext)
  .use(contentSecurityPolicyHeader)
  .use((c, next) => bodyLimitFor(c.req.path)(c, next))
  .use(csrfProtection)
  .use(loadSession)
  .get("/api/health", (c) => c.json({ status: "ok" }))
  .route("/api/auth", authRoutes)
  .route("/api/me", accountRoutes)
  .route("/api/billing", billingRoutes)
  .route("/api/servers", serverRoutes)
  .route("/api/servers", serverBackupRoutes)
  .route("/api/servers", serverExportRoutes)
  .route("/api/servers", serverImportRoutes)
  .route("/api/servers", serverUserRoutes)
  .route("/api/servers", serverRoomRoutes)
  .route("/api/servers", serverSettingsRoutes)
  .route("/api/servers", serverCheckRoutes)
  .route("/api/agent/backups", agentBackupRoutes)
  .route("/api/agent/exports", agentServerExportRoutes)
  .route("/api/agent/imports", agentImportRoutes)
  .route("/api/agent/legal-exports", agentLegalExportRoutes)
  .route("/api/agent", agentRoutes)
  .route("/api/admin/legal-exports", adminLegalExportRoutes)
  .route("/api/admin", adminRoutes)
  .route("/webhooks/stripe", stripeWebhookRoutes)
  .use("/dev/*", async (c, next) => {
    // The dev outbox and friends exist only in development; in production they are plain 404s.
    if (!isDevelopment(c.var.ctx.config)) throw notFound();
    await next();
  })
  .route("/dev", devRoutes)
  .route("/billing", billingPageRoutes)
  .route("/servers", roomPageRoutes)
  .route("/", dashboardPageRoutes)
  .route("/servers", serverSettingsPageRoutes)
  .route("/servers", serverSecurityPageRoutes)
  .route("/servers", serverDelegationPageRoutes)
  .route("/servers", serverExportPageRoutes)
  .route("/servers", serverImportPageRoutes)
  .route("/servers", homeserverPageRoutes)
  .route("/", operatorPageRoutes)
  .route("/security", securityPageRoutes)
  .route("/", pageRoutes)
  .notFound((c) =>
    wantsPage(c)
      ? c.html(<MessagePage title="Page not found" message="There is nothing at this address." viewer={c.var.auth?.user ?? null} status="error" />, 404)
      : c.json(errorBody("not_found", "Not found."), 404),
  )
  .onError((err, c) => {
    if (!wantsPage(c)) return errorResponse(c, err);
    const { status, code, message, headers } = errorAnswer(err);
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
    const title = ERROR_PAGE_TITLES[code] ?? (status >= 500 ? "Something went wrong" : "That did not work");
    return c.html(<MessagePage title={title} message={message} viewer={c.var.auth?.user ?? null} status="error" />, status);
  });
