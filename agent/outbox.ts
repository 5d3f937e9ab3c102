// Messages produced while the socket is down, sent after the next welcome.
// Job results are kept (one per job; the journal also has them); progress keeps
// only the latest per job and is dropped once the result is in; inventory keeps
// only the latest (and is superseded by the one a hello carries). Acks are not
// kept: the control plane redelivers unfinished jobs after a reconnect anyway.
import type { AgentMessage } from "../protocol/messages.ts";

type Result = Extract<AgentMessage, { type: "job.result" }>;
type Progress = Extract<AgentMessage, { type: "job.progress" }>;
type Inventory = Extract<AgentMessage, { type: "inventory" }>;

export const MAX_QUEUED_RESULTS = 10_000;

export class Outbox {
  private readonly results = new Map<string, Result>();
  private readonly progress = new Map<string, Progress>();
  private inventory: Inventory | undefined;

  /** Keeps `message` if it is worth sending late; returns whether it was kept. */
  push(message: AgentMessage): boolean {
    switch (message.type) {
      case "job.result":
        this.progress.delete(message.id);
        this.results.delete(message.id); // re-insert: newest last
        this.results.set(message.id, message);
        while (this.results.size > MAX_QUEUED_RESULTS) {
          // The oldest goes; the journal re-sends it when the control plane redelivers that job.
          const oldest = this.results.keys().next().value;
          if (oldest === undefined) break;
          this.results.delete(oldest);
        }
        return true;
      case "job.progress":
        if (this.results.has(message.id)) return false;
        this.progress.set(message.id, message);
        return true;
      case "inventory":
        this.inventory = message;
        return true;
      default:
        return false;
    }
  }

  /** A hello reports the inventory as of now: an older queued one is moot. */
  dropInventory(): void {
    this.inventory = undefined;
  }

  get size(): number {
    return this.results.size + this.progress.size + (this.inventory ? 1 : 0);
  }

  /** Everything queued, oldest kind first (progress, results, inventory), and empties the box. */
  drain(): AgentMessage[] {
    const out: AgentMessage[] = [...this.progress.values(), ...this.results.values()];
    if (this.inventory) out.push(this.inventory);
    this.progress.clear();
    this.results.clear();
    this.inventory = undefined;
    return out;
  }
}
