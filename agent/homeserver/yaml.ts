// A tiny YAML writer for the configuration files the agent generates: block
// mappings and sequences, strings always double-quoted (JSON escapes are valid
// YAML escapes), so no value can change type or meaning ("no", "1e3", "@x").

export type YamlValue = string | number | boolean | null | YamlValue[] | { [key: string]: YamlValue | undefined };

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

function scalar(value: string | number | boolean | null): string {
  if (value === null) return "null";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`cannot write ${value} to YAML`);
    return String(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  return JSON.stringify(value);
}

function key(name: string): string {
  return PLAIN_KEY.test(name) ? name : JSON.stringify(name);
}

function isScalar(value: YamlValue): value is string | number | boolean | null {
  return value === null || typeof value !== "object";
}

function lines(value: YamlValue, indent: string): string[] {
  if (isScalar(value)) return [`${indent}${scalar(value)}`];
  const out: string[] = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isScalar(item) || (Array.isArray(item) ? item.length === 0 : Object.keys(item).length === 0)) {
        out.push(`${indent}- ${isScalar(item) ? scalar(item) : Array.isArray(item) ? "[]" : "{}"}`);
      } else {
        const inner = lines(item, `${indent}  `);
        out.push(`${indent}- ${inner[0]!.slice(indent.length + 2)}`, ...inner.slice(1));
      }
    }
    return out;
  }
  for (const [name, item] of Object.entries(value)) {
    if (item === undefined) continue;
    if (isScalar(item)) out.push(`${indent}${key(name)}: ${scalar(item)}`);
    else if (Array.isArray(item) && item.length === 0) out.push(`${indent}${key(name)}: []`);
    else if (!Array.isArray(item) && Object.keys(item).length === 0) out.push(`${indent}${key(name)}: {}`);
    else out.push(`${indent}${key(name)}:`, ...lines(item, `${indent}  `));
  }
  return out;
}

/** The document, with `comment` lines (if any) as a header. */
export function toYaml(value: YamlValue, comment: string[] = []): string {
  const header = comment.map((line) => (line ? `# ${line}` : "#"));
  return `${[...header, ...lines(value, "")].join("\n")}\n`;
}
