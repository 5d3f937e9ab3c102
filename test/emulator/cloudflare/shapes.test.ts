// The emulator answers in the shapes the official SDK's types declare, and takes the request
// shapes the SDK sends: the emulator's answers and the bodies the adapter sent are type-checked
// by the TypeScript compiler against the cloudflare package's own declarations.
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCloudflareHarness, TOKEN, ZONE, ZONE_ID, type CloudflareHarness } from "./helpers.ts";

/** A module that never touches the disk, beside this test so that `cloudflare` resolves from node_modules. */
const VIRTUAL = fileURLToPath(new URL("./__virtual_shapes__.ts", import.meta.url));

/** The compiler's complaints about `source` (as the module VIRTUAL), one line each. */
function typeErrors(source: string): string[] {
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, version, ...rest) =>
    name === VIRTUAL ? ts.createSourceFile(name, source, version) : getSourceFile.call(host, name, version, ...rest);
  host.fileExists = (name) => name === VIRTUAL || fileExists.call(host, name);
  host.readFile = (name) => (name === VIRTUAL ? source : readFile.call(host, name));
  const program = ts.createProgram([VIRTUAL], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .filter((diagnostic) => diagnostic.file?.fileName === VIRTUAL)
    .map((diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, " "));
}

const HEADER = `import type { RecordCreateParams, RecordDeleteResponse, RecordEditParams, RecordResponse } from "cloudflare/resources/dns/records";
import type { ResponseInfo } from "cloudflare/resources/shared";
`;

/** `const v<i> = <value> satisfies <type>;` for each pair: an object literal, so a field the type lacks is an error too. */
function checks(pairs: [value: unknown, type: string][]): string {
  return HEADER + pairs.map(([value, type], index) => `export const v${index} = ${JSON.stringify(value)} satisfies ${type};`).join("\n");
}

let harness: CloudflareHarness;
beforeAll(async () => {
  harness = await startCloudflareHarness();
});
afterAll(() => harness.close());

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${harness.emulator.url}/client/v4/zones/${ZONE_ID}/dns_records${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
  });

describe("the shape check itself", () => {
  it("reports a field the type lacks, a missing field and a wrong type", () => {
    const record = { id: "x", name: "a.example", type: "A", ttl: 1, created_on: "", modified_on: "", meta: {}, proxiable: true };
    expect(typeErrors(checks([[record, "RecordResponse.ARecord"]]))).toEqual([]);
    const { proxiable: _, ...missing } = record;
    // One problem per value: the compiler reports one per object literal.
    const errors = typeErrors(
      checks([
        [{ ...record, colour: "red" }, "RecordResponse.ARecord"],
        [missing, "RecordResponse.ARecord"],
        [{ ...record, ttl: "one" }, "RecordResponse.ARecord"],
      ]),
    );
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(/known properties, and .*colour.* does not exist/);
    expect(errors[1]).toMatch(/'proxiable' is missing/);
    expect(errors[2]).toMatch(/Type 'string' is not assignable/);
  });
});

describe("answers", () => {
  it("records created, listed, changed and deleted have the SDK's RecordResponse shapes", { timeout: 120_000 }, async () => {
    const dns = harness.dns();
    const name = `shape-${crypto.randomUUID().slice(0, 8)}.${ZONE}`;
    const a = await dns.create({ type: "A", name, content: "203.0.113.1", serverId: "s1" });
    await dns.create({ type: "AAAA", name, content: "2001:db8::1", serverId: "s1" });
    await dns.update(a.id, { type: "A", name, content: "203.0.113.2", serverId: "s1" });
    const listed = (await (await api(`?name.exact=${name}`)).json()) as { result: { type: string }[]; errors: unknown[] };
    const deleted = (await (await api(`/${a.id}`, { method: "DELETE" })).json()) as { result: unknown };
    const refused = (await (await api("", { method: "POST", body: JSON.stringify({ type: "A", name, content: "nope" }) })).json()) as { errors: unknown[] };
    expect(refused.errors).toHaveLength(1);
    const pairs: [unknown, string][] = [
      ...listed.result.map((record): [unknown, string] => [record, record.type === "A" ? "RecordResponse.ARecord" : "RecordResponse.AAAARecord"]),
      [deleted.result, "RecordDeleteResponse"],
      [refused.errors, "ResponseInfo[]"],
    ];
    expect(listed.result).toHaveLength(2);
    expect(typeErrors(checks(pairs))).toEqual([]);
  });
});

describe("requests", () => {
  it("the bodies the adapter sends are the SDK's create and edit parameters (less the zone id, which is in the path)", { timeout: 120_000 }, async () => {
    const dns = harness.dns();
    const name = `body-${crypto.randomUUID().slice(0, 8)}.${ZONE}`;
    const created = await dns.create({ type: "AAAA", name, content: "2001:db8::2", serverId: "s2" });
    await dns.update(created.id, { type: "AAAA", name, content: "2001:db8::3", serverId: "s2" });
    const sent = (await harness.requests()).filter((request) => (request.body as { name?: string } | null)?.name === name);
    expect(sent.map((request) => request.method)).toEqual(["POST", "PATCH"]);
    expect(
      typeErrors(
        checks([
          [{ zone_id: ZONE_ID, ...(sent[0]!.body as object) }, "RecordCreateParams.AAAARecord"],
          [{ zone_id: ZONE_ID, ...(sent[1]!.body as object) }, "RecordEditParams.AAAARecord"],
        ]),
      ),
    ).toEqual([]);
  });

  it("bodies the SDK's types would not allow are refused in Cloudflare's error shape", async () => {
    const name = `bad-${crypto.randomUUID().slice(0, 8)}.${ZONE}`;
    for (const body of [
      { type: "A", content: "203.0.113.1" },
      { type: "A", name, content: "203.0.113.1", ttl: "auto" },
      { type: "A", name, content: "203.0.113.1", colour: "red" },
      { type: "A", name, content: "203.0.113.1", ttl: 30 },
    ]) {
      const response = await api("", { method: "POST", body: JSON.stringify(body) });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(await response.json()).toMatchObject({ success: false, errors: [{ code: expect.any(Number), message: expect.any(String) }], result: null });
    }
  });

  it("list filters are read in the SDK's encoding (name.exact, comment.startswith); one it does not know is refused", async () => {
    expect((await api("?name.exact=x.berth.example&comment.startswith=berth:&type=A&page=1&per_page=5")).status).toBe(200);
    expect((await api("?name[exact]=x.berth.example")).status).toBe(400);
  });
});
