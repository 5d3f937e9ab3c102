export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export const DAY_SECONDS = 24 * 60 * 60;

/**
 * `months` calendar months after `anchor` (unix seconds), keeping the time of
 * day and clamping the day to the month's length, as Stripe's billing anchors
 * do (Jan 31 → Feb 28 → Mar 31).
 */
export function addMonths(anchor: number, months: number): number {
  const date = new Date(anchor * 1000);
  const year = date.getUTCFullYear();
  const month = date.getUTCMonth() + months;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  const day = Math.min(date.getUTCDate(), lastDay);
  const result = Date.UTC(year, month, day, date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds());
  return Math.floor(result / 1000);
}

/** Whole calendar months from `anchor` to `later` (both unix seconds). */
export function monthsBetween(anchor: number, later: number): number {
  const a = new Date(anchor * 1000);
  const b = new Date(later * 1000);
  return (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth());
}

/** The period end following `currentEnd` for a monthly subscription anchored at `anchor`. */
export function nextPeriodEnd(anchor: number, currentEnd: number): number {
  return addMonths(anchor, monthsBetween(anchor, currentEnd) + 1);
}
