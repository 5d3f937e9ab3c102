// A test CA and a leaf certificate it signed, for TLS servers the checks' tests stand up themselves.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A CA and a leaf certificate for `names` it signed, made with openssl in `dir`. */
export function makeCertificate(dir: string, ...names: string[]): { ca: string; key: string; cert: string } {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/O=Berth test CA/CN=Berth test CA"]);
  run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", `/CN=${names[0]}`]);
  writeFileSync(join(dir, "leaf.ext"), `subjectAltName=${names.map((name) => `DNS:${name}`).join(",")}\n`);
  run(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "30", "-extfile", "leaf.ext"]);
  const read = (file: string) => readFileSync(join(dir, file), "utf8");
  return { ca: read("ca.pem"), key: read("leaf.key"), cert: read("leaf.pem") };
}
