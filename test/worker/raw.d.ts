// Vite's raw imports (`import text from "./file?raw"`), which the workerd tests use to read wrangler.toml
// and the docs, and its glob, with which they list the repository's files.
declare module "*?raw" {
  const text: string;
  export default text;
}

interface ImportMeta {
  /** Lazily imports the files matching the pattern; keyed by their paths. */
  glob(pattern: string): Record<string, () => Promise<unknown>>;
}
