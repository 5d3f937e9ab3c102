// Vite's raw imports (`import text from "./file?raw"`), which the workerd tests use to read wrangler.toml.
declare module "*?raw" {
  const text: string;
  export default text;
}
