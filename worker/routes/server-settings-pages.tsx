import { Hono, type Context } from "hono";
import { z } from "zod";
import { ApiError } from "../errors";
import { handleForm, submitForm, type FormFields } from "../http/forms";
import { requireLogin, type SessionAppEnv } from "../http/session";
import { parseWith } from "../http/validation";
import { noSuchServerPage } from "../pages/auth";
import { noticeFor } from "../pages/layout";
import { ServerSettingsPage, settingsFormValues, type SettingsFormValues } from "../pages/server-settings";
import type { AppEnv } from "../http/context";
import { matrixServerNameOf, ownedServer } from "../servers/servers";
import { changeSettings, describeSettings, settingsChange, type SettingsChange } from "../servers/settings";

type SettingsPageContext = Context<SessionAppEnv>;

/** Empty: off (kept for as long as the homeserver exists). */
const days = z
  .string()
  .trim()
  .regex(/^\d{0,5}$/, "a whole number of days, or empty")
  .transform((value) => (value === "" ? null : Number(value)));

const formFields = z.object({
  registration: z.string(),
  federation: z.enum(["on", "off", "allow_list"], { error: "choose how the homeserver federates" }),
  allowList: z.string().max(30_000).default(""),
  messageRetentionDays: days.default(null),
  mediaRetentionDays: days.default(null),
  maxUploadMiB: z
    .string()
    .trim()
    .regex(/^\d{1,6}$/, "a whole number of MiB")
    .transform(Number),
});

/** The form as a change of every setting: the allow-list one server name a line (or separated by commas or spaces). */
function changeFromForm(fields: FormFields): SettingsChange {
  const form = parseWith(formFields, fields);
  const servers = form.allowList.split(/[\s,]+/).filter((name) => name !== "");
  return parseWith(settingsChange, {
    registration: form.registration,
    federation: form.federation === "allow_list" ? { mode: "allow_list", servers } : { mode: form.federation },
    messageRetentionDays: form.messageRetentionDays,
    mediaRetentionDays: form.mediaRetentionDays,
    maxUploadMiB: form.maxUploadMiB,
  });
}

async function renderSettings(c: SettingsPageContext, extra: { error?: string; values?: SettingsFormValues } = {}) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const view = await describeSettings(ctx, user, server.id);
  return (
    <ServerSettingsPage
      user={user}
      serverId={server.id}
      serverName={matrixServerNameOf(ctx.config, server)}
      running={server.status === "running"}
      view={view}
      values={extra.values ?? settingsFormValues(view.settings)}
      error={extra.error}
      notice={noticeFor(c.req.query("notice"))}
    />
  );
}

// A homeserver's settings as a page (mounted under /servers), for its logged-in owner.
export const serverSettingsPageRoutes = new Hono<AppEnv>()
  .get("/:id/settings", requireLogin, (c) => handleForm(c, async () => c.html(await renderSettings(c)), noSuchServerPage(c.var.user)))
  .post("/:id/settings", requireLogin, async (c) => {
    // Another customer's id is "no such server" before the form is read.
    try {
      await ownedServer(c.var.ctx.db, c.var.user.id, c.req.param("id"));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return c.html(noSuchServerPage(c.var.user)(error.message), error.status);
    }
    return submitForm(
      c,
      async (fields) => {
        const result = await changeSettings(c.var.ctx, c.var.user, c.req.param("id"), changeFromForm(fields));
        return c.redirect(`/servers/${c.req.param("id")}/settings?notice=${"done" in result ? "settings_applied" : "settings_applying"}`, 303);
      },
      (error, fields) =>
        renderSettings(c, {
          error,
          values: {
            registration: fields.registration ?? "",
            federation: fields.federation ?? "",
            allowList: fields.allowList ?? "",
            messageRetentionDays: fields.messageRetentionDays ?? "",
            mediaRetentionDays: fields.mediaRetentionDays ?? "",
            maxUploadMiB: fields.maxUploadMiB ?? "",
          },
        }),
    );
  });
