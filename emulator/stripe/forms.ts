// Stripe's form encoding: `a[b][0][c]=v` nests objects and arrays; `a[]=v` appends.
import { invalidRequest } from "./errors.ts";

export type FormValue = string | FormValue[] | FormObject;
export interface FormObject {
  [key: string]: FormValue;
}

// Keys that would reach Object.prototype if used as property names.
const FORBIDDEN = new Set(["__proto__", "constructor", "prototype"]);

function splitKey(key: string): string[] {
  const open = key.indexOf("[");
  if (open <= 0 || !key.endsWith("]")) return [key];
  const segments = [key.slice(0, open)];
  const rest = key.slice(open);
  const pattern = /\[([^[\]]*)\]/gy;
  let consumed = 0;
  for (let match = pattern.exec(rest); match; match = pattern.exec(rest)) {
    segments.push(match[1] ?? "");
    consumed = pattern.lastIndex;
  }
  return consumed === rest.length ? segments : [key];
}

type Node = { [key: string]: Node | string };

function isIndex(key: string): boolean {
  return /^(0|[1-9][0-9]{0,3})$/.test(key);
}

/** Objects whose keys are all small integers become arrays ordered by index. */
function finish(node: Node | string): FormValue {
  if (typeof node === "string") return node;
  const keys = Object.keys(node);
  if (keys.length > 0 && keys.every(isIndex)) {
    return keys
      .map(Number)
      .sort((a, b) => a - b)
      .map((index) => finish(node[String(index)]!));
  }
  const out: FormObject = {};
  for (const key of keys) out[key] = finish(node[key]!);
  return out;
}

export function parseStripeForm(body: string): FormObject {
  const root: Node = {};
  for (const [key, value] of new URLSearchParams(body)) {
    const segments = splitKey(key);
    if (segments.some((segment) => FORBIDDEN.has(segment))) {
      throw invalidRequest(`Received unknown parameter: ${key}`, key, "parameter_unknown");
    }
    let node = root;
    for (let i = 0; i < segments.length; i++) {
      let segment = segments[i]!;
      if (segment === "") segment = String(Object.keys(node).filter(isIndex).length);
      if (i === segments.length - 1) {
        if (typeof node[segment] === "object") throw invalidRequest(`Invalid value for ${key}: expected a hash.`, key);
        node[segment] = value;
      } else {
        let next = node[segment];
        if (typeof next === "string") throw invalidRequest(`Invalid value for ${segments[0]}: it is both a value and a hash.`, key);
        if (next === undefined) {
          next = {};
          node[segment] = next;
        }
        node = next;
      }
    }
  }
  const parsed = finish(root);
  return typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
}

// Readers that turn a parsed form into typed values, failing the way Stripe does.

export function optionalString(params: FormObject, name: string, param = name): string | undefined {
  const value = params[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw invalidRequest(`Invalid string: ${param} must be a string.`, param);
  return value;
}

export function requiredString(params: FormObject, name: string, param = name): string {
  const value = optionalString(params, name, param);
  if (value === undefined || value === "") throw invalidRequest(`Missing required param: ${param}.`, param, "parameter_missing");
  return value;
}

export function optionalObject(params: FormObject, name: string, param = name): FormObject | undefined {
  const value = params[name];
  if (value === undefined || value === "") return undefined;
  if (typeof value !== "object" || Array.isArray(value)) throw invalidRequest(`Invalid hash: ${param} must be a hash.`, param);
  return value;
}

export function optionalArray(params: FormObject, name: string, param = name): FormValue[] | undefined {
  const value = params[name];
  if (value === undefined || value === "") return undefined;
  if (!Array.isArray(value)) throw invalidRequest(`Invalid array: ${param} must be an array.`, param);
  return value;
}

export function optionalBoolean(params: FormObject, name: string, param = name): boolean | undefined {
  const value = optionalString(params, name, param);
  if (value === undefined) return undefined;
  if (value === "true") return true;
  if (value === "false") return false;
  throw invalidRequest(`Invalid boolean: ${value}`, param);
}

export function optionalInteger(params: FormObject, name: string, param = name): number | undefined {
  const value = optionalString(params, name, param);
  if (value === undefined || value === "") return undefined;
  if (!/^-?[0-9]+$/.test(value)) throw invalidRequest(`Invalid integer: ${value}`, param);
  return Number(value);
}

/**
 * Applies a `metadata` parameter to existing metadata: a key set to "" is
 * removed, and `metadata=` (empty) clears everything, as in Stripe.
 */
export function applyMetadata(existing: Record<string, string>, params: FormObject, name = "metadata", param = name): Record<string, string> {
  const value = params[name];
  if (value === undefined) return existing;
  if (value === "") return {};
  if (typeof value !== "object" || Array.isArray(value)) throw invalidRequest(`Invalid hash: ${param} must be a hash.`, param);
  const result = { ...existing };
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== "string") throw invalidRequest(`Invalid string: ${param}[${key}] must be a string.`, `${param}[${key}]`);
    if (key.length > 40) throw invalidRequest(`Metadata keys can have up to 40 characters.`, `${param}[${key}]`);
    if (entry.length > 500) throw invalidRequest(`Metadata values can have up to 500 characters.`, `${param}[${key}]`);
    if (entry === "") delete result[key];
    else result[key] = entry;
  }
  if (Object.keys(result).length > 50) throw invalidRequest("Metadata can have up to 50 keys.", param);
  return result;
}
