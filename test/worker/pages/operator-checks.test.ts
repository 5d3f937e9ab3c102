import { beforeAll, describe, expect, it } from "vitest";
import type { HostIdentity } from "../fleet/fleet-helpers";
import { DAY, HOUR } from "../helpers";
import { utc } from "../../../worker/pages/layout";
import { fleetWithOperator, homeserverOn, recordResult } from "../checks/check-helpers";
import { expectLabelled, page } from "./page-checks";

// The console's front page lists promise checks failing across the fleet, by their latest result,
// to operators only.

const SECTION = "Failing promise checks";

describe("failing promise checks on the operator console's front page", () => {
  let operator: string;
  let customer: string;
  let host: HostIdentity;

  beforeAll(async () => {
    const fleet = await fleetWithOperator();
    operator = fleet.operator.cookie;
    customer = fleet.customer.cookie;
    host = fleet.host;
  });

  it("says every check holds when none fails, and counts none that could not be checked", async () => {
    const html = await page("/operator/hosts", operator);
    expectLabelled(html);
    expect(html).toContain(`<h2 id="failing-checks-heading">${SECTION}</h2>`);
    expect(html).toContain("Every promise check holds by its latest result.");
    expect(html).toContain("Could not check: 0 checks by their latest result.");
  });

  it("is not shown to a customer, even one whose own check fails: the console answers as an address with nothing at it", async () => {
    const server = await homeserverOn(host.hostId);
    await recordResult(server, "isolation", "fails", new Date(), "A container has the capability NET_ADMIN.");
    const missing = await page("/no-such-page", customer, 404);
    for (const path of ["/operator", "/operator/hosts"]) {
      const html = await page(path, customer, 404);
      expect(html).toBe(missing);
      expect(html).not.toContain(SECTION);
    }
  });

  it("lists each server's checks whose latest result fails, since the first failure of the current run, and counts those that could not be checked", async () => {
    const now = Date.now();
    const failing = await homeserverOn(host.hostId);
    const recovered = await homeserverOn(host.hostId);
    const unknown = await homeserverOn(host.hostId);
    await recordResult(failing, "certificates", "fails", new Date(now - 5 * DAY), "The certificate expired.");
    await recordResult(failing, "certificates", "holds", new Date(now - 4 * DAY));
    await recordResult(failing, "certificates", "fails", new Date(now - 3 * DAY), "The certificate expires in 1 day.");
    await recordResult(failing, "certificates", "could_not_check", new Date(now - 2 * DAY));
    await recordResult(failing, "certificates", "fails", new Date(now - HOUR), "The certificate expires today.");
    await recordResult(recovered, "backups", "fails", new Date(now - DAY), "The last backup is 30 hours old.");
    await recordResult(recovered, "backups", "holds", new Date(now - HOUR));
    await recordResult(unknown, "software", "could_not_check", new Date(now - HOUR));

    const html = await page("/operator/hosts", operator);
    expectLabelled(html);
    const section = html.slice(html.indexOf(SECTION), html.indexOf("Enrolled hosts"));
    const row = section.slice(section.indexOf(`${failing.name}.berth.example`));
    expect(row).toContain(`<code>${failing.userId}</code>`);
    expect(row).toContain(`<a href="/operator/hosts/${host.hostId}">${host.hostId}</a>`);
    expect(row).toContain("<td>certificates</td>");
    expect(row).toContain("<td>The certificate expires today.</td>");
    // The run of failures began after the could-not-check, the last result that did not fail.
    expect(row).toContain(`<td>${utc(now - HOUR)}</td>`);
    expect(section).not.toContain(recovered.name);
    expect(section).not.toContain(unknown.name);
    expect(section).not.toContain(failing.email);
    expect(section).toContain("Could not check: 1 check by their latest result.");
  });
});
