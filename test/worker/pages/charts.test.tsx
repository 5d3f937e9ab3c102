import { describe, expect, it } from "vitest";
import { UsageChart, formatBytes, type ChartLine } from "../../../worker/pages/charts";

const from = new Date("2031-01-10T00:00:00Z");
const to = new Date("2031-01-11T00:00:00Z");
const at = (hours: number) => new Date(from.getTime() + hours * 3_600_000);

const draw = async (times: Date[], lines: ChartLine[], limit?: { value: number; label: string }) =>
  String(await (<UsageChart id="chart" title="Chart" times={times} lines={lines} from={from} to={to} format={formatBytes} limit={limit} />).toString());

describe("usage charts", () => {
  it("the first sample alone shows as a dot (a line through one point draws nothing)", async () => {
    const one = await draw([at(1)], [{ label: "Stored", values: [5e7] }]);
    expect(one).toMatch(/<circle cx="[\d.]+" cy="[\d.]+" r="3"/);
    expect(one).toContain("Stored: latest 50 MB, average 50 MB, peak 50 MB.");
    const two = await draw([at(1), at(2)], [{ label: "Stored", values: [5e7, 6e7] }]);
    expect(two).not.toContain("<circle");
  });

  it("only zeros: zero is the whole scale, with no fractions of a byte on the axis", async () => {
    const zeros = await draw([at(1), at(2)], [{ label: "Written", values: [0, 0] }]);
    expect(zeros.match(/<text [^>]*text-anchor="end">[^<]* B<\/text>/g)).toEqual([expect.stringContaining(">0 B<")]);
  });

  it("no data: says so, with the limit still marked", async () => {
    const empty = await draw([], [{ label: "Stored", values: [] }], { value: 10 * 1024 ** 3, label: "Plan includes 10 GiB" });
    expect(empty).toContain("No data for this period yet");
    expect(empty).toContain("Plan includes 10 GiB");
    expect(empty).toContain("Stored: no data. Plan includes 10 GiB.");
  });
});
