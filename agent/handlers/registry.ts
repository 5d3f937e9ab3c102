// The kinds this agent runs, one handler each, and only kinds of the job
// catalogue (protocol/jobs.ts). The runner gets each job through here: its
// payload checked against the kind's schema before the handler runs (a bad one
// fails the job naming the field), the handler's result against the kind's
// result schema before it is reported.
import { checkDeliveredJobPayload, checkJobResult, isJobKind, JobSchemaError, type DeliveredJobPayload, type JobKind } from "../../protocol/jobs.ts";
import { JobInputError, type JobContext, type JobHandler, type JobHandlers, type Json } from "./types.ts";

/** A registered kind as the runner calls it: JSON in, JSON out, both checked. */
export type CheckedHandler = (payload: Json, ctx: JobContext) => Promise<Json>;

/** The payload checked against its kind's schema; a bad one is the job's input error, naming the field. */
function deliveredPayload<K extends JobKind>(kind: K, payload: Json): DeliveredJobPayload<K> {
  try {
    return checkDeliveredJobPayload(kind, payload);
  } catch (error) {
    if (error instanceof JobSchemaError) throw new JobInputError(error.message);
    throw error;
  }
}

export class HandlerRegistry {
  private readonly handlers = new Map<JobKind, CheckedHandler>();

  /** Registers the handler of `kind`; a kind outside the catalogue, or one registered already, is refused. */
  register<K extends JobKind>(kind: K, handler: JobHandler<K>): this {
    if (!isJobKind(kind)) throw new Error(`"${kind}" is not a kind of the job catalogue (protocol/jobs.ts)`);
    if (this.handlers.has(kind)) throw new Error(`a handler for "${kind}" is registered already`);
    this.handlers.set(kind, async (payload, ctx) => {
      const result = await handler(deliveredPayload(kind, payload), ctx);
      // JSON by construction: the catalogue's result schemas hold only JSON values.
      return checkJobResult(kind, result) as Json;
    });
    return this;
  }

  registerAll<K extends JobKind>(handlers: JobHandlers<K>): this {
    for (const kind of Object.keys(handlers) as K[]) this.register(kind, handlers[kind]);
    return this;
  }

  get(kind: string): CheckedHandler | undefined {
    return isJobKind(kind) ? this.handlers.get(kind) : undefined;
  }

  kinds(): JobKind[] {
    return [...this.handlers.keys()].sort();
  }
}
