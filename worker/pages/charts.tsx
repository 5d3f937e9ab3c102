// Usage charts drawn on the server as SVG: no script, no library. Each line has its own dash
// pattern and a text label, the limit is a labelled line, and a text summary says the same
// in words, so nothing depends on colour (or on seeing the chart at all). And the units their
// figures are written in, which mails use too.

import type { BackupCounts } from "../../protocol/jobs";

export interface ChartLine {
  label: string;
  /** One value per time. */
  values: number[];
}

export interface ChartProps {
  id: string;
  title: string;
  times: Date[];
  lines: ChartLine[];
  from: Date;
  to: Date;
  format: (value: number) => string;
  limit?: { value: number; label: string } | undefined;
}

const WIDTH = 600;
const HEIGHT = 200;
const PAD = { top: 12, right: 12, bottom: 24, left: 64 };
const DASHES = ["", "6 4", "2 3"];

function summary(line: ChartLine, format: (value: number) => string): string {
  const values = line.values;
  if (values.length === 0) return `${line.label}: no data`;
  const average = values.reduce((sum, value) => sum + value, 0) / values.length;
  return `${line.label}: latest ${format(values.at(-1)!)}, average ${format(average)}, peak ${format(Math.max(...values))}`;
}

export function UsageChart(props: ChartProps) {
  const span = Math.max(1, props.to.getTime() - props.from.getTime());
  const peak = Math.max(0, ...props.lines.flatMap((line) => line.values), props.limit?.value ?? 0);
  const top = peak > 0 ? peak * 1.1 : 1;
  const x = (at: Date) => PAD.left + ((at.getTime() - props.from.getTime()) / span) * (WIDTH - PAD.left - PAD.right);
  const y = (value: number) => HEIGHT - PAD.bottom - (value / top) * (HEIGHT - PAD.top - PAD.bottom);
  const hasData = props.times.length > 0;
  // Without data or a limit there is no scale to show; with only zeros, zero is the whole scale.
  const ticks = peak > 0 ? [0, top / 2, top] : hasData ? [0] : [];
  return (
    <figure class="chart" aria-labelledby={`${props.id}-caption`}>
      <figcaption id={`${props.id}-caption`}>
        <strong>{props.title}</strong>
      </figcaption>
      {/* biome-ignore lint/a11y/noSvgWithoutTitle: aria-labelledby names it (the caption and the summary); the rule does not see that. */}
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-labelledby={`${props.id}-caption ${props.id}-summary`}>
        {ticks.map((tick) => (
          <g>
            <line class="grid" x1={PAD.left} x2={WIDTH - PAD.right} y1={y(tick)} y2={y(tick)} />
            <text x={PAD.left - 6} y={y(tick) + 4} text-anchor="end">
              {props.format(tick)}
            </text>
          </g>
        ))}
        <text x={PAD.left} y={HEIGHT - 6}>
          {props.from.toISOString().slice(0, 16).replace("T", " ")}
        </text>
        <text x={WIDTH - PAD.right} y={HEIGHT - 6} text-anchor="end">
          {props.to.toISOString().slice(0, 16).replace("T", " ")} UTC
        </text>
        {props.limit ? (
          <g class="limit">
            <line x1={PAD.left} x2={WIDTH - PAD.right} y1={y(props.limit.value)} y2={y(props.limit.value)} />
            <text x={WIDTH - PAD.right - 4} y={y(props.limit.value) - 4} text-anchor="end">
              {props.limit.label}
            </text>
          </g>
        ) : null}
        {hasData ? (
          props.lines.map((line, index) => (
            <g class={`series s${index}`}>
              <polyline
                stroke-dasharray={DASHES[index % DASHES.length] || undefined}
                points={line.values.map((value, i) => `${x(props.times[i]!).toFixed(1)},${y(value).toFixed(1)}`).join(" ")}
              />
              {line.values.length === 1 ? (
                // A line through one point draws nothing: the first sample shows as a dot.
                <circle cx={x(props.times[0]!).toFixed(1)} cy={y(line.values[0]!).toFixed(1)} r="3" />
              ) : null}
              {props.lines.length > 1 && line.values.length > 0 ? (
                <text x={x(props.times.at(-1)!) - 4} y={y(line.values.at(-1)!) - 4 - index * 12} text-anchor="end">
                  {line.label}
                </text>
              ) : null}
            </g>
          ))
        ) : (
          <text x={WIDTH / 2} y={HEIGHT / 2} text-anchor="middle">
            No data for this period yet
          </text>
        )}
      </svg>
      <p class="hint" id={`${props.id}-summary`}>
        {props.lines.map((line) => summary(line, props.format)).join(". ")}
        {props.limit ? `. ${props.limit.label}.` : "."}
      </p>
    </figure>
  );
}

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value >= 10 || unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

export const formatPercent = (value: number) => `${value.toFixed(value >= 10 || value === 0 ? 0 : 1)} %`;

/** What a homeserver's data holds (an imported archive's, say), as its owner reads it on a page or in a mail. */
export const countsText = (counts: BackupCounts) =>
  `${counts.users} users, ${counts.rooms} rooms, ${counts.events} events and ${counts.mediaFiles} media files`;
