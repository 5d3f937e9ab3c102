// The plans we sell, in one place. Each names its Stripe price (created once in
// the Stripe dashboard with these ids' amounts; the local emulator seeds them
// from this list), the resources a homeserver on it gets, how many users it may have and how
// large an upload its owner may allow.
export interface Plan {
  id: string;
  name: string;
  stripePriceId: string;
  /** Monthly price in the currency's minor unit (cents). */
  monthlyPrice: number;
  currency: "usd";
  resources: {
    memoryMiB: number;
    cpus: number;
    storageGiB: number;
  };
  /** A homeserver's users, counting those its registration tokens may still add: enforced on the host. */
  maxUsers: number;
  /**
   * The largest max upload size its owner may set, in MiB. An upload is spooled in Synapse's /tmp,
   * which counts against its memory: about a sixth of Synapse's share of the plan's memory.
   */
  maxUploadMiB: number;
}

export const PLANS: readonly Plan[] = [
  {
    id: "starter",
    name: "Starter",
    stripePriceId: "price_berth_starter_monthly",
    monthlyPrice: 900,
    currency: "usd",
    resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 },
    maxUsers: 25,
    maxUploadMiB: 100,
  },
  {
    id: "team",
    name: "Team",
    stripePriceId: "price_berth_team_monthly",
    monthlyPrice: 2900,
    currency: "usd",
    resources: { memoryMiB: 2048, cpus: 2, storageGiB: 50 },
    maxUsers: 250,
    maxUploadMiB: 250,
  },
];

/** The plans' ids, for validating a choice of plan. */
export const PLAN_IDS = PLANS.map((plan) => plan.id) as [string, ...string[]];

export function planById(id: string): Plan | undefined {
  return PLANS.find((plan) => plan.id === id);
}

export function planByPriceId(priceId: string): Plan | undefined {
  return PLANS.find((plan) => plan.stripePriceId === priceId);
}
