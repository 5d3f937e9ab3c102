// Checks a JSON object against an interface in the stripe package's type
// definitions (node_modules/stripe/esm/resources/*.d.ts): every non-optional
// field present, no field the type doesn't have, null only where allowed,
// primitives and string literals as declared, nested interfaces recursively.
// Types it cannot resolve are accepted, so it errs towards passing.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const RESOURCES = fileURLToPath(new URL("../../node_modules/stripe/esm/resources/", import.meta.url));

interface Field {
  name: string;
  optional: boolean;
  type: string;
}

type Decl = { kind: "interface"; fields: Field[]; scope: Scope } | { kind: "type"; text: string; scope: Scope };

interface Scope {
  decls: Map<string, Decl>;
  namespaces: Map<string, Scope>;
  parent: Scope | null;
  file: FileModel;
}

interface FileModel {
  path: string;
  imports: Map<string, string>;
  root: Scope;
}

const files = new Map<string, FileModel>();

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}

function newScope(file: FileModel, parent: Scope | null): Scope {
  return { decls: new Map(), namespaces: new Map(), parent, file };
}

function parseFields(lines: string[], indent: number): Field[] {
  const fields: Field[] = [];
  for (const line of lines) {
    if (indentOf(line) !== indent) continue;
    const match = /^(\w+)(\??): (.*?);?$/.exec(line.trim());
    if (match) fields.push({ name: match[1]!, optional: match[2] === "?", type: match[3]!.endsWith("{") ? "{inline}" : match[3]! });
  }
  return fields;
}

function parseScope(lines: string[], start: number, indent: number, scope: Scope): number {
  let i = start;
  while (i < lines.length) {
    const line = lines[i]!;
    const indentation = indentOf(line);
    if (indentation < indent) return i;
    if (indentation > indent) {
      i++;
      continue;
    }
    const text = line.trim();
    const interfaceMatch = /^(?:export )?(?:declare )?interface (\w+)(?: extends [^{]+)? \{(\s*\})?$/.exec(text);
    const namespaceMatch = /^(?:export )?(?:declare )?namespace (\w+) \{$/.exec(text);
    const typeMatch = /^(?:export )?(?:declare )?type (\w+) = (.*);$/.exec(text);
    if (interfaceMatch) {
      const body: string[] = [];
      i++;
      if (!interfaceMatch[2]) {
        while (i < lines.length && indentOf(lines[i]!) > indent) body.push(lines[i++]!);
        i++;
      }
      scope.decls.set(interfaceMatch[1]!, { kind: "interface", fields: parseFields(body, indent + 4), scope });
    } else if (namespaceMatch) {
      const child = scope.namespaces.get(namespaceMatch[1]!) ?? newScope(scope.file, scope);
      scope.namespaces.set(namespaceMatch[1]!, child);
      i = parseScope(lines, i + 1, indent + 4, child) + 1;
    } else if (typeMatch) {
      scope.decls.set(typeMatch[1]!, { kind: "type", text: typeMatch[2]!, scope });
      i++;
    } else {
      i++;
    }
  }
  return i;
}

function load(path: string): FileModel {
  const cached = files.get(path);
  if (cached) return cached;
  const source = readFileSync(path, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const lines = source.split("\n").filter((line) => line.trim() !== "");
  const model: FileModel = { path, imports: new Map(), root: null as unknown as Scope };
  model.root = newScope(model, null);
  for (const match of source.matchAll(/^import (?:type )?\{([^}]+)\} from '([^']+)';/gm)) {
    for (const name of match[1]!
      .split(",")
      .map((part) => part.trim())
      .filter(Boolean)) {
      model.imports.set(name, join(dirname(path), match[2]!.replace(/\.js$/, ".d.ts")));
    }
  }
  files.set(path, model);
  parseScope(lines, 0, 0, model.root);
  return model;
}

function resolve(name: string, scope: Scope): Decl | undefined {
  const parts = name.split(".");
  for (let current: Scope | null = scope; current; current = current.parent) {
    let target: Scope | undefined = current;
    for (const part of parts.slice(0, -1)) target = target?.namespaces.get(part);
    const found = target?.decls.get(parts.at(-1)!);
    if (found) return found;
  }
  const imported = scope.file.imports.get(parts[0]!);
  if (imported && parts.length === 1) {
    try {
      return load(imported).root.decls.get(parts[0]!);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function splitUnion(type: string): string[] {
  const members: string[] = [];
  let depth = 0;
  let current = "";
  for (let i = 0; i < type.length; i++) {
    const char = type[i]!;
    if ("<{([".includes(char)) depth++;
    if (">})]".includes(char)) depth--;
    if (depth === 0 && type.startsWith(" | ", i)) {
      members.push(current.trim());
      current = "";
      i += 2;
    } else {
      current += char;
    }
  }
  members.push(current.trim());
  return members;
}

const LENIENT = new Set(["Metadata", "Decimal", "MetadataParam", "unknown", "any", "{inline}"]);

function describe(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

function checkValue(value: unknown, type: string, scope: Scope, path: string, errors: string[]): void {
  // OtherString is Stripe's "any other string": a string, not anything.
  const members = splitUnion(type).map((member) => (member === "OtherString" ? "string" : member));
  if (value === null) {
    if (!members.includes("null")) errors.push(`${path}: null, but the type is ${type}`);
    return;
  }
  if (members.some((member) => LENIENT.has(member))) return;
  const literals = members.filter((member) => /^'.*'$/.test(member)).map((member) => member.slice(1, -1));
  const refs = members.filter((member) => /^[A-Z][\w.]*$/.test(member));
  const aliases = refs.map((ref) => resolve(ref, scope)).filter((decl): decl is Decl => decl !== undefined);
  if (refs.length > aliases.length) return; // something we can't resolve: accept
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean": {
      if (members.includes(typeof value)) return;
      if (typeof value === "boolean" && members.includes(String(value))) return;
      if (typeof value === "string" && literals.includes(value)) return;
      for (const alias of aliases) {
        if (alias.kind !== "type") continue;
        const nested: string[] = [];
        checkValue(value, alias.text, alias.scope, path, nested);
        if (nested.length === 0) return;
      }
      errors.push(`${path}: ${JSON.stringify(value)} is not a ${type}`);
      return;
    }
    case "object": {
      if (Array.isArray(value)) {
        const array = members.find((member) => member.startsWith("Array<"));
        if (!array) {
          errors.push(`${path}: an array, but the type is ${type}`);
          return;
        }
        for (const [index, element] of value.entries()) checkValue(element, array.slice("Array<".length, -1), scope, `${path}[${index}]`, errors);
        return;
      }
      const apiList = members.find((member) => member.startsWith("ApiList<"));
      if (apiList) {
        const list = value as { object?: unknown; data?: unknown };
        if (list.object !== "list" || !Array.isArray(list.data)) errors.push(`${path}: not a list object`);
        else
          for (const [index, element] of list.data.entries())
            checkValue(element, apiList.slice("ApiList<".length, -1), scope, `${path}.data[${index}]`, errors);
        return;
      }
      if (members.some((member) => member.startsWith("{"))) return;
      const interfaces = aliases.filter((decl) => decl.kind === "interface");
      if (interfaces.length === 0) {
        const typeAliases = aliases.filter((decl) => decl.kind === "type");
        if (typeAliases.length === 0) errors.push(`${path}: an object, but the type is ${type}`);
        else if (!typeAliases.some((alias) => attempt(value, alias.text, alias.scope, path).length === 0)) {
          errors.push(...attempt(value, typeAliases[0]!.text, typeAliases[0]!.scope, path));
        }
        return;
      }
      const attempts = interfaces.map((decl) => checkInterface(value as Record<string, unknown>, decl as Extract<Decl, { kind: "interface" }>, path));
      if (!attempts.some((result) => result.length === 0)) errors.push(...attempts.reduce((a, b) => (a.length <= b.length ? a : b)));
      return;
    }
    default:
      errors.push(`${path}: unexpected ${describe(value)}`);
  }
}

function attempt(value: unknown, type: string, scope: Scope, path: string): string[] {
  const errors: string[] = [];
  checkValue(value, type, scope, path, errors);
  return errors;
}

function checkInterface(value: Record<string, unknown>, decl: Extract<Decl, { kind: "interface" }>, path: string): string[] {
  // An empty interface (such as Event.Data.Object) says nothing about its contents.
  if (decl.fields.length === 0) return [];
  const errors: string[] = [];
  const names = new Set(decl.fields.map((field) => field.name));
  for (const field of decl.fields) {
    if (!(field.name in value)) {
      if (!field.optional) errors.push(`${path}.${field.name}: missing`);
      continue;
    }
    checkValue(value[field.name], field.type, decl.scope, `${path}.${field.name}`, errors);
  }
  for (const key of Object.keys(value)) {
    if (!names.has(key)) errors.push(`${path}.${key}: not in the type`);
  }
  return errors;
}

/**
 * Problems found checking `value` against interface `name` declared in
 * `file` (relative to the stripe package's esm/resources); [] when it fits.
 */
export function shapeErrors(value: unknown, file: string, name: string): string[] {
  const model = load(join(RESOURCES, file));
  const decl = model.root.decls.get(name);
  if (decl?.kind !== "interface") throw new Error(`no interface ${name} in ${file}`);
  if (value === null || typeof value !== "object") return [`${name}: not an object`];
  return checkInterface(value as Record<string, unknown>, decl, name);
}
