import { app } from "./app";
import type { WorkerEnv } from "./env";
import { runScheduledMaintenance } from "./scheduled";

export { HostConnection } from "./fleet/host-connection";

export default {
  fetch: app.fetch,
  async scheduled(controller, env, ctx) {
    ctx.waitUntil(runScheduledMaintenance(env, new Date(controller.scheduledTime), controller.cron));
  },
} satisfies ExportedHandler<WorkerEnv>;
